"""Progress on stderr (records done, records/s, ETA; rich, only on a terminal) and the live
dashboard of a job (``JobMonitor``, ``--dashboard``)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """A progress bar over records. A no-op when disabled or stderr is not a terminal.

    Args:
        total: records expected (None when unknown, e.g. stdin).
        enabled: False for ``--quiet``.
    """

    def __init__(self, total: int | None, enabled: bool = True):
        self._bar: Any = None
        self._task: Any = None
        if not (enabled and sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TaskProgressColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        self._bar = RichProgress(
            TextColumn("[bold]parainfer"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]} records/s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=Console(stderr=True), transient=False,
        )
        self._task = self._bar.add_task("records", total=total, rate="-")
        self._bar.start()

    def update(self, done: int, rate: float) -> None:
        """Set records done and the current records/s."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rate=f"{rate:,.0f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class JobMonitor:
    """A batch job's live dashboard (``--dashboard [HOST:]PORT``): the ``dashboard.Source`` of
    one job, served by a ``dashboard.DashboardServer`` thread while the job runs.

    It keeps no bookkeeping of its own: the driver registers itself (``watch``) and each payload
    reads the driver's own counters (``live(cursor)``: the run report's per-worker totals and
    timeline, the merger, the policy's queue, the tuner, the errors file) from the server's
    thread, at most every ``dashboard.EVENT_INTERVAL_S`` per open page; the driver's loop does
    nothing more than without a dashboard. ``finish(report)`` shows the run report's final
    totals (the same numbers as the report file) and ends the pages' streams.

    Args:
        address: ``[HOST:]PORT`` (``dashboard.parse_address``; loopback by default).
        key: the bearer token the API routes need (``PARAINFER_API_KEY``), or None.

    Raises:
        UsageError: a bad address, or one that cannot be bound.
    """

    def __init__(self, address: str, key: str | None = None):
        import threading

        from parainfer.dashboard import DashboardServer, parse_address, warn_open

        self.t0 = time.perf_counter()
        self.finished = False
        self.driver: Any = None
        self.phase = "setting up the job"
        self._final: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._last: tuple[float, int, int] | None = None  # (t, done, tokens) of the last rate sample
        self._rates = (0.0, 0.0)
        self._errors_cache: tuple[int, list[list[Any]]] = (-1, [])
        host, port = parse_address(address)
        warn_open(host, key)
        self.server = DashboardServer(self, host, port, key, extra={"errors": self._error_rows})

    @property
    def url(self) -> str:
        return self.server.url

    def watch(self, driver: Any) -> None:
        """Show ``driver`` (a record-mode or sharded-mode driver with ``live(cursor)``)."""
        self.driver = driver

    def finish(self, report: dict[str, Any] | None, phase: str = "finished") -> None:
        """The job ended (``report``: the run report dict, None when it did not finish): the
        pages show the final totals, then their streams end; the server stops (``close``)."""
        self._final, self.phase = report, phase
        self.finished = True
        self.server.close()

    def payload(self, cursor: int) -> tuple[dict[str, Any], int]:
        """The dashboard payload now (format: ``parainfer.dashboard``) and the next Gantt cursor."""
        t = time.perf_counter() - self.t0
        base = {"kind": "job", "title": "parainfer run", "t": round(t, 3), "finished": self.finished}
        live = None
        if self.driver is not None:
            for _ in range(3):  # the driver's dicts may change size while read: read again
                try:
                    live = self.driver.live(cursor)
                    break
                except RuntimeError:
                    continue
        if live is None:
            return {**base, "phase": self.phase, "cards": [], "charts": []}, cursor
        final = self._final
        done, failed = live["done"], live["failed"]
        if final is not None:  # the run report's own totals
            done, failed = final["records"], final["failed_records"]
        rec_rate, tok_rate = self._rate(t, done, live["tokens"])
        total = live["total"]
        elapsed = live["elapsed_s"]
        mean_rate = done / elapsed if elapsed > 0 else 0.0  # the report's parallel_throughput_records_per_s
        if final is not None:
            mean_rate = final["parallel_throughput_records_per_s"]
        eta = (total - done - live["resumed"]) / mean_rate if total is not None and mean_rate > 0 else None
        phase = self.phase if self.finished else live["phase"]
        cards = [
            _card("done", "records done (written in order)", done, f"{done:,}"),
            _card("computed", "records computed", sum(w[1] for w in live["per_worker"]),
                  f"{sum(w[1] for w in live['per_worker']):,}"),
            _card("total", "records in the input", total, "?" if total is None else f"{total - live['resumed']:,}"),
            _card("progress", "progress", None if not total else round(100 * (done + live["resumed"]) / total, 2),
                  "-" if not total else f"{100 * (done + live['resumed']) / total:.1f} %"),
            _card("failed", "failed (quarantined)", failed, f"{failed:,}"),
            _card("eta", "ETA", eta, "-" if eta is None or self.finished else f"{eta:,.0f} s"),
            _card("records_per_s", "records/s (parallel phase)", round(mean_rate, 2), f"{mean_rate:,.1f}"),
            _card("tokens_per_s", "tokens/s (now)", round(tok_rate, 1), f"{tok_rate:,.0f}"),
            _card("queue", "tasks queued", live["queue"], f"{live['queue']:,}"),
            _card("in_flight", "tasks in flight", sum(live["in_flight"]), f"{sum(live['in_flight']):,}"),
            _card("backlog", "merge backlog (records)", live["backlog"], f"{live['backlog']:,}"),
            _card("restarts", "worker restarts", live["restarts"], f"{live['restarts']:,}"),
            _card("retries", "task retries", live["retries"], f"{live['retries']:,}"),
        ]
        if final is not None:
            cards.append(_card("wall_s", "wall time (s)", round(final["wall_s"], 3), f"{final['wall_s']:.2f}"))
        workers = [[f"w{w}", live["nodes"][w] if w < len(live["nodes"]) else None, "ready" if w in live["ready"]
                    else "loading", live["in_flight"][w] if w < len(live["in_flight"]) else 0, *stats]
                   for w, stats in enumerate(live["per_worker"])]
        tables = [
            {"id": "workers", "title": "workers", "rows": workers,
             "columns": ["worker", "node", "state", "in flight", "tasks", "records", "busy s", "load s", "restarts"]},
            {"id": "startup", "title": "start-up phases (s)", "columns": ["phase", "seconds"],
             "rows": [[k, v] for k, v in live["startup"].items()]},
            {"id": "tuner", "title": "batch size and cost model", "columns": ["what", "value"],
             "rows": live["model_state"]},
            {"id": "errors", "title": f"quarantined records ({live['errors']:,}; {live['errors_path'] or 'no errors file'})",
             "columns": ["row", "input line", "id", "reason"], "rows": self._recent_errors(live)},
        ]
        sizes = live["batch_sizes"]
        rows = [[_lane(r[1], live["nodes"]), r[2], r[3], f"{live['unit']} {r[0]}: {r[4]} records"]
                for r in live["timeline"]]
        payload = {**base, "phase": phase, "cards": cards,
                   "charts": [{"id": "rates", "title": "records/s", "series": {"records/s": round(rec_rate, 2)}},
                              {"id": "tokens", "title": "tokens/s", "series": {"tokens/s": round(tok_rate, 1)}},
                              {"id": "queues", "title": "queue depth and merge backlog",
                               "series": {"tasks queued": live["queue"], "in flight": sum(live["in_flight"]),
                                          "backlog / 100 records": live["backlog"] / 100}}],
                   "gantt": {"title": f"{live['unit']}s per worker", "rows": rows},
                   "bars": [{"id": "batch_sizes", "title": "batch size (records per batch)", "step": True,
                             "xtitle": "s since first dispatch", "x": [*(h[0] for h in sizes), round(elapsed, 3)],
                             "y": [*(h[1] for h in sizes), sizes[-1][1] if sizes else None]}],
                   "tables": tables}
        return payload, live["timeline_next"]

    def _rate(self, t: float, done: int, tokens: int) -> tuple[float, float]:
        """Records/s and tokens/s since the last sample at least 1 s old (shared by all pages)."""
        with self._lock:
            last = self._last
            if last is None:
                self._last = (t, done, tokens)
            elif t - last[0] >= 1.0:
                self._rates = ((done - last[1]) / (t - last[0]), (tokens - last[2]) / (t - last[0]))
                self._last = (t, done, tokens)
            return self._rates

    def _recent_errors(self, live: dict[str, Any]) -> list[list[Any]]:
        """The last 20 rows of the errors file (what is flushed so far), each linked to its row."""
        count, path = live["errors"], live["errors_path"]
        if not path or not count:
            return []
        if self._errors_cache[0] != count:
            rows = _read_errors(path)
            shown = [[{"text": str(i + 1), "href": f"/dashboard/api/errors?row={i + 1}"}, r.get("line"), r.get("id"),
                      r.get("reason")] for i, r in list(enumerate(rows))[-20:]]
            # kept until the count changes only once every error is on disk (the file is flushed
            # at each checkpoint commit and at the end); else read again next time
            self._errors_cache = (count if len(rows) >= count else -1, shown)
        return self._errors_cache[1]

    def _error_rows(self, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        """``/dashboard/api/errors[?row=N]``: row N (1-based) of the errors file, or every row."""
        import json

        live = self.driver.live(0) if self.driver is not None else {}
        path = live.get("errors_path")
        rows = _read_errors(path) if path else []
        row = (query.get("row") or [None])[0]
        if row is None:
            return 200, "application/json", json.dumps({"path": path, "rows": rows}).encode()
        if not row.isdigit() or not 1 <= int(row) <= len(rows):
            return 404, "application/json", json.dumps(
                {"error": f"row {row!r} is not in the errors file (rows 1-{len(rows)} so far)"}).encode()
        return 200, "application/json", json.dumps({"path": path, "row": int(row), **rows[int(row) - 1]}).encode()


def _card(id: str, label: str, value: Any, text: str) -> dict[str, Any]:
    return {"id": id, "label": label, "value": value, "text": text}


def _lane(worker: int, nodes: list[Any]) -> str:
    node = nodes[worker] if worker < len(nodes) else None
    return f"w{worker}" + (f" @ {node}" if node and len(set(nodes)) > 1 else "")


def _read_errors(path: str) -> list[dict[str, Any]]:
    """The rows of an errors file flushed so far (a torn last line is left out)."""
    import json

    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    break
    except OSError:
        pass
    return rows


def open_monitor(address: str | None) -> JobMonitor | None:
    """The job's ``JobMonitor`` on ``address`` (``--dashboard``), None without one; its key is
    ``PARAINFER_API_KEY`` when set. The URL goes to stderr."""
    if not address:
        return None
    import os

    monitor = JobMonitor(address, os.environ.get("PARAINFER_API_KEY") or None)
    print(f"dashboard: {monitor.url}", file=sys.stderr, flush=True)
    return monitor
