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
