"""The run report: where the time went, with the timing model of docs/timing.md.

``TimingReport`` collects T_c (task creation), T_s (scheduling and dispatch), T_e (execution
inside workers) and T_w (worker-seconds idle in the parallel phase) and derives T_N (makespan of
the parallel phase: the MAX over workers), T_1 = T_e, speedup S = T_1 / T_N, efficiency
E = S / N, imbalance and the Karp-Flatt serial fraction e = (1/S - 1/N) / (1 - 1/N) (Karp &
Flatt, CACM 33(5), 1990). The rest loads, writes and prints reports. Definitions:
docs/timing.md, "Where the time went" and "Derived figures".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parainfer.io.safe_files import atomic_write


# One row of ``timeline`` per finished task (a shard in sharded mode): its index, the worker, start and
# end (seconds since the first dispatch), records in it, real and padded tokens, ``attempt`` (times it
# was given out before: > 0 for a retry after a worker death) and the records in it that failed.
TIMELINE_COLUMNS = ["task", "worker", "start_s", "end_s", "records", "tokens", "padded_tokens", "attempt",
                    "failed_records"]


@dataclass
class WorkerStats:
    """Per-worker totals (seconds are compute time inside the worker)."""

    busy_s: float = 0.0
    tasks: int = 0
    records: int = 0
    load_s: float = 0.0
    restarts: int = 0


@dataclass
class TimingReport:
    """Counters and timings collected by the driver; ``to_dict`` derives the report."""

    workers: int
    policy: str = "dynamic"
    records: int = 0
    failed_records: int = 0
    truncated_records: int = 0
    tasks: int = 0
    retries: int = 0
    wall_s: float = 0.0
    t_startup_s: float = 0.0
    t_parallel_s: float = 0.0
    t_create_s: float = 0.0
    t_schedule_s: float = 0.0
    t_write_s: float = 0.0
    real_tokens: int = 0
    padded_tokens: int = 0
    per_worker: list[WorkerStats] = field(default_factory=list)
    timeline: list[list[Any]] = field(default_factory=list)
    batch_sizes: list[list[Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.per_worker:
            self.per_worker = [WorkerStats() for _ in range(self.workers)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (see docs/timing.md for each field)."""
        busy = [w.busy_s for w in self.per_worker]
        t_execute = sum(busy)
        t_n = self.t_parallel_s
        mean_busy = t_execute / len(busy) if busy else 0.0
        speedup = t_execute / t_n if t_n > 0 else 0.0
        n = self.workers
        karp_flatt = ((1 / speedup - 1 / n) / (1 - 1 / n)) if (n > 1 and speedup > 0) else None
        return {
            "records": self.records,
            "failed_records": self.failed_records,
            "truncated_records": self.truncated_records,
            "tasks": self.tasks,
            "retries": self.retries,
            "restarts": sum(w.restarts for w in self.per_worker),
            "workers": n,
            "policy": self.policy,
            "wall_s": self.wall_s,
            "t_startup_s": self.t_startup_s,
            "t_parallel_s": t_n,
            "t_create_s": self.t_create_s,
            "t_schedule_s": self.t_schedule_s,
            "t_execute_s": t_execute,
            "t_wait_s": max(0.0, n * t_n - t_execute),
            "t_write_s": self.t_write_s,
            "t1_estimate_s": t_execute,
            "throughput_records_per_s": self.records / self.wall_s if self.wall_s > 0 else 0.0,
            "parallel_throughput_records_per_s": self.records / t_n if t_n > 0 else 0.0,
            "speedup": speedup,
            "efficiency": speedup / n if n else 0.0,
            "imbalance": max(busy) / mean_busy if mean_busy > 0 else 1.0,
            "serial_fraction_karp_flatt": karp_flatt,
            "padding_efficiency": self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0,
            "real_tokens": self.real_tokens,
            "padded_tokens": self.padded_tokens,
            "per_worker": [vars(w) | {"worker": i} for i, w in enumerate(self.per_worker)],
            "batch_sizes": self.batch_sizes,
            "timeline_columns": TIMELINE_COLUMNS,
            "timeline": self.timeline,
            **self.extra,
        }


