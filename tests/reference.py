"""Float64 numpy reference optimizers written from the published equations.

Independent of gradstep's kernels: each class is the textbook form of its
algorithm (with torch.optim's conventions where the papers leave a choice:
the first-step momentum buffer, where eps enters, the AdamW decay order).
"""

from __future__ import annotations

import numpy as np


class Reference:
    def __init__(self, params, **hyper):
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.h = hyper
        self.t = 0
        self.s = [dict() for _ in self.params]

    def step(self, grads, lr):
        self.t += 1
        for p, g, s in zip(self.params, grads, self.s):
            g = np.asarray(g, np.float64)
            if self.h.get("maximize"):
                g = -g
            self.update(p, g, s, lr)

    def l2(self, p, g):
        wd = self.h.get("weight_decay", 0.0)
        return g + wd * p if wd else g


class SGDRef(Reference):
    # Sutskever et al. 2013 momentum; Nesterov as the "look-ahead" gradient form.
    def update(self, p, g, s, lr):
        g = self.l2(p, g)
        mu = self.h.get("momentum", 0.0)
        if mu:
            if "b" not in s:
                s["b"] = g.copy()
            else:
                s["b"] = mu * s["b"] + (1 - self.h.get("dampening", 0.0)) * g
            g = g + mu * s["b"] if self.h.get("nesterov") else s["b"]
        p -= lr * g


class AdagradRef(Reference):
    # Duchi et al. 2011, with the lr decay lr / (1 + (t-1) * lr_decay).
    def update(self, p, g, s, lr):
        g = self.l2(p, g)
        s.setdefault("G", np.full_like(p, self.h.get("initial_accumulator_value", 0.0)))
        s["G"] += g * g
        clr = lr / (1 + (self.t - 1) * self.h.get("lr_decay", 0.0))
        p -= clr * g / (np.sqrt(s["G"]) + self.h.get("eps", 1e-10))


class AdadeltaRef(Reference):
    # Zeiler 2012, Algorithm 1; the delta is scaled by lr (1.0 = the paper).
    def update(self, p, g, s, lr):
        g = self.l2(p, g)
        rho, eps = self.h.get("rho", 0.9), self.h.get("eps", 1e-6)
        Eg = s.setdefault("Eg", np.zeros_like(p))
        Ex = s.setdefault("Ex", np.zeros_like(p))
        Eg[:] = rho * Eg + (1 - rho) * g * g
        dx = np.sqrt(Ex + eps) / np.sqrt(Eg + eps) * g
        Ex[:] = rho * Ex + (1 - rho) * dx * dx
        p -= lr * dx


class RMSpropRef(Reference):
    # Hinton's lecture 6e; centered variant of Graves 2013.
    def update(self, p, g, s, lr):
        g = self.l2(p, g)
        a, eps, mu = self.h.get("alpha", 0.99), self.h.get("eps", 1e-8), self.h.get("momentum", 0.0)
        v = s.setdefault("v", np.zeros_like(p))
        v[:] = a * v + (1 - a) * g * g
        if self.h.get("centered"):
            m = s.setdefault("m", np.zeros_like(p))
            m[:] = a * m + (1 - a) * g
            var = v - m * m
            # How much the subtraction amplifies rounding: v / (v - m^2).
            with np.errstate(all="ignore"):
                ratio = np.where(var > 0, v / np.where(var > 0, var, 1.0), np.inf)
            self.conditioning = max(getattr(self, "conditioning", 1.0), float(np.max(ratio, initial=1.0)))
            denom = np.sqrt(var) + eps
        else:
            denom = np.sqrt(v) + eps
        if mu > 0:
            b = s.setdefault("b", np.zeros_like(p))
            b[:] = mu * b + g / denom
            p -= lr * b
        else:
            p -= lr * g / denom


