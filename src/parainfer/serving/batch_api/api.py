"""The Files and Batches APIs of one server, wired together: stores under the data directory,
the routes, the online-load gate and the batch runner (started and stopped with the app).

The data directory (``--data-dir``; default ``platformdirs.user_data_dir("parainfer")/serve``)
holds ``files/`` and ``batches/``. One server at a time runs a data directory's batches: it
takes a lock file there at start; a second server on the same folder still serves online
requests but answers the Files and Batches routes with 503 naming the folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from parainfer.serving.batch_api.runner import BatchRunner, OnlineLoad
from parainfer.serving.batch_api.batches import BatchStore, batches_routes
from parainfer.serving.config import ServeConfig
from parainfer.serving.http.middleware import in_lane
from parainfer.openai.errors import ApiError
from parainfer.serving.batch_api.files import FileStore, files_routes

log = logging.getLogger(__name__)
SERVED = {"embed": ("/v1/embeddings",), "generate": ("/v1/chat/completions", "/v1/completions"), "classify": ()}


def default_data_dir() -> Path:
    """``platformdirs.user_data_dir("parainfer")/serve``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("parainfer")) / "serve"


class BatchApi:
    """Files + Batches for one app. ``router`` holds the routes; ``load`` is what ``OnlineGate``
    counts; ``start(app)`` / ``stop()`` run in the app's lifespan.

    Args:
        config: the server settings (``data_dir``, ``max_file_mb``, ``max_batch_lines``,
            ``batch_concurrency`` per replica of ``workers``, ``task``).
    """

    def __init__(self, config: ServeConfig):
        self.config = config
        self.root = Path(config.data_dir).expanduser() if config.data_dir else default_data_dir()
        self.files = FileStore(self.root / "files")
        self.batches = BatchStore(self.root / "batches")
        self.load = OnlineLoad()
        self.runner: BatchRunner | None = None
        self._lock: Any = None
        self._client: Any = None
        served = SERVED.get(config.task, ())
        self.router = APIRouter(dependencies=[])
        guarded = APIRouter(dependencies=[_depends(self._check_ready)])
        guarded.include_router(files_routes(self.files, int(config.max_file_mb * (1 << 20))))
        guarded.include_router(batches_routes(self.batches, self.files, served, config.max_batch_lines,
                                              self._wake, self._cancel))
        self.router.include_router(guarded)

    def _check_ready(self, request: Request) -> None:
        if self.runner is None:
            raise ApiError(503, f"the data directory {str(self.root)!r} is in use by another parainfer server; "
                                "start this one with its own --data-dir", code="data_dir_locked")

    def _wake(self) -> None:
        assert self.runner is not None
        self.runner.wake()

    def _cancel(self, batch: dict[str, Any]) -> dict[str, Any]:
        assert self.runner is not None
        return self.runner.cancel(batch)

    async def start(self, app: FastAPI) -> None:
        """Take the data directory's lock and start the runner (which resumes active batches)."""
        import filelock
        import httpx

        lock = filelock.FileLock(str(self.root / "server.lock"))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            log.warning("data directory %s is locked by another server; /v1/files and /v1/batches answer 503",
                        self.root)
            return
        self._lock = lock
        # In-process calls (no socket) in the "batch" lane: not counted as online load, and past
        # API-key auth; a loopback Host passes the loopback guard (serving/http/guards.py).
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=in_lane(app, "batch")),
                                         base_url="http://127.0.0.1", timeout=None)

        async def call(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            resp = await self._client.post(url, json=body)
            return resp.status_code, resp.json()

        # per replica: each replica's batches as large as a one-replica server's (the batcher spreads them)
        concurrency = self.config.batch_concurrency * (self.config.workers or 1)
        self.runner = BatchRunner(self.batches, self.files, call, self.load, concurrency=concurrency)
        self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        if self._client is not None:
            await self._client.aclose()
        if self._lock is not None:
            self._lock.release()


def _depends(fn: Any) -> Any:
    from fastapi import Depends

    return Depends(fn)
