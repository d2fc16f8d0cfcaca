"""The numpy peer: each optimizer's step written by hand from its update equations,
in place, with preallocated scratch (what a careful numpy user would write)."""

from __future__ import annotations

import math

import numpy as np


class NumpyState:
    """A param, its grad, its states and scratch space, for the by-hand steps."""

    def __init__(self, param: np.ndarray, grad: np.ndarray, states: int) -> None:
        self.p, self.g = param, grad
        self.s = [np.zeros_like(param) for _ in range(states)]
        self.t = [np.empty_like(param) for _ in range(2)]
        # Scalars an optimizer carries from step to step (Schedule-Free's weight_sum).
        self.carried: dict[str, float] = {}


def adam(x: NumpyState, k: int, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> None:
    m, v = x.s
    t, u = x.t
    m *= b1
    np.multiply(x.g, 1 - b1, out=t)
    m += t
    v *= b2
    np.multiply(x.g, x.g, out=t)
    t *= 1 - b2
    v += t
    np.sqrt(v, out=t)
    t /= math.sqrt(1 - b2**k)
    t += eps
    np.divide(m, t, out=u)
    u *= lr / (1 - b1**k)
    x.p -= u


def sgd(x: NumpyState, k: int, lr: float = 1e-2, momentum: float = 0.9) -> None:
    (buf,) = x.s
    t = x.t[0]
    if k == 1:
        np.copyto(buf, x.g)
    else:
        buf *= momentum
        buf += x.g
    np.multiply(buf, lr, out=t)
    x.p -= t


def adagrad(x: NumpyState, k: int, lr: float = 1e-2, eps: float = 1e-10) -> None:
    (acc,) = x.s
    t = x.t[0]
    np.multiply(x.g, x.g, out=t)
    acc += t
    np.sqrt(acc, out=t)
    t += eps
    np.divide(x.g, t, out=t)
    t *= lr
    x.p -= t


def rmsprop(x: NumpyState, k: int, lr: float = 1e-2, alpha: float = 0.99,
            eps: float = 1e-8) -> None:
    (sq,) = x.s
    t = x.t[0]
    sq *= alpha
    np.multiply(x.g, x.g, out=t)
    t *= 1 - alpha
    sq += t
    np.sqrt(sq, out=t)
    t += eps
    np.divide(x.g, t, out=t)
    t *= lr
    x.p -= t


def adadelta(x: NumpyState, k: int, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6) -> None:
    sq, acc = x.s
    t, u = x.t
    sq *= rho
    np.multiply(x.g, x.g, out=t)
    t *= 1 - rho
    sq += t
    np.add(acc, eps, out=t)
    np.sqrt(t, out=t)
    np.add(sq, eps, out=u)
    np.sqrt(u, out=u)
    t /= u
    t *= x.g  # t = delta
    np.multiply(t, t, out=u)
    u *= 1 - rho
    acc *= rho
    acc += u
    t *= lr
    x.p -= t


def adamax(x: NumpyState, k: int, lr: float = 2e-3, b1: float = 0.9, b2: float = 0.999,
           eps: float = 1e-8) -> None:
    m, u = x.s
    t = x.t[0]
    m *= b1
    np.multiply(x.g, 1 - b1, out=t)
    m += t
    u *= b2
    np.abs(x.g, out=t)
    t += eps
    np.maximum(u, t, out=u)
    np.divide(m, u, out=t)
    t *= lr / (1 - b1**k)
    x.p -= t


def radam(x: NumpyState, k: int, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8) -> None:
    m, v = x.s
    t, w = x.t
    m *= b1
    np.multiply(x.g, 1 - b1, out=t)
    m += t
    v *= b2
    np.multiply(x.g, x.g, out=t)
    t *= 1 - b2
    v += t
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * k * b2**k / (1 - b2**k)
    step = lr / (1 - b1**k)
    if rho > 5:  # rectified: the variance of the adaptive rate is tractable
        rect = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        np.sqrt(v, out=t)
        t += eps
        np.divide(m, t, out=w)
        w *= step * rect * math.sqrt(1 - b2**k)
    else:
        np.multiply(m, step, out=w)
    x.p -= w


def nadam(x: NumpyState, k: int, lr: float = 2e-3, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, momentum_decay: float = 4e-3) -> None:
    m, v = x.s
    t, w = x.t
    mu = b1 * (1 - 0.5 * 0.96 ** (k * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((k + 1) * momentum_decay))
    # torch keeps mu_product as a float32 scalar tensor: float32(product * float32(mu)).
    product = float(np.float32(getattr(x, "mu_product", 1.0)) * np.float32(mu))
    x.mu_product = product  # type: ignore[attr-defined]
    m *= b1
    np.multiply(x.g, 1 - b1, out=t)
    m += t
    v *= b2
    np.multiply(x.g, x.g, out=t)
    t *= 1 - b2
    v += t
    np.sqrt(v, out=t)
    t /= math.sqrt(1 - b2**k)
    t += eps  # the denominator
    np.divide(x.g, t, out=w)
    w *= lr * (1 - mu) / (1 - product)
    x.p -= w
    np.divide(m, t, out=w)
    w *= lr * mu_next / (1 - product * mu_next)
    x.p -= w


def lamb(x: NumpyState, k: int, lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6,
         weight_decay: float = 0.01) -> None:
    """timm's Lamb without its global clip (max_grad_norm=None), L2 decay and the trust ratio."""
    m, v = x.s
    t, u = x.t
    m *= b1
    np.multiply(x.g, 1 - b1, out=t)
    m += t
    v *= b2
    np.multiply(x.g, x.g, out=t)
    t *= 1 - b2
    v += t
    np.sqrt(v, out=t)
    t /= math.sqrt(1 - b2**k)
    t += eps
    np.divide(m, t, out=u)
    u /= 1 - b1**k
    if weight_decay:
        np.multiply(x.p, weight_decay, out=t)
        u += t
        p_norm, u_norm = float(np.linalg.norm(x.p)), float(np.linalg.norm(u))
        ratio = p_norm / u_norm if p_norm > 0 and u_norm > 0 else 1.0
        u *= lr * ratio
    else:
        u *= lr
    x.p -= u


def _schedule_free_weight(x: NumpyState, k: int, lr: float, r: float, weight_lr_power: float) -> float:
    """Schedule-Free's averaging weight c of step k (no warmup), its z starting at the param."""
    if k == 1:
        np.copyto(x.s[0], x.p)
        x.carried.update(lr_max=0.0, weight_sum=0.0)
    lr_max = x.carried["lr_max"] = max(lr, x.carried["lr_max"])
    weight = k**r * lr_max**weight_lr_power
    weight_sum = x.carried["weight_sum"] = x.carried["weight_sum"] + weight
    return weight / weight_sum if weight_sum else 0.0


def _schedule_free_move(x: NumpyState, u: np.ndarray, c: float, lr: float, beta: float) -> None:
    """y = lerp(y, z, c) + lr (beta (1 - c) - 1) u; z -= lr u (u may be overwritten)."""
    z, t = x.s[0], x.t[1]
    np.subtract(z, x.p, out=t)
    t *= c
    x.p += t
    np.multiply(u, lr * (beta * (1 - c) - 1), out=t)
    x.p += t
    u *= lr
    z -= u


def adamw_schedule_free(x: NumpyState, k: int, lr: float = 2.5e-3, b1: float = 0.9, b2: float = 0.999,
                        eps: float = 1e-8, weight_decay: float = 1e-2) -> None:
    c = _schedule_free_weight(x, k, lr, 0.0, 2.0)
    v, u = x.s[1], x.t[0]
    v *= b2
    np.multiply(x.g, x.g, out=u)
    u *= 1 - b2
    v += u
    np.divide(v, 1 - b2**k, out=u)
    np.sqrt(u, out=u)
    u += eps
    np.divide(x.g, u, out=u)
    if weight_decay:
        np.multiply(x.p, weight_decay, out=x.t[1])
        u += x.t[1]
    _schedule_free_move(x, u, c, lr, b1)


def sgd_schedule_free(x: NumpyState, k: int, lr: float = 1.0, momentum: float = 0.9) -> None:
    c = _schedule_free_weight(x, k, lr, 0.0, 2.0)
    u = x.t[0]
    np.copyto(u, x.g)
    _schedule_free_move(x, u, c, lr, momentum)
def lion(x: NumpyState, k: int, lr: float = 1e-4, b1: float = 0.9, b2: float = 0.99,
         weight_decay: float = 0.0) -> None:
    (m,) = x.s
    t, u = x.t
    if weight_decay:
        x.p *= 1 - lr * weight_decay
    np.multiply(m, b1, out=t)
    np.multiply(x.g, 1 - b1, out=u)
    t += u
    np.sign(t, out=t)
    t *= lr
    x.p -= t
    m *= b2
    np.multiply(x.g, 1 - b2, out=u)
    m += u
