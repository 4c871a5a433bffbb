"""Scale simulator: the real scheduling policies against simulated workers (discrete events).

``parainfer simulate --workers 1,2,4,...,1024 --policy P --cost-from REPORT.json`` predicts
T_N, speedup, efficiency and imbalance at worker counts this machine does not have. It drives
the same policy classes the driver uses (``scheduling.make_policy``) with task costs fitted
from a measured report (``Workload``, ``fit_line``), tasks resampled from its timeline
(``make_tasks``), spread worker speeds and the driver as one serial server (``simulate``).
The model and its validation: docs/scheduling.md, "Scale simulator".
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError
from parainfer.scheduling import make_policy
from parainfer.executors.base import Task


@dataclass
class Workload:
    """What a measured job looked like, for the simulator.

    Attributes:
        tasks: (records, padded_tokens) per task.
        overhead_s, s_per_token: fitted task cost (seconds).
        driver_s: serial driver seconds per task.
    """

    tasks: list[tuple[int, int]]
    overhead_s: float
    s_per_token: float
    driver_s: float

    @classmethod
    def from_report(cls, path: str | Path) -> Workload:
        """Fit a workload from a ``parainfer run --report`` file.

        Raises UsageError when the file is missing or holds no timeline.
        """
        from parainfer.batch.report import load_report

        p = Path(path)
        report = load_report(p)
        timeline = report.get("timeline") or []
        if not timeline:
            raise UsageError(f"report {str(p)!r} has no task timeline to fit costs from")
        xs = [float(t[6] if len(t) > 6 else t[5]) for t in timeline]
        ys = [t[3] - t[2] for t in timeline]
        a, b = fit_line(xs, ys)
        serial = report.get("driver_busy_s")
        if serial is None:
            serial = report["t_create_s"] + report["t_schedule_s"] + report.get("t_write_s", 0.0)
        return cls([(t[4], int(x)) for t, x in zip(timeline, xs)], a, b, serial / max(1, len(timeline)))

    def faster(self, factor: float) -> Workload:
        """The same workload with every worker ``factor`` times faster per task (> 0); the
        driver's cost per task is unchanged (a GPU-like profile: factor 50)."""
        if not factor > 0:
            raise UsageError(f"worker speed-up must be > 0, got {factor}")
        return Workload(self.tasks, self.overhead_s / factor, self.s_per_token / factor, self.driver_s)

    def task_seconds(self, padded_tokens: int) -> float:
        return self.overhead_s + self.s_per_token * padded_tokens


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (a, b) of y = a + b x, both clamped at >= 0 (a proportional fit if x is constant)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 1e-12:
        return 0.0, (my / mx if mx > 0 else 0.0)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    if b < 0:
        return max(0.0, my), 0.0
    if a < 0:
        return 0.0, sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    return a, b


def make_tasks(workload: Workload, records: int | None, seed: int) -> list[Task]:
    """The measured tasks, resampled (with a fixed seed) until ``records`` records are covered."""
    pool = workload.tasks
    if records is None:
        chosen = list(pool)
    else:
        rng, chosen, total = random.Random(seed), [], 0
        while total < records:
            chosen.append(pool[rng.randrange(len(pool))])
            total += chosen[-1][0]
    return [Task(index=i, seqs=[], texts=[], tokens=tok, padded_tokens=tok, batch_size=n)
            for i, (n, tok) in enumerate(chosen)]


def simulate(workload: Workload, workers: int, policy: str = "dynamic", records: int | None = None,
             speed_sigma: float = 0.0, slowdown: float = 1.0, dispatch_latency_s: float = 2e-4,
             prefetch: int = 1, seed: int = 0) -> dict[str, Any]:
    """One simulated run. Returns a dict with t_n_s, t1_s, speedup, efficiency, imbalance.

    Event loop: the driver dispatches a task to every worker with room (at most ``prefetch`` + 1
    held), one ``driver_s`` at a time; a worker runs its tasks FIFO at its speed; each completion
    feeds the policy (``on_task_done``) and frees room for the next dispatch.
    """
    tasks = make_tasks(workload, records, seed)
    rng = random.Random(seed + 1)
    speeds = [math.exp(speed_sigma * rng.gauss(0, 1)) for _ in range(workers)]
    if slowdown != 1.0:
        speeds[-1] /= slowdown
    sched = make_policy(policy, workers)
    sched.add_tasks(tasks)
    held = [0] * workers
    free_at = [0.0] * workers
    busy = [0.0] * workers
    events: list[tuple[float, int, int]] = []  # (time, worker, task index)
    by_index = {t.index: t for t in tasks}
    driver_at, last_end = 0.0, 0.0

    def dispatch(w: int, now: float) -> None:
        nonlocal driver_at
        while held[w] <= prefetch:
            task = sched.next_task(w)
            if task is None:
                return
            driver_at = max(driver_at, now) + workload.driver_s
            start = max(driver_at + dispatch_latency_s, free_at[w])
            cost = workload.task_seconds(task.padded_tokens) / speeds[w]
            free_at[w] = start + cost
            busy[w] += cost
            held[w] += 1
            heapq.heappush(events, (free_at[w], w, task.index))

    for w in range(workers):
        dispatch(w, 0.0)
    while events:
        now, w, index = heapq.heappop(events)
        held[w] -= 1
        last_end = max(last_end, now)
        task = by_index[index]
        sched.on_task_done(w, task, workload.task_seconds(task.padded_tokens) / speeds[w])
        dispatch(w, now)
    t1 = sum(workload.task_seconds(t.padded_tokens) for t in tasks)
    mean_busy = sum(busy) / workers
    speedup = t1 / last_end if last_end > 0 else 0.0
    return {"workers": workers, "policy": policy, "tasks": len(tasks), "records": sum(t.batch_size for t in tasks),
            "t_n_s": last_end, "t1_s": t1, "speedup": speedup, "efficiency": speedup / workers,
            "imbalance": max(busy) / mean_busy if mean_busy > 0 else 1.0}


def amdahl_fraction(rows: list[dict[str, Any]]) -> float:
    """Serial fraction f of Amdahl's law S(N) = 1 / (f + (1 - f) / N), least squares on 1/S.

    1/S = f (1 - 1/N) + 1/N, so f = sum((1/S - 1/N)(1 - 1/N)) / sum((1 - 1/N)^2) over N > 1.
    """
    pts = [(1 / r["speedup"] - 1 / r["workers"], 1 - 1 / r["workers"]) for r in rows
           if r["workers"] > 1 and r["speedup"] > 0]
    den = sum(x * x for _, x in pts)
    return sum(y * x for y, x in pts) / den if den else 0.0


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of simulated rows."""
    lines = ["| workers | policy | T_N (s) | speedup | efficiency | imbalance |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['policy']} | {r['t_n_s']:.3f} | {r['speedup']:.2f} | {r['efficiency']:.3f} "
              f"| {r['imbalance']:.3f} |" for r in rows]
    return "\n".join(lines)
