"""Choosing the compute dtype: float32 or bfloat16 (``--dtype auto|float32|bfloat16``).

``auto`` picks bfloat16 when the CPU has native bf16 matmul (AVX-512 BF16 or AMX, read from
/proc/cpuinfo flags) or a CUDA device supports it, and the caller then checks the outputs
stay within tolerance of float32 on a calibration batch (see ``hf_common.HFEncoder.load``);
otherwise float32.
"""

from __future__ import annotations

import functools

from parainfer.errors import UsageError

DTYPES = ("auto", "float32", "bfloat16")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when /proc/cpuinfo lists avx512_bf16 or amx_bf16 (native bf16 dot products)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def check_dtype(name: str) -> str:
    """Validate a ``--dtype`` value; returns it. Raises UsageError naming accepted values."""
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; accepted: {', '.join(DTYPES)}")
    return name


def resolve_dtype(name: str, device: str = "cpu") -> str:
    """Map ``auto`` to "bfloat16" or "float32" for this machine; other values pass through."""
    check_dtype(name)
    if name != "auto":
        return name
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"
