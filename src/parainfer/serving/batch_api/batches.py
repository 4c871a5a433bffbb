"""OpenAI's Batches API on ``parainfer serve``: batch objects, their state on disk, the routes.

Routes: ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window`` "24h",
``metadata``), ``GET /v1/batches/{id}``, ``GET /v1/batches`` (``limit``, ``after``),
``POST /v1/batches/{id}/cancel``. Objects have OpenAI's shape and lifecycle: validating ->
in_progress -> finalizing -> completed | failed, or cancelling -> cancelled; the work itself
is ``batch_runner.BatchRunner``'s. Each batch lives in ``<data dir>/batches/<id>/``:
``batch.json`` (the object, its owner and its committed progress, written atomically),
``output.jsonl`` and ``errors.jsonl`` (results in input order, up to the committed bytes).
``plan_line`` decides, per input line, whether to call the endpoint or answer it at once.
Only ids this server issues (``BATCH_ID``) reach the disk: any other id is 404 (400 as
``after``). ``metadata``: at most ``MAX_METADATA_KEYS`` pairs, keys of at most 64 characters and
values of at most 512, as OpenAI's (400 naming the limit).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from parainfer.openai.batch_file import ENDPOINTS, malformed_reason, result_line
from parainfer.openai.errors import ApiError, error_body, error_type
from parainfer.serving.batch_api.files import (
    FileStore,
    owner_of,
    shown_id,
    write_json_atomic,
)
from parainfer.serving.http.json_body import OrjsonRoute

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
WINDOWS = ("24h",)
_PRIVATE = ("owner", "progress")
BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")
MAX_METADATA_KEYS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512
Plan = tuple[str, Any, Any]  # ("call", custom_id, body) or ("done", ok, result line)


class BatchCreate(BaseModel):
    """POST /v1/batches."""

    model_config = ConfigDict(extra="ignore")

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(default=None, description="up to 16 key-value pairs, kept as given")


class BatchStore:
    """Batch objects on disk (see the module doc). ``root`` is created when missing."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, batch_id: str) -> Path:
        return self.root / batch_id

    def save(self, batch: dict[str, Any]) -> None:
        """Write the whole record (object, owner, progress) atomically."""
        self.folder(batch["id"]).mkdir(exist_ok=True)
        write_json_atomic(self.folder(batch["id"]) / "batch.json", batch)

    def load(self, batch_id: str) -> dict[str, Any] | None:
        """The record of ``batch_id``; None when there is none or the id is not one this server
        issues (``BATCH_ID``, checked before the disk)."""
        if not BATCH_ID.fullmatch(batch_id):
            return None
        path = self.folder(batch_id) / "batch.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def get(self, batch_id: str, owner: str) -> dict[str, Any]:
        """The full record. Raises ApiError 404 for an unknown or malformed id, or another key's batch."""
        batch = self.load(batch_id)
        if batch is None or batch["owner"] != owner:
            hint = "" if BATCH_ID.fullmatch(batch_id) else ": batch ids look like 'batch_' and 24 hex digits"
            raise ApiError(404, f"no batch with id {shown_id(batch_id)}{hint}", param="batch_id",
                           code="batch_not_found")
        return batch

    def all(self) -> list[dict[str, Any]]:
        """Every record, oldest first."""
        batches = [json.loads(p.read_text()) for p in self.root.glob("*/batch.json")]
        return sorted(batches, key=lambda b: (b["created_at"], b["id"]))


