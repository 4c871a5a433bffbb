"""The scale simulator's model of sharded mode (``parainfer simulate --data-path sharded``).

The same plan code as a real sharded job (``io.shards.factoring_sizes``: rounds of N shards of
``remaining / (2 N)`` records each, Hummel, Schonberg & Flynn 1992) and the same hand-out rule
(the next shard in input order goes to the first worker that is free: self-scheduling), against
simulated workers:

* a shard of n records costs its worker ``shard_overhead_s + n x record_s`` at its speed, where
  ``record_s`` is the measured job's compute per record (``simulate.Workload``: the fitted task
  cost over the tasks' records, so record-mode and sharded reports both feed it);
* the driver is one serial server that spends ``shard_driver_s`` per shard (plan, dispatch,
  commit; from a sharded report's ``driver_busy_s`` / shards, else ``DEFAULT_SHARD_DRIVER_S``)
  and nothing per record: records never pass through it;
* worker speed spread and a straggler as in ``simulate.simulate``;
* a sharded report's first shard start (the worker's lazy imports of the shard runner) as a
  start-up lag of every worker.

Validation against real sharded runs at N = 1 and 2: ``tests/test_simulate_sharded.py``.
"""

from __future__ import annotations

import heapq
import math
import random
from typing import Any

from parainfer.io.shards import factoring_sizes

DEFAULT_SHARD_DRIVER_S = 5e-3  # plan + dispatch + manifest commit (fsync) per shard, measured order
DEFAULT_SHARD_OVERHEAD_S = 5e-3  # a worker's per-shard cost: open, new length estimate, two fsyncs


def record_seconds(workload: Any) -> float:
    """Worker compute seconds per record of a ``simulate.Workload`` (fitted task cost summed
    over its tasks, divided by their records)."""
    records = sum(n for n, _ in workload.tasks)
    total = sum(workload.task_seconds(tok) for _, tok in workload.tasks)
    return total / max(1, records)


def simulate_sharded(workload: Any, workers: int, records: int, speed_sigma: float = 0.0, slowdown: float = 1.0,
                     shard_driver_s: float = DEFAULT_SHARD_DRIVER_S,
                     shard_overhead_s: float = DEFAULT_SHARD_OVERHEAD_S, min_records: int = 128,
                     max_records: int = 2_000_000, start_lag_s: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """One simulated sharded run of ``records`` records on ``workers`` workers.

    Returns the same keys as ``simulate.simulate`` (t_n_s, t1_s, speedup, efficiency,
    imbalance; ``policy`` is "factoring", ``tasks`` the number of shards). T_1 is the one-worker
    compute of all records with one shard overhead. ``start_lag_s``: from the first hand-out to
    a worker starting its first shard (its lazy imports), added once to every worker.
    """
    record_s = record_seconds(workload)
    rng = random.Random(seed + 1)
    speeds = [math.exp(speed_sigma * rng.gauss(0, 1)) for _ in range(workers)]
    if slowdown != 1.0:
        speeds[-1] /= slowdown
    free = [(start_lag_s, w) for w in range(workers)]  # (time the worker is free, worker)
    heapq.heapify(free)
    busy = [0.0] * workers
    driver_at, last_end, shards = 0.0, 0.0, 0
    left = records
    for size in factoring_sizes(records, workers, min_records, max_records):
        n = min(size, left)
        left -= n
        t_free, w = heapq.heappop(free)
        driver_at = max(driver_at, t_free) + shard_driver_s
        cost = (shard_overhead_s + n * record_s) / speeds[w]
        end = driver_at + cost
        busy[w] += cost
        last_end = max(last_end, end)
        heapq.heappush(free, (end, w))
        shards += 1
    t1 = shard_overhead_s + records * record_s
    mean_busy = sum(busy) / workers
    speedup = t1 / last_end if last_end > 0 else 0.0
    return {"workers": workers, "policy": "factoring", "tasks": shards, "records": records, "t_n_s": last_end,
            "t1_s": t1, "speedup": speedup, "efficiency": speedup / workers,
            "imbalance": max(busy) / mean_busy if mean_busy > 0 else 1.0}


def shard_driver_seconds(report: dict[str, Any]) -> float:
    """The driver's CPU seconds per shard in a sharded report (``driver_busy_s`` less
    ``driver_finish_cpu_s``, / shards run),
    else ``DEFAULT_SHARD_DRIVER_S`` (a record-mode report says nothing about shards)."""
    shards = (report.get("shards") or {}).get("run") if report.get("data_path") == "sharded" else None
    if shards and report.get("driver_busy_s") is not None:  # less the final concatenation (not per shard)
        return (report["driver_busy_s"] - report.get("driver_finish_cpu_s", 0.0)) / shards
    return DEFAULT_SHARD_DRIVER_S


def sharded_rows(report_path: str, workload: Any, counts: list[int], records: int | None, speed_sigma: float,
                 slowdown: float, seed: int, shard_driver_s: float | None = None) -> list[dict[str, Any]]:
    """``simulate_sharded`` at each worker count in ``counts`` for the measured report at
    ``report_path`` (``records`` default: the report's; ``shard_driver_s`` default:
    ``shard_driver_seconds`` of the report). Each row also has ``shard_driver_s`` and ``record_s``."""
    from parainfer.report import load_report

    report = load_report(report_path)
    n = records or report.get("records") or sum(k for k, _ in workload.tasks)
    driver_s = shard_driver_seconds(report) if shard_driver_s is None else shard_driver_s
    sharded = report.get("data_path") == "sharded"
    # A sharded report's timeline is its shards: the fitted cost already holds the per-shard
    # overhead, and its smallest shard is the plan's minimum.
    overhead = 0.0 if sharded else DEFAULT_SHARD_OVERHEAD_S
    smallest = min((k for k, _ in workload.tasks), default=128) if sharded else 128
    lag = min((t[2] for t in report.get("timeline") or []), default=0.0) if sharded else 0.0
    rows = [simulate_sharded(workload, w, n, speed_sigma=speed_sigma, slowdown=slowdown, shard_driver_s=driver_s,
                             shard_overhead_s=overhead, min_records=max(1, smallest), start_lag_s=max(0.0, lag),
                             seed=seed) for w in counts]
    for row in rows:
        row.update(shard_driver_s=driver_s, record_s=record_seconds(workload))
    return rows
