"""The scale simulator's model of sharded mode (``parainfer simulate --data-path sharded``).

``simulate_sharded`` runs the real shard plan (``io.shards.plan.FactoringPlan``: factoring,
Hummel, Schonberg & Flynn 1992) fed the real driver's measurements, with the same hand-out rule
(self-scheduling), against simulated workers and a driver that is one serial server paid per
shard, not per record. ``shard_driver_seconds`` reads a sharded report's per-shard driver cost.
The model (costs, prefetch, start-up lag, what T_N includes) and its validation:
docs/sharded.md, "Simulating sharded mode".
"""

from __future__ import annotations

import heapq
import math
import random
from typing import Any

from parainfer.io.shards.plan import FactoringPlan

DEFAULT_SHARD_DRIVER_S = 5e-4  # driver CPU per shard (hand out + take back), measured order on 2 cores
DEFAULT_SHARD_OVERHEAD_S = 5e-3  # a worker's per-shard cost: open, new length estimate, two fsyncs


def record_seconds(workload: Any) -> float:
    """Worker compute seconds per record of a ``simulate.records.Workload`` (fitted task cost summed
    over its tasks, divided by their records)."""
    records = sum(n for n, _ in workload.tasks)
    total = sum(workload.task_seconds(tok) for _, tok in workload.tasks)
    return total / max(1, records)


