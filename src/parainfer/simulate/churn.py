"""Churn in the scale simulator: nodes join, are lost and are preempted while a job runs.

``parainfer simulate --churn joins=2,losses=1,preemptions=4`` (events per hour, over the whole
pool) runs the record-mode model of ``simulate.records`` with an elastic pool, as the Ray
executor runs ``--workers MIN:MAX`` (docs/cluster.md, "Elastic workers"): the job starts with N
workers (one per node) and at most ``max_workers`` slots; a join fills a free slot, the new worker
ready ``load_s`` later; a loss kills a worker at once (its running task's compute so far is
thrown away, and its tasks go through the driver's own recovery, ``batch.recovery.TaskRecovery``:
a node lost blames no task, so all are given out again); a preemption is a drain with a notice:
the worker takes no new task and leaves once its tasks are done, or is killed like a loss when
``notice_s`` runs out first. The first worker (the head node) is never lost or preempted. Events
are Poisson processes (exponential gaps, seeded) for as long as the job runs.

Reported beside T_N and speedup: ``efficiency`` = T_1 / worker-seconds paid (each worker from its
start, or its join, to its leaving or the job's end), ``redone_s`` = compute thrown away by losses
(and preemptions cut off by their deadline), and the counts of each event.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any

from parainfer.batch.recovery import TaskRecovery
from parainfer.errors import UsageError
from parainfer.executors.base import WorkerFailed
from parainfer.scheduling import make_policy
from parainfer.simulate.records import Workload, make_tasks

KINDS = ("joins", "losses", "preemptions")


@dataclass(frozen=True)
class Churn:
    """Rates of node events per hour over the pool, and their timings.

    Attributes:
        joins, losses, preemptions: events per hour (>= 0).
        notice_s: a preemption's notice (seconds from the drain to the kill).
        load_s: seconds from a join to its worker being ready (node start and model load).
        max_workers: worker slots (None: twice the starting workers).
    """

    joins: float = 0.0
    losses: float = 0.0
    preemptions: float = 0.0
    notice_s: float = 30.0
    load_s: float = 10.0
    max_workers: int | None = None

    @classmethod
    def parse(cls, text: str) -> Churn:
        """``joins=R,losses=R,preemptions=R[,notice=S][,load=S][,max=N]`` (rates per hour).

        Raises:
            UsageError: an unknown key, a value that is not a number >= 0, or max < 1.
        """
        names = {"joins": "joins", "losses": "losses", "preemptions": "preemptions", "notice": "notice_s",
                 "load": "load_s", "max": "max_workers"}
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, raw = part.partition("=")
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if key.strip() not in names or not value >= 0 or (key.strip() == "max" and value < 1):
                raise UsageError(f"--churn {text!r}: expected KEY=NUMBER pairs, keys {', '.join(names)} (rates "
                                 f"per hour, seconds, max >= 1), got {part!r}")
            values[names[key.strip()]] = int(value) if key.strip() == "max" else value
        return cls(**values)


def simulate_churn(workload: Workload, workers: int, churn: Churn, policy: str = "dynamic", records: int | None = None,
                   dispatch_latency_s: float = 2e-4, prefetch: int = 1, seed: int = 0) -> dict[str, Any]:
    """One simulated run of ``workers`` starting workers under ``churn`` (module docstring).

    Returns the dict of ``records.simulate`` (workers, policy, tasks, records, t_n_s, t1_s,
    speedup, efficiency, imbalance: here max/mean busy over the workers that ran) plus
    worker_s (worker-seconds paid), redone_s, joins, losses, preemptions, killed_at_deadline,
    and ``done`` (False when every worker left and no join came: the job could not finish).
    """
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    slots = max(workers, churn.max_workers or 2 * workers)
    tasks = make_tasks(workload, records, seed)
    live_tasks = {t.index: t for t in tasks}
    sched = make_policy(policy, slots)
    sched.add_tasks(tasks)
    recovery = TaskRecovery(max_retries=10**9, new_index=lambda: len(live_tasks) + 10**9)
    rng = random.Random(seed + 7)
    alive: dict[int, float] = {w: 0.0 for w in range(workers)}  # worker -> when it became ready
    retiring: set[int] = set()
    runs: dict[int, list[tuple[int, float, float]]] = {w: [] for w in range(slots)}  # held: (task, start, end)
    free_at = [0.0] * slots
    busy = [0.0] * slots
    paid = {"worker_s": 0.0, "redone_s": 0.0}
    counts = dict.fromkeys((*KINDS, "killed_at_deadline"), 0)
    incarnation = [0] * slots
    events: list[tuple[float, int, str, int, int]] = []  # (time, order, kind, worker, task or incarnation)
    order = iter(range(1 << 62))
    driver_at, now = 0.0, 0.0

    def push(t: float, kind: str, w: int = -1, payload: int = -1) -> None:
        heapq.heappush(events, (t, next(order), kind, w, payload))

    for kind in KINDS:
        rate = getattr(churn, kind)
        if rate > 0:
            push(rng.expovariate(rate / 3600.0), kind)

    def dispatch(w: int, t: float) -> None:
        nonlocal driver_at
        if w not in alive or w in retiring:
            return
        while len(runs[w]) <= prefetch:
            task = sched.next_task(w)
            if task is None:
                return
            driver_at = max(driver_at, t) + workload.driver_s
            start = max(driver_at + dispatch_latency_s, free_at[w])
            free_at[w] = start + workload.task_seconds(task.padded_tokens)
            runs[w].append((task.index, start, free_at[w]))
            push(free_at[w], "done", w, task.index * 1024 + incarnation[w] % 1024)

    def leave(w: int, t: float, killed: bool) -> None:
        held = runs[w]
        for index, start, end in held:  # what ran before t counts as work done, then thrown away
            busy[w] += max(0.0, min(end, t) - start) if killed else 0.0
            paid["redone_s"] += max(0.0, min(end, t) - start) if killed else 0.0
        if killed and held:
            plan = recovery.plan(WorkerFailed(w, "node lost", [live_tasks[i] for i, _, _ in held], running=-1),
                                 live_tasks)
            for task in plan.requeue:
                sched.requeue(task)
        runs[w] = []
        incarnation[w] += 1
        paid["worker_s"] += t - alive.pop(w)
        retiring.discard(w)
        for other in list(alive):
            dispatch(other, t)

    def victim() -> int | None:
        choices = sorted(w for w in alive if w != 0 and w not in retiring)
        return rng.choice(choices) if choices else None

    for w in range(workers):
        dispatch(w, 0.0)
    while live_tasks and events:
        now, _, kind, w, payload = heapq.heappop(events)
        if kind == "done":
            index, inc = divmod(payload, 1024)
            if w not in alive or inc != incarnation[w] % 1024 or not runs[w] or runs[w][0][0] != index:
                continue  # a lost worker's task: recovered already
            _, start, end = runs[w].pop(0)
            busy[w] += end - start
            task = live_tasks.pop(index)
            sched.on_task_done(w, task, end - start)
            if w in retiring and not runs[w]:
                leave(w, now, killed=False)
            else:
                dispatch(w, now)
            continue
        if kind in KINDS:  # the next event of this process
            push(now + rng.expovariate(getattr(churn, kind) / 3600.0), kind)
        if kind == "joins":
            counts["joins"] += 1
            free = [s for s in range(slots) if s not in alive and s not in retiring]
            joining = {p for _, _, k, p, _ in events if k == "ready"}
            free = [s for s in free if s not in joining]
            if free:
                push(now + churn.load_s, "ready", free[0])
        elif kind == "ready":  # paid from the join: the node's start and the model's load
            alive[w], free_at[w] = now - churn.load_s, now
            dispatch(w, now)
        elif kind == "losses" and (w := victim()) is not None:
            counts["losses"] += 1
            leave(w, now, killed=True)
        elif kind == "preemptions" and (w := victim()) is not None:
            counts["preemptions"] += 1
            retiring.add(w)
            if runs[w]:
                push(now + churn.notice_s, "deadline", w, incarnation[w])
            else:
                leave(w, now, killed=False)
        elif kind == "deadline" and w in retiring and payload == incarnation[w]:
            counts["killed_at_deadline"] += 1
            leave(w, now, killed=True)
    for w in list(alive):
        paid["worker_s"] += now - alive.pop(w)
    t1 = sum(workload.task_seconds(t.padded_tokens) for t in tasks)
    ran = [b for b in busy if b > 0]
    mean_busy = sum(ran) / len(ran) if ran else 0.0
    speedup = t1 / now if now > 0 else 0.0
    return {"workers": workers, "policy": policy, "tasks": len(tasks), "records": sum(t.batch_size for t in tasks),
            "t_n_s": now, "t1_s": t1, "speedup": speedup,
            "efficiency": t1 / paid["worker_s"] if paid["worker_s"] > 0 else 0.0,
            "imbalance": max(ran) / mean_busy if mean_busy > 0 else 1.0, "worker_s": paid["worker_s"],
            "redone_s": paid["redone_s"], **counts, "done": not live_tasks}


def churn_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of churn rows."""
    lines = ["| workers | policy | T_N (s) | speedup | efficiency | redone s | joins | losses | preemptions "
             "(cut off) |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['policy']} | {r['t_n_s']:.1f} | {r['speedup']:.2f} | {r['efficiency']:.3f} | "
              f"{r['redone_s']:.1f} | {r['joins']} | {r['losses']} | {r['preemptions']} ({r['killed_at_deadline']})"
              f"{'' if r['done'] else ' not finished'} |" for r in rows]
    return "\n".join(lines)


__all__ = ["Churn", "churn_table", "simulate_churn"]