class AdamRef(Reference):
    # Kingma & Ba 2015, Algorithm 1; AMSGrad of Reddi et al. 2018 (max over
    # the raw second moment, then bias-corrected); AdamW of Loshchilov &
    # Hutter 2019 (decay lr * wd * p applied before the Adam update).
    def update(self, p, g, s, lr):
        b1, b2 = self.h.get("betas", (0.9, 0.999))
        eps, wd = self.h.get("eps", 1e-8), self.h.get("weight_decay", 0.0)
        if self.h.get("decoupled"):
            p *= 1 - lr * wd
        else:
            g = self.l2(p, g)
        m = s.setdefault("m", np.zeros_like(p))
        v = s.setdefault("v", np.zeros_like(p))
        m[:] = b1 * m + (1 - b1) * g
        v[:] = b2 * v + (1 - b2) * g * g
        if self.h.get("amsgrad"):
            vmax = s.setdefault("vmax", np.zeros_like(p))
            vmax[:] = np.maximum(vmax, v)
            v = vmax
        m_hat = m / (1 - b1**self.t)
        v_hat = v / (1 - b2**self.t)
        p -= lr * m_hat / (np.sqrt(v_hat) + eps)


class AdamaxRef(Reference):
    # Kingma & Ba 2015, Algorithm 2 (Adamax), with torch's eps inside the max:
    # u = max(beta2 * u, |g| + eps).
    def update(self, p, g, s, lr):
        b1, b2 = self.h.get("betas", (0.9, 0.999))
        eps = self.h.get("eps", 1e-8)
        g = self.l2(p, g)
        m = s.setdefault("m", np.zeros_like(p))
        u = s.setdefault("u", np.zeros_like(p))
        m[:] = b1 * m + (1 - b1) * g
        u[:] = np.maximum(b2 * u, np.abs(g) + eps)
        p -= lr / (1 - b1**self.t) * m / u


class RAdamRef(Reference):
    # Liu et al. 2020, Algorithm 2 (rectified Adam), with torch's threshold
    # rho_t > 5 and eps added to sqrt(v) before the bias correction; the
    # decoupled decay as in AdamW.
    def update(self, p, g, s, lr):
        b1, b2 = self.h.get("betas", (0.9, 0.999))
        eps, wd = self.h.get("eps", 1e-8), self.h.get("weight_decay", 0.0)
        if self.h.get("decoupled_weight_decay"):
            p *= 1 - lr * wd
        else:
            g = self.l2(p, g)
        m = s.setdefault("m", np.zeros_like(p))
        v = s.setdefault("v", np.zeros_like(p))
        m[:] = b1 * m + (1 - b1) * g
        v[:] = b2 * v + (1 - b2) * g * g
        t = self.t
        m_hat = m / (1 - b1**t)
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho > 5:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            p -= lr * m_hat * r * np.sqrt(1 - b2**t) / (np.sqrt(v) + eps)
        else:
            p -= lr * m_hat

class NAdamRef(Reference):
    # Dozat 2016 with the momentum schedule of torch.optim.NAdam:
    # mu_t = beta1 (1 - 0.5 * 0.96^(t psi)), and mu_product = mu_1 ... mu_t
    # kept as torch keeps it, a float32 scalar multiplied by float32(mu_t).
    def update(self, p, g, s, lr):
        b1, b2 = self.h.get("betas", (0.9, 0.999))
        eps, wd = self.h.get("eps", 1e-8), self.h.get("weight_decay", 0.0)
        psi = self.h.get("momentum_decay", 4e-3)
        if self.h.get("decoupled_weight_decay"):
            p *= 1 - lr * wd
        else:
            g = self.l2(p, g)
        t = self.t
        mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        prod = s["prod"] = np.float32(s.get("prod", np.float32(1.0)) * np.float32(mu))
        m = s.setdefault("m", np.zeros_like(p))
        v = s.setdefault("v", np.zeros_like(p))
        m[:] = b1 * m + (1 - b1) * g
        v[:] = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v / (1 - b2**t)) + eps
        p -= lr * (1 - mu) / (1 - float(prod)) * g / denom
        p -= lr * mu_next / (1 - float(prod) * mu_next) * m / denom


