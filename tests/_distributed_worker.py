"""Worker for test_distributed.py: one rank of a 2-process ZeRO + DDP run on gloo."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import gradstep.torch as gt


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()


def batches(steps=20):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 8, generator=g, dtype=torch.float64),
             torch.randn(16, 1, generator=g, dtype=torch.float64)) for _ in range(steps)]


def run(rank, world, port, out):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    net = DistributedDataParallel(model())
    opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=gt.Adam, lr=1e-2, amsgrad=True)
    for x, y in batches():
        half = x.shape[0] // world
        xs, ys = x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(xs), ys).backward()
        opt.step()
    if rank == 0:
        torch.save([p.detach().clone() for p in net.parameters()], out)
    dist.barrier()
    dist.destroy_process_group()