def simulate_sharded(workload: Any, workers: int, records: int, speed_sigma: float = 0.0, slowdown: float = 1.0,
                     shard_driver_s: float = DEFAULT_SHARD_DRIVER_S, dispatch_share: float = 0.5,
                     shard_overhead_s: float = DEFAULT_SHARD_OVERHEAD_S, min_records: int = 128,
                     max_records: int = 2_000_000, start_lag_s: float = 0.0, prefetch: int = 1,
                     seed: int = 0, window: int = 1) -> dict[str, Any]:
    """One simulated sharded run of ``records`` records on ``workers`` workers.

    Returns the same keys as ``simulate.records.simulate`` (t_n_s, t1_s, speedup, efficiency,
    imbalance; ``policy`` is "factoring", ``tasks`` the number of shards) plus
    ``smallest_shard`` (records) and ``driver_busy`` (the driver's busy share of T_N). T_1 is
    the one-worker compute of all records with one shard overhead. ``start_lag_s``: from the
    first hand-out to a worker starting its first shard, added once to every worker.
    ``prefetch``: shards queued on a worker behind the running one (``batch.shard_mode.PREFETCH``).
    ``window``: the job's window (records); a shard is rounded up to whole windows, as the real
    plan cuts them (``io.shards.plan.TextCutter``).
    Raises ValueError for a ``dispatch_share`` outside [0, 1].
    """
    if not 0.0 <= dispatch_share <= 1.0:
        raise ValueError(f"dispatch_share must be in [0, 1], got {dispatch_share}")
    record_s = record_seconds(workload)
    rng = random.Random(seed + 1)
    speeds = [math.exp(speed_sigma * rng.gauss(0, 1)) for _ in range(workers)]
    if slowdown != 1.0:
        speeds[-1] /= slowdown
    d_out, d_in = shard_driver_s * dispatch_share, shard_driver_s * (1 - dispatch_share)
    plan = FactoringPlan(records, workers, max(1, min_records), max(min_records, max_records))
    ends: list[tuple[float, int, int, float]] = []  # (shard end, worker, its records, its cost)
    free_at = [0.0] * workers  # when each worker has run every shard it holds
    busy = [0.0] * workers
    state = {"driver_at": 0.0, "last_end": 0.0, "shards": 0, "smallest": 0}

    def hand_out(w: int, now: float) -> None:
        """The driver gives worker ``w`` the plan's next shard; it starts when the worker has
        run the ones it holds (prefetched: it waits for nothing when the driver kept up)."""
        n = min(plan.next_size(), plan.left)
        n = min(-(-n // window) * window, plan.left)  # shards end at window boundaries (io.shards.plan)
        if n <= 0:
            return
        plan.take(n)
        state["driver_at"] = max(state["driver_at"], now) + d_out
        start = max(state["driver_at"] + (start_lag_s if not busy[w] else 0.0), free_at[w])
        cost = (shard_overhead_s + n * record_s) / speeds[w]
        free_at[w] = start + cost
        busy[w] += cost
        state["last_end"] = max(state["last_end"], free_at[w])
        heapq.heappush(ends, (free_at[w], w, n, cost))
        state["shards"] += 1
        state["smallest"] = n if not state["smallest"] else min(state["smallest"], n)

    for _ in range(1 + prefetch):  # every worker's first shard, then its queued ones
        for w in range(workers):
            hand_out(w, 0.0)
    done_records, done_busy = 0, 0.0
    while ends:  # a shard ends: the driver takes it back, measures, and refills that worker
        end, w, n, cost = heapq.heappop(ends)
        state["driver_at"] = max(state["driver_at"], end) + d_in
        done_records, done_busy = done_records + n, done_busy + cost
        plan.observe(shard_driver_s, done_busy / done_records)
        hand_out(w, end)
    last_end, shards, smallest = state["last_end"], state["shards"], state["smallest"]
    t1 = shard_overhead_s + records * record_s
    mean_busy = sum(busy) / workers
    speedup = t1 / last_end if last_end > 0 else 0.0
    return {"workers": workers, "policy": "factoring", "tasks": shards, "records": records, "t_n_s": last_end,
            "t1_s": t1, "speedup": speedup, "efficiency": speedup / workers,
            "imbalance": max(busy) / mean_busy if mean_busy > 0 else 1.0, "smallest_shard": smallest,
            "driver_busy": shards * shard_driver_s / last_end if last_end > 0 else 0.0}


def shard_driver_seconds(report: dict[str, Any]) -> tuple[float, float]:
    """(driver CPU seconds per shard, the share of it spent handing shards out) of a report.

    A sharded report with ``driver_shard_us`` (hand out + take back, idle wake-ups apart) gives
    both; an older sharded report gives ``driver_busy_s`` less ``driver_finish_cpu_s`` over the
    shards run (idle wake-ups included) and 0.5; a record-mode report
    ``DEFAULT_SHARD_DRIVER_S`` and 0.5 (it says nothing about shards)."""
    if report.get("data_path") != "sharded":
        return DEFAULT_SHARD_DRIVER_S, 0.5
    split = report.get("driver_shard_us") or {}
    total_us = split.get("dispatch", 0.0) + split.get("complete", 0.0)
    if total_us > 0:
        return total_us / 1e6, split["dispatch"] / total_us
    shards = (report.get("shards") or {}).get("run")
    if shards and report.get("driver_busy_s") is not None:  # less the final concatenation (not per shard)
        return (report["driver_busy_s"] - report.get("driver_finish_cpu_s", 0.0)) / shards, 0.5
    return DEFAULT_SHARD_DRIVER_S, 0.5


def sharded_rows(report_path: str, workload: Any, counts: list[int], records: int | None, speed_sigma: float,
                 slowdown: float, seed: int, shard_driver_s: float | None = None,
                 dispatch_share: float | None = None) -> list[dict[str, Any]]:
    """``simulate_sharded`` at each worker count in ``counts`` for the measured report at
    ``report_path`` (``records`` default: the report's; ``shard_driver_s`` default:
    ``shard_driver_seconds`` of the report; ``dispatch_share`` default: the report's, else 0.5;
    ValueError outside [0, 1]). Each row
    also has ``shard_driver_s``, ``dispatch_share`` and ``record_s``."""
    from parainfer.batch.report import load_report

    report = load_report(report_path)
    n = records or report.get("records") or sum(k for k, _ in workload.tasks)
    measured, share = shard_driver_seconds(report)
    share = share if dispatch_share is None else dispatch_share
    driver_s = measured if shard_driver_s is None else shard_driver_s
    sharded = report.get("data_path") == "sharded"
    # A sharded report's timeline is its shards: the fitted cost already holds the per-shard
    # overhead, and its smallest shard is the plan's minimum.
    overhead = 0.0 if sharded else DEFAULT_SHARD_OVERHEAD_S
    smallest = min((k for k, _ in workload.tasks), default=128) if sharded else 128
    lag = min((t[2] for t in report.get("timeline") or []), default=0.0) if sharded else 0.0
    rows = [simulate_sharded(workload, w, n, speed_sigma=speed_sigma, slowdown=slowdown, shard_driver_s=driver_s,
                             dispatch_share=share, shard_overhead_s=overhead, min_records=max(1, smallest), start_lag_s=max(0.0, lag),
                             seed=seed, window=max(1, (report.get("shards") or {}).get("window", 1))) for w in counts]
    for row in rows:
        row.update(shard_driver_s=driver_s, dispatch_share=share, record_s=record_seconds(workload))
    return rows