class LambRef(Reference):
    # You et al. 2019 (arXiv:1904.00962, Algorithm 2: LAMB) with timm's Lamb's
    # conventions: the global clip g / max(1, ||g||_all / max_grad_norm) first,
    # eps added after the bias correction of v, the trust ratio applied only with
    # weight decay or always_adapt (1 where either norm is 0, capped at 1 with
    # trust_clip), and the Cautious Optimizers mask (Liang et al. 2024).
    def step(self, grads, lr):
        h = self.h
        grads = [np.asarray(g, np.float64) * (-1.0 if h.get("maximize") else 1.0) for g in grads]
        max_norm = h.get("max_grad_norm", 1.0)
        if max_norm is not None:
            norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
            grads = [g / max(norm / max_norm, 1.0) for g in grads]
        self.t += 1
        for p, g, s in zip(self.params, grads, self.s):
            self.update(p, g, s, lr)

    def update(self, p, g, s, lr):
        h, t = self.h, self.t
        b1, b2 = h.get("betas", (0.9, 0.999))
        eps, wd = h.get("eps", 1e-6), h.get("weight_decay", 0.01)
        m = s.setdefault("m", np.zeros_like(p))
        v = s.setdefault("v", np.zeros_like(p))
        # Without grad averaging, m = beta1 * m + g; timm tells the two forms apart by
        # testing 1 - beta1 == 1 (its lerp's weight), so a beta1 below 2^-53 averages.
        beta3 = 1 - b1 if h.get("grad_averaging", True) else 1.0
        m[...] = (1 - beta3 if beta3 == 1 - b1 else b1) * m + beta3 * g
        v[...] = b2 * v + (1 - b2) * g * g
        bc1, bc2 = (1 - b1**t, 1 - b2**t) if h.get("bias_correction", True) else (1.0, 1.0)
        u = (m / bc1) / (np.sqrt(v / bc2) + eps)
        if h.get("caution"):
            mask = (u * g > 0).astype(np.float64)
            u = u * mask / max(float(np.mean(mask)) if mask.size else 0.0, 1e-3)
        if wd and h.get("decoupled_decay"):
            s.setdefault("max_lr", lr)
            p *= 1 - (lr * lr / s["max_lr"] if h.get("corrected_weight_decay") else lr) * wd
        elif wd:
            u = u + wd * p
        if wd or h.get("always_adapt"):
            w_norm, u_norm = np.linalg.norm(p), np.linalg.norm(u)
            ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            u = u * (min(ratio, 1.0) if h.get("trust_clip") else ratio)
        p -= lr * u
