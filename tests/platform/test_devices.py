"""``--device``: validation, replicas spread over GPUs, workers per device (GPU count simulated)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from parainfer.platform import devices
from parainfer.config import JobConfig
from parainfer.errors import UsageError


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    def set_count(n: int) -> None:
        monkeypatch.setattr(devices, "gpu_count", lambda: n)
    return set_count


def test_unknown_device_names_the_accepted_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown device 'gpu'; accepted: cpu, cuda, cuda:N"):
        devices.check_device("gpu")


def test_cuda_without_a_gpu_is_a_usage_error_and_auto_falls_back_to_cpu(gpus) -> None:
    gpus(0)
    with pytest.raises(UsageError, match="torch sees no CUDA GPU"):
        devices.check_device("cuda")
    assert devices.check_device("auto") == "cpu"
    assert devices.default_workers("cpu", cores=6) == 6


def test_replicas_spread_round_robin_over_the_gpus(gpus) -> None:
    gpus(2)
    assert devices.check_device("AUTO") == "cuda" and devices.check_device("cuda:1") == "cuda:1"
    with pytest.raises(UsageError, match=r"torch sees 2 GPU\(s\), cuda:0 to cuda:1"):
        devices.check_device("cuda:2")
    assert [devices.worker_device("cuda", w) for w in range(5)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert devices.worker_device("cuda:1", 3) == "cuda:1" and devices.worker_device("cpu", 3) == "cpu"
    assert devices.default_workers("cuda", cores=16) == 2 and devices.default_workers("cuda:1", cores=16) == 1
    assert JobConfig(input="a.jsonl", output="b.jsonl", device="auto").device == "cuda"


def test_cli_rejects_a_gpu_torch_cannot_see(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "hi"}\n')
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(tmp_path / "o.jsonl"),
                           "--device", "cuda:99"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "'cuda:99'" in proc.stderr and "torch sees" in proc.stderr
    assert "Traceback" not in proc.stderr
