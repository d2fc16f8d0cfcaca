"""Time optimizer steps against the peers installed and against the memory roof.

For every optimizer and case (one tensor of N elements, M tensors of N
elements each, or the parameter shapes of a model: mlp, resnet18, gpt2),
gradstep's step is timed beside the peers this Python has:
numpy written by hand from the update equations (always), torch.optim with a
for-loop, foreach and fused implementation (when torch is installed and the
optimizer has that implementation), the reference package's class of an
optimizer torch.optim has not ("reference": lion_pytorch.Lion, when it is
installed), and DeepSpeedCPUAdam / DeepSpeedCPUAdagrad (when deepspeed
imports). A model case has the candidates a training loop chooses between
instead: torch.optim fused and foreach (or the reference), gradstep.torch (over
the torch tensors, and over flat parameters where gradstep.torch has
flatten_parameters), gs.X on the same buffers, deepspeed. The roof is a STREAM-like probe in the C++ core that
reads and writes the same buffers as the step (param, grad and the
optimizer's states) with the same threads but no optimizer math.

All candidates of a case run in one process, interleaved round-robin: each
round sleeps first so that torch's OpenMP threads, which spin for ~10 ms
after every torch op, have parked, then every candidate warms up (a few
steps, untimed) and takes one sample of back-to-back steps. Reported times
are medians over rounds of the time per step, Python call included. Cases
of 4M elements and more get new buffers every round (physical placement
matters to DRAM-bound steps; see measure).

With ``--dtype bfloat16`` or ``float16`` every case runs at each precision of
``--precision`` (default all): ``f32-states`` (float32 states, gradstep's
default for half params), ``param-states`` (states in the param's dtype, the
layout of torch.optim's half path, timed beside it), ``f32-master`` (a float32
master copy too) and ``stochastic`` (stochastic rounding), a row each with its
own bytes per element and a roof streaming that configuration's buffers;
DeepSpeedCPUAdam is timed with float32 states beside ``f32-states`` and with
half states beside ``param-states``.

With several thread counts (``--threads 1,2``) every case runs at each, gradstep
and torch alike, and a table of the scaling per case follows.

Results print as a table; with ``--out DIR`` the table, a JSON record (with
the machine, versions and settings, to keep and ``--compare`` against later)
and a PNG chart are written there.
"""

from __future__ import annotations

from gradstep.bench.candidates import (
    MODEL_CANDIDATES,
    PEERS,
    Candidate,
    deepspeed_available,
    make_candidates,
    torch_optimizer,
    torch_present,
)
from gradstep.bench.cli import add_arguments, run
from gradstep.bench.numpy_steps import NumpyState
from gradstep.bench.models import MODELS
from gradstep.bench.record import FORMAT, FORMATS, machine_info, upgrade, versions
from gradstep.bench.report import chart, compare, fmt_time, scaling, table
from gradstep.bench.spec import (
    DEFAULT_CASES,
    HALF_DTYPES,
    OPTIMIZERS,
    PRECISIONS,
    QUICK_CASES,
    SPECS,
    Case,
    Spec,
    bench_dtype,
    bytes_per_element,
    parse_precisions,
    parse_threads,
    ready,
    state_count,
    import_reference,
)
from gradstep.bench.timing import FRESH_ELEMENTS, TORCH_SETTLE_S, measure, run_all, run_case

__all__ = [
    "DEFAULT_CASES",
    "FORMAT",
    "FORMATS",
    "FRESH_ELEMENTS",
    "HALF_DTYPES",
    "MODELS",
    "MODEL_CANDIDATES",
    "OPTIMIZERS",
    "PEERS",
    "PRECISIONS",
    "QUICK_CASES",
    "SPECS",
    "TORCH_SETTLE_S",
    "Candidate",
    "Case",
    "NumpyState",
    "Spec",
    "add_arguments",
    "bench_dtype",
    "bytes_per_element",
    "chart",
    "compare",
    "deepspeed_available",
    "fmt_time",
    "machine_info",
    "make_candidates",
    "measure",
    "parse_precisions",
    "parse_threads",
    "ready",
    "run",
    "run_all",
    "run_case",
    "scaling",
    "state_count",
    "table",
    "import_reference",
    "torch_optimizer",
    "torch_present",
    "upgrade",
    "versions",
]
