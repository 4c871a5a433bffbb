"""Where model replicas run: ``--device cpu | cuda | cuda:N | auto``.

One worker process holds one model replica. On the CPU each worker gets ``cores // workers``
intra-op threads. With ``cuda`` the workers are spread over the visible GPUs round robin (worker
w on ``cuda:{w % gpu_count}``), and ``--workers 0`` means one worker per GPU; ``cuda:N`` puts
every worker on GPU N (several replicas on one GPU overlap their host-side work: tokenising,
Python, kernel launches). ``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``.

torch is imported only when a GPU is asked for (``cuda``/``auto``), so a CPU job does not pay
for it in the driver.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from parainfer.errors import UsageError

ACCEPTED = "cpu, cuda, cuda:N (a GPU index), auto"


def gpu_count() -> int:
    """CUDA GPUs torch can see (0 when torch has no CUDA or there is no GPU)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_device(spec: str) -> str:
    """Validate and resolve a ``--device`` value; returns "cpu", "cuda" or "cuda:N".

    Raises:
        UsageError: ``spec`` is not one of the accepted forms, or names a GPU torch cannot see
            (no GPU, a CPU-only torch build, or N >= the number of GPUs).
    """
    spec = str(spec).strip().lower()
    if spec == "cpu":
        return spec
    if spec == "auto":
        return "cuda" if gpu_count() else "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise UsageError(f"unknown device {spec!r}; accepted: {ACCEPTED}")
    count = gpu_count()
    if count == 0:
        raise UsageError(f"device {spec!r} asked for, but torch sees no CUDA GPU (a CPU-only torch build, "
                         f"or no GPU on this machine); use --device cpu")
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise UsageError(f"device {spec!r}: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}")
    return spec


def worker_device(device: str, worker_id: int) -> str:
    """The device of worker ``worker_id``: ``cuda`` -> ``cuda:{worker_id % gpu_count()}``;
    ``cpu`` and ``cuda:N`` unchanged."""
    if device != "cuda":
        return device
    return f"cuda:{worker_id % max(1, gpu_count())}"


def default_workers(device: str, cores: int) -> int:
    """Workers for ``--workers 0``: one per GPU for ``cuda``, one for ``cuda:N``, one per core on the CPU."""
    if device == "cuda":
        return max(1, gpu_count())
    if device.startswith("cuda:"):
        return 1
    return cores


# A config field holding a ``--device`` value, checked and resolved by ``check_device``.
Device = Annotated[str, AfterValidator(check_device)]
