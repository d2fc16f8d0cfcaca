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