def public(batch: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI batch object (no owner or progress bookkeeping)."""
    return {k: v for k, v in batch.items() if k not in _PRIVATE}


def new_batch(body: BatchCreate, owner: str, total: int) -> dict[str, Any]:
    """A fresh record in status "validating"."""
    now = int(time.time())
    return {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": body.endpoint, "errors": None,
            "input_file_id": body.input_file_id, "completion_window": body.completion_window,
            "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
            "in_progress_at": None, "expires_at": now + 24 * 3600, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": total, "completed": 0, "failed": 0}, "metadata": body.metadata,
            "owner": owner, "progress": {"next_line": 0, "output_bytes": 0, "error_bytes": 0}}


def batches_routes(store: BatchStore, files: FileStore, served_endpoints: tuple[str, ...], max_lines: int,
                   wake: Callable[[], None], cancel_batch: Callable[[dict[str, Any]], dict[str, Any]]) -> APIRouter:
    """The four Batches routes. ``served_endpoints``: the endpoints this server's task answers;
    ``wake``: tells the runner there is a new batch; ``cancel_batch``: the runner's cancel
    (it owns the record of the batch it is running)."""
    router = APIRouter(tags=["batches"], route_class=OrjsonRoute)  # bodies parsed as on every JSON route

    @router.post("/v1/batches")
    async def create(body: BatchCreate, request: Request) -> Any:
        """Make a batch of the requests in an uploaded file; it runs on idle capacity."""
        if body.endpoint not in ENDPOINTS:
            raise ApiError(400, f"endpoint {body.endpoint!r} is not supported; accepted: {', '.join(ENDPOINTS)}",
                           param="endpoint", code="invalid_endpoint")
        if body.endpoint not in served_endpoints:
            raise ApiError(400, f"endpoint {body.endpoint} is not served by this server (it answers "
                                f"{', '.join(served_endpoints)})", param="endpoint", code="invalid_endpoint")
        if body.completion_window not in WINDOWS:
            raise ApiError(400, f"completion_window {body.completion_window!r} is not supported; accepted: 24h",
                           param="completion_window", code="invalid_completion_window")
        check_metadata(body.metadata)
        owner = owner_of(request)
        try:
            meta = files.get(body.input_file_id, owner)
        except ApiError:
            raise ApiError(400, f"no file with id {shown_id(body.input_file_id)}; upload it with POST /v1/files",
                           param="input_file_id", code="file_not_found") from None
        if meta["purpose"] != "batch":
            raise ApiError(400, f"file {body.input_file_id} has purpose {meta['purpose']!r}; a batch input needs "
                                "purpose 'batch'", param="input_file_id", code="invalid_file_purpose")
        with open(files.data_path(body.input_file_id), "rb") as f:
            total = sum(1 for line in f if line.strip())
        if total > max_lines:
            raise ApiError(400, f"file {body.input_file_id} has {total} requests, over the limit of {max_lines} "
                                "(--max-batch-lines); split it", param="input_file_id", code="too_many_requests")
        batch = new_batch(body, owner, total)
        store.save(batch)
        wake()
        return public(batch)

    @router.get("/v1/batches/{batch_id}")
    async def get(batch_id: str, request: Request) -> Any:
        return public(store.get(batch_id, owner_of(request)))

    @router.get("/v1/batches")
    async def list_batches(request: Request, limit: int = Query(20, ge=1, le=100), after: str | None = None) -> Any:
        """This key's batches, newest first; ``after``: the last id of the previous page."""
        if after is not None and not BATCH_ID.fullmatch(after):
            raise ApiError(400, f"after {shown_id(after)} is not a batch id; give the last id of the previous page "
                                "('batch_' and 24 hex digits)", param="after", code="invalid_after")
        owner = owner_of(request)
        mine = [public(b) for b in reversed(store.all()) if b["owner"] == owner]
        if after is not None:
            ids = [b["id"] for b in mine]
            mine = mine[ids.index(after) + 1:] if after in ids else []
        page = mine[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(mine) > limit}

    @router.post("/v1/batches/{batch_id}/cancel")
    async def cancel(batch_id: str, request: Request) -> Any:
        """Stop a batch: no new requests start; it ends "cancelled" with the results so far."""
        batch = store.get(batch_id, owner_of(request))
        if batch["status"] in ("validating", "in_progress"):
            batch = cancel_batch(batch)
        elif batch["status"] not in ("cancelling", "cancelled"):
            raise ApiError(400, f"batch {batch_id} is {batch['status']}; only a validating or in_progress batch "
                                "can be cancelled", code="invalid_status")
        return public(batch)

    return router


def check_metadata(metadata: dict[str, str] | None) -> None:
    """Raise 400 ``invalid_metadata`` unless ``metadata`` (None or a dict of strings) has at most
    MAX_METADATA_KEYS pairs, keys of at most MAX_METADATA_KEY_CHARS characters and values of at
    most MAX_METADATA_VALUE_CHARS (OpenAI's limits); the message names the limit and the pair."""
    def refuse(why: str) -> ApiError:
        return ApiError(400, why, param="metadata", code="invalid_metadata")

    if metadata and len(metadata) > MAX_METADATA_KEYS:
        raise refuse(f"metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are accepted")
    for key, value in (metadata or {}).items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise refuse(f"metadata key {shown_id(key)} has {len(key)} characters; keys of at most "
                         f"{MAX_METADATA_KEY_CHARS} are accepted")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise refuse(f"metadata[{shown_id(key)}] has {len(value)} characters; values of at most "
                         f"{MAX_METADATA_VALUE_CHARS} are accepted")


def plan_line(raw: bytes, line: int, endpoint: str, seen: dict[str, int]) -> Plan:
    """What to do with one input line of a batch to ``endpoint``: call the endpoint, or its
    answer now (a malformed line, a duplicate custom_id, another url or method, ``stream``).
    Everything about the body, its ``model`` included, is the endpoint's to answer, so a line's
    result is the online answer."""
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return "done", False, _line_error(None, "invalid_json", f"line {line} is not valid JSON: {exc}", line)
    reason = malformed_reason(row) if isinstance(row, dict) else f"line {line} is not a JSON object"
    cid = row.get("custom_id") if isinstance(row, dict) else None
    if reason is None and cid in seen:
        reason = f"duplicate custom_id {cid!r} (first on line {seen[cid]}); custom_ids must be unique"
    if reason is not None:
        return "done", False, _line_error(cid if isinstance(cid, str) else None, "invalid_request", reason, line)
    seen[cid] = line
    body = row["body"]
    if row.get("url") != endpoint:
        return _refuse(cid, f"url {row.get('url')!r} is not this batch's endpoint {endpoint}", "url", "invalid_url")
    if str(row.get("method", "POST")).upper() != "POST":
        return _refuse(cid, f"method {row.get('method')!r} is not supported; use POST", "method", "invalid_method")
    if body.get("stream"):
        return _refuse(cid, "stream is not supported in a batch; leave it false", "stream", "unsupported")
    return "call", cid, body


def _refuse(cid: str, message: str, param: str, code: str) -> Plan:
    return "done", False, result_line(cid, 400, error_body(message, error_type(400), param, code))


def _line_error(cid: str | None, code: str, message: str, line: int) -> dict[str, Any]:
    return {"id": result_line("", 0, {})["id"], "custom_id": cid, "response": None,
            "error": {"code": code, "message": message, "line": line}}
