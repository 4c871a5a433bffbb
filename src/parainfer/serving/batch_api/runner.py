"""Runs batches on the server's own replicas, one batch at a time, behind online requests.

``BatchRunner`` starts a batch's request lines only on capacity online traffic leaves idle
(``OnlineLoad``, counted by the ``OnlineGate`` middleware; ``QUIET_S``), sends each line through
the app itself (an in-process ASGI call in the "batch" lane: ``http.middleware.in_lane``, a mark
in the ASGI scope that no HTTP client can set), writes the results in
input order and commits them every ``commit_every_s``, so a killed server resumes each batch
with every result written exactly once. Priority and restart: docs/batch.md, "The same file
through `parainfer serve` and the `openai` client" ("Priority", "Restart").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson

from parainfer.openai.batch_file import result_line
from parainfer.serving.batch_api.batches import ACTIVE, BatchStore, Plan, plan_line
from parainfer.serving.batch_api.files import FileStore
from parainfer.serving.http.middleware import ASGIApp, Receive, Scope, Send, lane_of
from parainfer.openai.errors import error_body

log = logging.getLogger(__name__)
ONLINE_PATHS = ("/v1/embeddings", "/v1/classify", "/v1/completions", "/v1/chat/completions")
Call = Callable[[str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
RETRIES, RETRY_STATUS = 240, (429, 503, 504)
QUIET_S = 1.0  # seconds without online requests before a batch runs at full concurrency


class OnlineLoad:
    """Online inference requests in flight (batch lines not counted), and when one last ran."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_active = float("-inf")  # time.monotonic() of the last online start or end

    @property
    def idle(self) -> bool:
        return self.in_flight == 0

    def quiet_for(self, seconds: float) -> bool:
        """No online request in flight, nor started or ended in the last ``seconds``."""
        return self.idle and time.monotonic() - self.last_active >= seconds


class OnlineGate:
    """ASGI middleware: counts online requests to ONLINE_PATHS in ``load`` while they run: every
    request but the server's own in-process ones (``lane_of``), whatever headers it sends."""

    def __init__(self, app: ASGIApp, load: OnlineLoad):
        self.app, self.load = app, load

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        online = scope["type"] == "http" and scope["path"] in ONLINE_PATHS and lane_of(scope) == "online"
        if not online:
            return await self.app(scope, receive, send)
        self.load.in_flight += 1
        self.load.last_active = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.load.in_flight -= 1
            self.load.last_active = time.monotonic()


