"""Fixtures of the fault-injection tests: one input, and the output of a clean run per format."""

from __future__ import annotations

from pathlib import Path

import pytest

import faultkit


@pytest.fixture(scope="session")
def fault_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return faultkit.write_input(tmp_path_factory.mktemp("faults") / "in.jsonl")


@pytest.fixture(scope="session")
def clean_output(fault_input: Path, tmp_path_factory: pytest.TempPathFactory):
    """fmt -> bytes of an uninterrupted run's output (computed once per format)."""
    cache: dict[str, bytes] = {}

    def get(fmt: str) -> bytes:
        if fmt not in cache:
            out = tmp_path_factory.mktemp("clean") / f"out.{fmt}"
            proc = faultkit.run(faultkit.command(fault_input, out))
            assert proc.returncode == 0, proc.stderr
            cache[fmt] = out.read_bytes()
        return cache[fmt]

    return get
