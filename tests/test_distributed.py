"""ZeroRedundancyOptimizer + DDP over two processes with gradstep's Adam."""

from __future__ import annotations

import socket

import torch
import torch.multiprocessing as mp

import _distributed_worker as worker


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_zero_matches_single_process_torch(tmp_path):
    out = tmp_path / "params.pt"
    mp.spawn(worker.run, args=(2, free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out)

    net = worker.model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, amsgrad=True, foreach=False)
    for x, y in worker.batches():
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    assert len(got) == len(list(net.parameters()))
    for a, b in zip(got, net.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-10, atol=1e-12)