class BatchRunner:
    """Works through active batches (see the module doc).

    Args:
        store, files: where batches and files live.
        call: ``await call(url, body) -> (status, JSON body)`` of the app's endpoint.
        load: the online load to yield to.
        concurrency: most batch lines running at once.
        commit_every_s: seconds between commits of the written prefix.
    """

    def __init__(self, store: BatchStore, files: FileStore, call: Call, load: OnlineLoad,
                 concurrency: int = 4, commit_every_s: float = 0.5):
        self.store, self.files, self.call, self.load = store, files, call, load
        self.concurrency, self.commit_every_s = concurrency, commit_every_s
        self.current: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop at once; what was committed stays, the rest runs again after a restart."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Mark ``batch`` cancelling (the running batch's own record when it is that one)."""
        record = self.current if self.current is not None and self.current["id"] == batch["id"] else batch
        record.update(status="cancelling", cancelling_at=int(time.time()))
        self.store.save(record)
        self.wake()
        return record

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            todo = [b for b in self.store.all() if b["status"] in ACTIVE]
            if not todo:
                await self._wake.wait()
                continue
            await self._run(todo[0])

    async def _run(self, batch: dict[str, Any]) -> None:
        self.current = batch
        try:
            if batch["status"] == "validating":
                batch.update(status="in_progress", in_progress_at=int(time.time()))
                self.store.save(batch)
            if batch["status"] in ("in_progress", "cancelling"):
                await self._execute(batch)
            self._finalize(batch)
        except Exception as exc:  # noqa: BLE001 - the batch fails, the server and other batches go on
            log.exception("batch %s failed", batch["id"])
            batch.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": [
                {"code": "batch_failed", "message": f"{type(exc).__name__}: {exc}", "param": None, "line": None}]})
            self.store.save(batch)
        finally:
            self.current = None

    def _plans(self, batch: dict[str, Any]) -> list[Plan]:
        """Every non-blank input line, planned: a call to make, or its answer already."""
        seen: dict[str, int] = {}
        plans = []
        with open(self.files.data_path(batch["input_file_id"]), "rb") as f:
            lines = [(n, raw) for n, raw in enumerate(f, 1) if raw.strip()]
        for n, raw in lines:
            plans.append(plan_line(raw, n, batch["endpoint"], seen))
        return plans

    async def _execute(self, batch: dict[str, Any]) -> None:
        folder, progress, counts = self.store.folder(batch["id"]), batch["progress"], batch["request_counts"]
        plans = self._plans(batch)
        out = _open_at(folder / "output.jsonl", progress["output_bytes"])
        errs = _open_at(folder / "errors.jsonl", progress["error_bytes"])
        running: dict[int, asyncio.Task] = {}
        results: dict[int, tuple[bool, dict[str, Any]]] = {}
        written = launched = progress["next_line"]
        last_commit = time.monotonic()
        try:
            while written < len(plans):
                cancelling = batch["status"] == "cancelling"
                if cancelling and not running:
                    break
                while not cancelling and launched < len(plans) and len(running) < self._room():
                    kind, a, b = plans[launched]
                    if kind == "done":
                        results[launched] = (a, b)
                    else:
                        running[launched] = asyncio.ensure_future(self._answer(a, b, batch["endpoint"]))
                    launched += 1
                if running:
                    await asyncio.wait(running.values(), timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                elif written not in results:
                    await asyncio.sleep(0.02)  # waiting for the online requests to finish
                for i in [i for i, t in running.items() if t.done()]:
                    results[i] = running.pop(i).result()
                while written in results:
                    ok, line = results.pop(written)
                    (out if ok else errs).write(orjson.dumps(line) + b"\n")
                    counts["completed" if ok else "failed"] += 1
                    written += 1
                if time.monotonic() - last_commit >= self.commit_every_s:  # fsyncs off the event loop
                    await asyncio.to_thread(self._commit, batch, written, out, errs)
                    last_commit = time.monotonic()
            await asyncio.to_thread(self._commit, batch, written, out, errs)
        finally:
            for task in running.values():
                task.cancel()
            out.close()
            errs.close()

    def _room(self) -> int:
        """Batch lines that may run now (0 while an online request is in flight)."""
        if not self.load.idle:
            return 0
        return self.concurrency if self.load.quiet_for(QUIET_S) else 1

    def _commit(self, batch: dict[str, Any], written: int, out: Any, errs: Any) -> None:
        for f in (out, errs):
            f.flush()
            os.fsync(f.fileno())
        batch["progress"] = {"next_line": written, "output_bytes": out.tell(), "error_bytes": errs.tell()}
        self.store.save(batch)

    async def _answer(self, custom_id: str, body: dict[str, Any], url: str) -> tuple[bool, dict[str, Any]]:
        """Run one request through the app; 429 (queue full), 503 (loading) and 504 (past the
        online request timeout: a busy server) are retried, up to RETRIES times."""
        for _ in range(RETRIES):
            try:
                status, payload = await self.call(url, body)
            except Exception as exc:  # noqa: BLE001 - this line fails, the batch goes on
                status, payload = 500, error_body(f"{type(exc).__name__}: {exc}", "server_error")
            if status not in RETRY_STATUS:
                break
            await asyncio.sleep(0.5)
        return status == 200, result_line(custom_id, status, payload)

    def _finalize(self, batch: dict[str, Any]) -> None:
        """Publish the output (and error) file; end completed, or cancelled."""
        cancelled = batch["status"] == "cancelling"
        if not cancelled and batch["status"] != "finalizing":
            batch.update(status="finalizing", finalizing_at=int(time.time()))
            self.store.save(batch)
        folder, bid, owner = self.store.folder(batch["id"]), batch["id"], batch["owner"]
        for name, key, purpose in (("output.jsonl", "output_file_id", "batch_output"),
                                   ("errors.jsonl", "error_file_id", "batch_output")):
            path, file_id = folder / name, f"file-{bid.removeprefix('batch_')}-{name.split('.')[0]}"
            size = path.stat().st_size if path.exists() else 0
            if size or (name == "output.jsonl" and path.exists()) or self.files.data_path(file_id).exists():
                batch[key] = self.files.adopt(path, f"{bid}_{name}", purpose, owner, file_id=file_id)["id"]
        now = int(time.time())
        batch.update(status="cancelled", cancelled_at=now) if cancelled else batch.update(status="completed",
                                                                                          completed_at=now)
        self.store.save(batch)


def _open_at(path: Path, size: int) -> Any:
    """Open ``path`` for appending after its first ``size`` bytes (the committed prefix)."""
    f = open(path, "r+b" if path.exists() else "w+b")
    f.truncate(size)
    f.seek(size)
    return f