REBATCHED_IDS_SHOWN = 20  # ids of records computed outside their planned batch the report lists


@dataclass
class Determinism:
    """Whether a run's output bytes are those of the clean plan (docs/batch.md, "Same bytes
    whatever runs the job"): batches are a function of the input and the options, so they are,
    unless something below happened. ``rebatched``: records computed in another batch than the
    plan's (a batch bisected to isolate a record that killed its worker), key (seq, or line in
    sharded mode) -> id; ``reasons``: other causes, one line each (a resume forced past
    different library versions, workers that resolved different dtypes). A resume carries the
    run before's (``from_dict``)."""

    reasons: list[str] = field(default_factory=list)
    rebatched: dict[int, Any] = field(default_factory=dict)

    def note(self, reason: str) -> None:
        """Add ``reason`` (once)."""
        if reason not in self.reasons:
            self.reasons.append(reason)

    def rebatch(self, key: int, record_id: Any) -> None:
        """Record ``key`` (id ``record_id``) was computed in another batch than planned."""
        self.rebatched[key] = record_id

    @property
    def deterministic(self) -> bool:
        return not self.reasons and not self.rebatched

    def to_dict(self) -> dict[str, Any]:
        """{"deterministic", "why": [lines], "rebatched_records", "rebatched_ids": the first
        ``REBATCHED_IDS_SHOWN`` by key}."""
        why = list(self.reasons)
        if self.rebatched:
            why.insert(0, f"{len(self.rebatched)} record(s) computed in another batch than planned: a batch was "
                          "bisected to isolate a record that killed its worker")
        keys = sorted(self.rebatched)[:REBATCHED_IDS_SHOWN]
        return {"deterministic": self.deterministic, "why": why, "rebatched_records": len(self.rebatched),
                "rebatched_ids": [self.rebatched[k] for k in keys]}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Determinism:
        """The state a checkpoint kept (None: a clean start). Listed ids only: the count stays."""
        out = cls()
        if data:
            out.reasons = [r for r in data.get("why", []) if "computed in another batch" not in r]
            ids = data.get("rebatched_ids") or []
            n = int(data.get("rebatched_records") or 0)
            out.rebatched = {-(i + 1): (ids[i] if i < len(ids) else None) for i in range(n)}
        return out

    def fill(self, report: "TimingReport") -> None:
        """Put ``deterministic`` and ``determinism`` in the report's extra fields."""
        report.extra["deterministic"] = self.deterministic
        report.extra["determinism"] = self.to_dict()


def startup_parts(t0: float, t_spawn: float, ready: list[dict[str, float]], first_dispatch: float) -> dict[str, float]:
    """Split ``t_startup_s`` into its parts (seconds; the worker parts are the slowest worker's):

    ``driver_setup_s`` (command start to spawning workers: input checks, model settings,
    checkpoint), ``worker_process_s`` (spawn to the worker's own code running: a fresh
    interpreter and unpickling the predictor), the predictor's load phases (``imports_s``,
    ``tokenizer_s``, ``weights_s``, ``dtype_check_s``, and ``load_other_s``: the rest of the
    load, mostly module imports the predictor did before its timed phases), and ``first_ready_s`` /
    ``all_ready_s`` (t0 to the first and the last worker ready). Phases a worker did not
    report are left out."""
    out = {"driver_setup_s": t_spawn - t0}
    starts = [p["started_at"] - t_spawn for p in ready if "started_at" in p]
    if starts:
        out["worker_process_s"] = max(starts)
    for name in ("imports_s", "tokenizer_s", "weights_s", "dtype_check_s", "invariance_probe_s", "load_other_s"):
        values = [p[name] for p in ready if name in p]
        if values:
            out[name] = max(values)
    if ready:
        out["first_ready_s"] = min(p["ready_at"] for p in ready) - t0
        out["all_ready_s"] = max(p["ready_at"] for p in ready) - t0
    out["first_dispatch_s"] = first_dispatch - t0
    return {k: round(v, 4) for k, v in out.items()}


