"""A small multilayer perceptron in numpy (forward and backward by hand), for the demo.

ReLU hidden layers, a softmax cross-entropy head, float32 parameters that a
gradstep optimizer updates in place. Deliberately plain: it is the training
loop a gradstep user writes, not a framework.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class MLP:
    """Fully connected ReLU network; ``params`` are [W1, b1, W2, b2, ...]."""

    def __init__(self, sizes: Sequence[int], rng: np.random.Generator, dtype: type = np.float32):
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes must list at least an input and an output width, got {sizes!r}")
        self.sizes = [int(s) for s in sizes]
        self.params: list[np.ndarray] = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            # He initialisation: keeps ReLU activations at a steady scale through the layers.
            w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
            self.params += [w.astype(dtype), np.zeros(fan_out, dtype)]
        self.grads = [np.zeros_like(p) for p in self.params]

    @property
    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(zip(self.params[0::2], self.params[1::2]))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits and the activations the backward pass needs."""
        activations = [x]
        h = x
        layers = self.layers
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0)
            activations.append(h)
        return h, activations

    @staticmethod
    def _log_softmax(logits: np.ndarray) -> np.ndarray:
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy on (x, y); fills ``self.grads`` (same order as params)."""
        logits, acts = self.forward(x)
        log_p = self._log_softmax(logits)
        n = len(y)
        loss = -float(log_p[np.arange(n), y].mean())
        delta = np.exp(log_p)  # d loss / d logits = softmax - onehot, over the batch size
        delta[np.arange(n), y] -= 1
        delta /= n
        layers = self.layers
        for i in range(len(layers) - 1, -1, -1):
            w = layers[i][0]
            np.matmul(acts[i].T, delta, out=self.grads[2 * i])
            self.grads[2 * i + 1][...] = delta.sum(axis=0)
            if i > 0:
                delta = (delta @ w.T) * (acts[i] > 0)
        return loss

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) on a whole data set."""
        logits, _ = self.forward(x)
        log_p = self._log_softmax(logits)
        loss = -float(log_p[np.arange(len(y)), y].mean())
        accuracy = float((logits.argmax(axis=1) == y).mean())
        return loss, accuracy
