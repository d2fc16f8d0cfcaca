"""Worker for test_torch_half.py: torch's fused CPU Adam/AdamW on bf16/f16 params, step by
step (the params and state before each step, and after), under the CPU kernels chosen by this
process's ATEN_CPU_CAPABILITY."""

from __future__ import annotations

import copy
import sys

import torch


def main(out: str) -> None:
    results = {"capability": torch.backends.cpu.get_cpu_capability(), "runs": {}}
    for name, opts in (("Adam", {"lr": 1e-3, "weight_decay": 0.01}), ("AdamW", {"lr": 1e-3, "amsgrad": True})):
        for dtype in (torch.bfloat16, torch.float16):
            g = torch.Generator().manual_seed(0)
            params = [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in ((130, 70), (257,))]
            opt = getattr(torch.optim, name)(params, **opts, fused=True)
            steps = []
            for _ in range(4):
                grads = [torch.randn(p.shape, generator=g).to(dtype) for p in params]
                before = ([p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()))
                for p, gr in zip(params, grads):
                    p.grad = gr.clone()
                opt.step()
                steps.append((before, grads, [p.detach().clone() for p in params],
                              copy.deepcopy(opt.state_dict())))
            results["runs"][(name, str(dtype))] = (opts, steps)
    torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1])