def startup_so_far(t0: float, t_spawn: float, ready: list[dict[str, float]], t_first: float | None) -> dict[str, float]:
    """``startup_parts`` while the job starts (the live dashboard): without a first dispatch
    yet, the parts so far and no ``first_dispatch_s``. Seconds."""
    if t_first is not None:
        return startup_parts(t0, t_spawn, ready, t_first)
    return {k: v for k, v in startup_parts(t0, t_spawn, ready, time.perf_counter()).items() if k != "first_dispatch_s"}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human summary of a report dict (printed on stderr at the end of a job)."""
    lines = [
        f"{report['records']:,} records ({report['failed_records']:,} failed, "
        f"{report['truncated_records']:,} truncated) in {report['tasks']:,} tasks on "
        f"{report['workers']} workers [{report['policy']}]",
        f"wall {report['wall_s']:.2f} s (startup {report['t_startup_s']:.2f} s, parallel "
        f"{report['t_parallel_s']:.2f} s): {report['throughput_records_per_s']:,.1f} records/s overall, "
        f"{report['parallel_throughput_records_per_s']:,.1f} records/s in the parallel phase",
        f"T_c {report['t_create_s']:.2f} s  T_s {report['t_schedule_s']:.2f} s  "
        f"T_e {report['t_execute_s']:.2f} s  T_w {report['t_wait_s']:.2f} s  "
        f"speedup {report['speedup']:.2f}  efficiency {report['efficiency']:.2f}  "
        f"imbalance {report['imbalance']:.2f}  padding efficiency {report['padding_efficiency']:.2f}",
    ]
    parts = report.get("startup") or {}
    if len(parts) > 2:
        lines.append("startup: " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in parts.items()) + " (s)")
    if report.get("data_path") == "sharded":
        shards = report.get("shards") or {}
        book = report.get("driver_bookkeeping_us_per_record")
        lines.append(f"data path: sharded ({shards.get('committed', 0)} shards committed, workers read the input"
                     + (f"; shard bookkeeping {book:.3f} us/record)" if book is not None else ")"))
    elif report.get("data_path"):
        lines.append("data path: records (the driver reads, batches and writes every record)")
    if report.get("driver_us_per_record") is not None:
        lines.append(f"driver {report['driver_busy_s']:.2f} s busy, {report['driver_us_per_record']:.1f} us/record")
    if report.get("restarts") or report.get("retries"):
        lines.append(f"worker restarts {report['restarts']}, task retries {report['retries']}")
    executor = report.get("executor") or {}
    if executor.get("name") == "ray":
        nodes = ", ".join(f"{n['node']}: {n['workers']}" for n in executor.get("nodes", []))
        lines.append(f"executor ray at {executor.get('address')}: {len(executor.get('nodes', []))} nodes "
                     f"(workers per node {nodes})")
    if "deterministic" in report:
        why = (report.get("determinism") or {}).get("why") or []
        lines.append("deterministic: " + ("true" if report["deterministic"] else "false (" + "; ".join(why) + ")"))
    model = report.get("model") or {}
    if model.get("dtype"):
        engine = f", engine {model['engine']}" if model.get("engine") else ""  # --task generate: --engine
        lines.append(f"model: {model.get('task', '?')} by {model.get('class', '?')}, {model['dtype']} "
                     f"on {model.get('device', 'cpu')}{engine}")
    numerics = report.get("batch_invariance")
    if numerics:  # a text's output bits independent of its batch-mates (docs/serving.md)
        lines.append(f"batch invariance: deterministic {str(numerics['deterministic']).lower()}, mode "
                     f"{numerics['mode']}: {numerics['reason']}")
    if report.get("backend"):
        from parainfer.models.backend import summary

        lines.append(summary(report["backend"]))
    return lines


REQUIRED_KEYS = ("records", "failed_records", "truncated_records", "tasks", "workers", "policy", "wall_s",
                 "t_startup_s", "t_parallel_s", "throughput_records_per_s", "parallel_throughput_records_per_s",
                 "t_create_s", "t_schedule_s", "t_execute_s", "t_wait_s", "speedup", "efficiency", "imbalance",
                 "padding_efficiency", "timeline")  # what summary_lines, plots and simulate read


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report written by ``parainfer run --report``.

    Raises:
        UsageError: the file is missing, not JSON, or not a parainfer run report (the message
            names the first missing key).
    """
    from parainfer.errors import UsageError

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"report {str(p)!r} not found; write one with `parainfer run ... --report FILE`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"report {str(p)!r} is not JSON ({e}); expected a file written by "
                         "`parainfer run ... --report FILE`") from None
    if missing := _missing_key(data):
        raise UsageError(f"{str(p)!r} is not a parainfer run report (no {missing!r} "
                         "key); expected a file written by `parainfer run ... --report FILE`")
    return data