class ScheduleFreeRef(Reference):
    # Defazio et al. 2024 ("The Road Less Scheduled"), Algorithm 1 (Schedule-Free
    # AdamW; SGD: the base step is the plain gradient), in its three sequences:
    # the gradient is taken at y = (1 - beta) z + beta x, the base step moves z
    # (weight decay at y, after the AdamW normalization, as schedulefree does),
    # and x is the average of the z's with weights w_t = t^r lr_max^p (p the
    # weight_lr_power), c_t = w_t / sum w. lr_t warms up linearly over
    # warmup_steps (an integer here). The params hold y, or x after eval().
    def __init__(self, params, adam=True, **hyper):
        super().__init__(params, **hyper)
        self.adam = adam
        self.beta = hyper.get("betas", (0.9, 0.999))[0] if adam else hyper.get("momentum", 0.9)
        self.x = [p.copy() for p in self.params]
        self.z = [p.copy() for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.lr_max, self.weight_sum = -np.inf, 0.0

    def step(self, grads, lr):
        self.t += 1
        t, h, beta = self.t, self.h, self.beta
        warm = h.get("warmup_steps", 0)
        lr_t = lr * t / warm if t <= warm else lr
        self.lr_max = max(self.lr_max, lr_t)
        w = t ** h.get("r", 0.0) * self.lr_max ** h.get("weight_lr_power", 2.0)
        self.weight_sum += w
        c = w / self.weight_sum if self.weight_sum > 0 else 0.0
        b2 = h.get("betas", (0.9, 0.999))[1]
        for i, g in enumerate(grads):
            g = -np.asarray(g, np.float64) if h.get("maximize") else np.asarray(g, np.float64)
            y = (1 - beta) * self.z[i] + beta * self.x[i]
            if self.adam:
                self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
                g = g / (np.sqrt(self.v[i] / (1 - b2**t)) + h.get("eps", 1e-8))
            self.z[i] = self.z[i] - lr_t * (g + h.get("weight_decay", 0.0) * y)
            self.x[i] = (1 - c) * self.x[i] + c * self.z[i]
            self.params[i][...] = (1 - beta) * self.z[i] + beta * self.x[i]

    def at_x(self):
        return self.x
class LionRef(Reference):
    # Chen et al. 2023, Algorithm 2 (Lion): c = beta1 m + (1 - beta1) g,
    # p -= lr (sign(c) + wd p), m = beta2 m + (1 - beta2) g; the decay with the
    # param before this step's update, as lion-pytorch applies it. With
    # decoupled_weight_decay (lion-pytorch's) wd is relative to the initial
    # rate: wd / init_lr. sign is torch's (0 at 0 and at NaN).
    def update(self, p, g, s, lr):
        b1, b2 = self.h.get("betas", (0.9, 0.99))
        wd = self.h.get("weight_decay", 0.0)
        if self.h.get("decoupled_weight_decay"):
            wd = wd / self.h["init_lr"]
        m = s.setdefault("m", np.zeros_like(p))
        c = b1 * m + (1 - b1) * g
        p *= 1 - lr * wd
        p -= lr * np.where(c > 0, 1.0, np.where(c < 0, -1.0, 0.0))
        m[:] = b2 * m + (1 - b2) * g


class AdafactorRef(Reference):
    # Shazeer & Stern 2018, Algorithm 4 (the last two dims factored: the rank-1
    # R C / mean(R) estimate) and Algorithm 5 (0-d and 1-d: in full), with
    # torch.optim's conventions: 1 - beta2_t = t^beta2_decay, rho_t = min(lr,
    # 1/sqrt(t)), the step relative to max(eps2, RMS(p)) taken before a
    # decoupled weight decay, the update clipped to RMS d, eps1 None: the
    # dtype's machine epsilon.
    def update(self, p, g, s, lr):
        t = self.t
        eps1, eps2 = self.h.get("eps", (None, 1e-3))
        eps1 = np.finfo(np.float64).eps if eps1 is None else eps1
        w = t ** self.h.get("beta2_decay", -0.8)
        alpha = max(eps2, float(np.sqrt(np.mean(p * p)))) * min(lr, t ** -0.5)
        wd = self.h.get("weight_decay", 0.0)
        if wd:
            p *= 1 - lr * wd
        if p.ndim >= 2:
            row = s.setdefault("row", np.zeros(p.shape[:-1] + (1,)))
            col = s.setdefault("col", np.zeros(p.shape[:-2] + (1, p.shape[-1])))
            row[...] = (1 - w) * row + w * np.mean(g * g, axis=-1, keepdims=True)
            col[...] = (1 - w) * col + w * np.mean(g * g, axis=-2, keepdims=True)
            v = row * col / np.maximum(np.mean(row, axis=-2, keepdims=True), eps1)
        else:
            var = s.setdefault("var", np.zeros(p.shape))
            var[...] = (1 - w) * var + w * g * g
            v = var
        u = g / np.sqrt(np.maximum(v, eps1 * eps1))
        p -= alpha / max(1.0, float(np.sqrt(np.mean(u * u))) / self.h.get("d", 1.0)) * u
