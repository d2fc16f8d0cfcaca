"""Train a linear least-squares model with each optimizer and print the loss falling."""

from __future__ import annotations

import argparse

import numpy as np

import gradstep as gs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((512, 32)).astype(np.float32)
    y = x @ rng.standard_normal(32).astype(np.float32)
    rates = {"SGD": 0.05, "Adagrad": 0.1, "Adadelta": 1.0, "RMSprop": 0.01, "Adam": 0.01, "AdamW": 0.01}
    for name, lr in rates.items():
        w = np.zeros(32, np.float32)
        opt = getattr(gs, name)([w], lr=lr)
        losses = []
        for _ in range(args.steps):
            err = x @ w - y
            losses.append(float(np.mean(err**2)))
            opt.step([(2 / len(y)) * (x.T @ err)])
        print(f"{name:9s} lr={lr:<6g} loss {losses[0]:9.4f} -> {losses[-1]:9.4f}")
    return 0