def _missing_key(data: Any) -> str | None:
    """The first key a run report must have that ``data`` lacks (None: it is a run report)."""
    missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or k not in data]
    if missing or not isinstance(data.get("timeline"), list):
        return (missing or ["timeline"])[0]
    return None


def is_run_report(path: str) -> bool:
    """True when the regular file ``path`` is a run report (JSON with the keys ``load_report``
    needs): one parainfer wrote, which a later ``--report`` may replace. False for anything else
    (not JSON, not UTF-8, another program's JSON, unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            return _missing_key(json.load(f)) is None
    except (OSError, ValueError):
        return False


def close_run(report: "TimingReport", *, t0: float, t_spawn: float, ready_phases: list[dict[str, float]],
              t_first: float | None, t_last: float | None, counts: Any, busy: float, predictor: Any,
              executor: Any, resumed: int, resumed_failed: int, checkpoint: str) -> None:
    """Fill what every data path's report says at the end of a job (record mode and sharded
    mode alike): wall time, start-up and its parts, the parallel phase (first dispatch to last
    result, seconds), the workers' exact token counts (``counts``: a ``TokenCounts``), the
    driver's cost per record (``busy``: driver CPU seconds), the model, executor and resume
    figures. ``t0``: ``perf_counter`` when the job began."""
    report.wall_s = time.perf_counter() - t0
    start = t_first or t0
    report.t_startup_s = start - t0
    report.extra["startup"] = startup_parts(t0, t_spawn, ready_phases, start)
    report.t_parallel_s = max(0.0, (t_last or start) - start)
    report.truncated_records = counts.truncated
    report.real_tokens, report.padded_tokens = counts.real, counts.padded
    report.extra["driver_us_per_record"] = round(busy / report.records * 1e6, 3) if report.records else None
    report.extra.setdefault("model", predictor.describe())
    if getattr(predictor, "backend_choice", None):  # models.backend.decide: the path, how, the measured ones
        report.extra["backend"] = predictor.backend_choice
    report.extra["threads_per_worker"] = executor.threads
    report.extra["executor"] = executor.describe()
    report.extra.update(resumed_records=resumed, resumed_failed_records=resumed_failed, checkpoint=checkpoint)


def already_complete(report: "TimingReport", t0: float, path: str | None, **resumed: Any) -> dict[str, Any]:
    """The report of a rerun whose output is already complete and verified (record or sharded
    mode): the wall time since ``t0`` (``perf_counter``), ``already_complete``, and ``resumed``
    (resumed_records, resumed_failed_records, checkpoint, errors_file, ...) in ``extra``.
    Written to ``path`` when given; returns it as a dict."""
    report.wall_s = time.perf_counter() - t0
    report.extra.update(already_complete=True, **resumed)
    out = report.to_dict()
    if path:
        write_report(out, path)
    return out


def write_report(report: dict[str, Any], path: str | Path) -> None:
    """Write the report as indented JSON, atomically: a temp file of a new name in the same
    folder, then renamed over ``path`` (``io.safe_files.atomic_write``), so a link at ``path``
    is replaced, never written through."""
    with atomic_write(str(path), text=True) as f:
        f.write(json.dumps(report, indent=1) + "\n")


def print_summary(report: dict[str, Any], stream: Any) -> None:
    """Write the short summary to ``stream`` (stderr)."""
    for line in summary_lines(report):
        print(line, file=stream)
