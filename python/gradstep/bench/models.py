"""Model-shaped parameter lists for bench cases, from shapes only (nothing downloaded or imported).

Each model is its parameters' shapes in ``model.named_parameters()`` order:

``mlp``
    A 784-256-10 perceptron on MNIST-sized input (``nn.Linear(784, 256)``,
    ``nn.Linear(256, 10)``): 4 tensors, 203,530 elements. Small enough to
    stay in cache: it shows the per-step and per-tensor overheads.
``resnet18``
    torchvision's ``resnet18()`` (ImageNet, 1000 classes): 62 tensors
    (20 conv weights, 4-D, no biases; 20 batch-norm weights and 20 biases;
    the fc weight 1000x512 and bias), 11,689,512 elements, torchvision's
    published count. Batch-norm running statistics are buffers, not
    parameters, and are not stepped.
``gpt2``
    GPT-2 small as in Hugging Face's ``GPT2LMHeadModel``: 148 tensors, the
    token embedding wte 50257x768 (tied to the LM head, so counted once), the
    position embedding wpe 1024x768, 12 blocks of 12 tensors (ln_1, attn.c_attn,
    attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj, each a weight and a bias; the
    Conv1D weights are in x out), and ln_f: 124,439,808 elements, of which
    85,056,000 are outside the two embeddings. Adam's step then moves
    28 B x 124M = 3.5 GB (float32); every candidate holds its own params
    and states (~1.5 GB each), so a gpt2 Adam case needs ~14 GB of RAM
    (``gradstep bench`` refuses a case that would not fit in what is available).
"""

from __future__ import annotations

import math

Shape = tuple[int, ...]


def _mlp() -> list[Shape]:
    return [(256, 784), (256,), (10, 256), (10,)]


def _resnet18() -> list[Shape]:
    shapes: list[Shape] = [(64, 3, 7, 7), (64,), (64,)]  # conv1, bn1
    inplanes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):  # BasicBlock x 2 per layer
            cin = inplanes if block == 0 else planes
            shapes += [(planes, cin, 3, 3), (planes,), (planes,),  # conv1, bn1
                       (planes, planes, 3, 3), (planes,), (planes,)]  # conv2, bn2
            if block == 0 and (stride != 1 or inplanes != planes):
                shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]  # downsample conv, bn
        inplanes = planes
    shapes += [(1000, 512), (1000,)]  # fc
    return shapes


def _gpt2(layers: int = 12, d: int = 768, vocab: int = 50257, positions: int = 1024) -> list[Shape]:
    shapes: list[Shape] = [(vocab, d), (positions, d)]  # wte, wpe
    for _ in range(layers):
        shapes += [(d,), (d,),  # ln_1
                   (d, 3 * d), (3 * d,),  # attn.c_attn
                   (d, d), (d,),  # attn.c_proj
                   (d,), (d,),  # ln_2
                   (d, 4 * d), (4 * d,),  # mlp.c_fc
                   (4 * d, d), (d,)]  # mlp.c_proj
    shapes += [(d,), (d,)]  # ln_f
    return shapes


MODELS: dict[str, tuple[Shape, ...]] = {
    "mlp": tuple(_mlp()),
    "resnet18": tuple(_resnet18()),
    "gpt2": tuple(_gpt2()),
}


def elements(shapes: tuple[Shape, ...]) -> int:
    return sum(math.prod(s) for s in shapes)
