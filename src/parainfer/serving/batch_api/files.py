"""OpenAI's Files API on ``parainfer serve``: upload batch input files, read and delete files.

Routes: ``POST /v1/files`` (multipart: ``file``, ``purpose`` = "batch"), ``GET /v1/files``
(``?purpose=``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE
/v1/files/{id}``. A file is kept under ``<data dir>/files/`` as ``<id>.data`` plus its
OpenAI file object in ``<id>.json`` (written atomically), so files outlive a restart. A file
over ``--max-file-mb`` gets 413; every file belongs to the API key it was made with (``owner``,
set by ``http.auth.AuthMiddleware``; "" on a server without keys) and is invisible (404) to
others. Only ids this server issues (``FILE_ID``) ever reach the disk: any other id is 404.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from parainfer.openai.errors import ApiError
from parainfer.serving.http.auth import owner_in
from parainfer.serving.http.middleware import BodyLimitMiddleware, Receive, Scope, Send
from parainfer.openai.errors import error_body

UPLOAD_PURPOSES = ("batch",)
MULTIPART_SLACK = 64 << 10  # bytes of multipart framing allowed on top of --max-file-mb


FILE_ID = re.compile(r"file-[0-9a-f]{24}(?:-output|-errors)?")  # uploads; a batch's output and error files


def owner_of(request: Request) -> str:
    """The owner of what this request creates or reads: its API key's owner, as the auth
    middleware recorded it (``http.auth.owner_in``; "" on a server without keys)."""
    return owner_in(request.scope)


def shown_id(value: str) -> str:
    """An id as an error message quotes it: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def write_json_atomic(path: Path, value: dict[str, Any]) -> None:
    """Write ``value`` as JSON to ``path`` so a crash leaves the old or the new file, never half."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class FileStore:
    """Files on disk with their OpenAI file objects.

    Args:
        root: the folder (created when missing).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def data_path(self, file_id: str) -> Path:
        return self.root / f"{file_id}.data"

    def _meta_path(self, file_id: str) -> Path:
        return self.root / f"{file_id}.json"

    def adopt(self, src: Path, filename: str, purpose: str, owner: str, file_id: str | None = None) -> dict[str, Any]:
        """Move ``src`` into the store as a new file; returns its file object. With a given
        ``file_id`` that exists already, returns it unchanged (idempotent: a batch finalized
        again after a restart gets the same output file)."""
        file_id = file_id or f"file-{uuid.uuid4().hex[:24]}"
        if self._meta_path(file_id).exists():
            return self.get(file_id, owner)
        if src.exists() or not self.data_path(file_id).exists():  # else: moved already, before a crash
            os.replace(src, self.data_path(file_id))
        obj = {"id": file_id, "object": "file", "bytes": self.data_path(file_id).stat().st_size,
               "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed",
               "expires_at": None, "status_details": None}
        write_json_atomic(self._meta_path(file_id), {**obj, "owner": owner})
        return obj

    def get(self, file_id: str, owner: str) -> dict[str, Any]:
        """The file object. Raises ApiError 404 for an unknown id, another owner's file, or a
        string that is not a file id this server issues (``FILE_ID``; checked before the disk)."""
        if not FILE_ID.fullmatch(file_id):
            raise ApiError(404, f"no file with id {shown_id(file_id)}: file ids look like 'file-' and 24 hex "
                                "digits", param="file_id", code="file_not_found")
        path = self._meta_path(file_id)
        meta = json.loads(path.read_text()) if path.is_file() else None
        if meta is None or meta.pop("owner") != owner:
            raise ApiError(404, f"no file with id {file_id!r}", param="file_id", code="file_not_found")
        return meta

    def list(self, owner: str, purpose: str | None = None) -> list[dict[str, Any]]:
        """This owner's file objects, newest first."""
        out = []
        for path in self.root.glob("*.json"):
            meta = json.loads(path.read_text())
            if meta.pop("owner") == owner and purpose in (None, meta["purpose"]):
                out.append(meta)
        return sorted(out, key=lambda m: (m["created_at"], m["id"]), reverse=True)

    def delete(self, file_id: str, owner: str) -> None:
        """Delete a file (ApiError 404 as ``get``)."""
        self.get(file_id, owner)
        self._meta_path(file_id).unlink()
        self.data_path(file_id).unlink(missing_ok=True)


def files_routes(store: FileStore, max_file_bytes: int) -> APIRouter:
    """The five Files routes over ``store``."""
    router = APIRouter(tags=["files"])

    @router.post("/v1/files")
    async def upload(request: Request, file: UploadFile, purpose: str = Form(...)) -> Any:
        """Upload a file (purpose "batch": OpenAI batch input JSONL)."""
        if purpose not in UPLOAD_PURPOSES:
            raise ApiError(400, f"purpose {purpose!r} is not supported; accepted: {', '.join(UPLOAD_PURPOSES)}",
                           param="purpose", code="invalid_purpose")
        tmp = store.root / f"upload-{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(file.file, out, 1 << 20)
            size = tmp.stat().st_size
            if size > max_file_bytes:
                raise ApiError(413, f"file of {size} bytes is over the limit of {max_file_bytes} bytes "
                                    "(--max-file-mb)", param="file", code="file_too_large")
            return store.adopt(tmp, file.filename or "upload.jsonl", purpose, owner_of(request))
        finally:
            tmp.unlink(missing_ok=True)

    @router.get("/v1/files")
    async def list_files(request: Request, purpose: str | None = Query(None)) -> Any:
        """This key's files, newest first."""
        return {"object": "list", "data": store.list(owner_of(request), purpose), "has_more": False}

    @router.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> Any:
        return store.get(file_id, owner_of(request))

    @router.get("/v1/files/{file_id}/content")
    async def content(file_id: str, request: Request) -> Any:
        """The file's bytes."""
        store.get(file_id, owner_of(request))
        return FileResponse(store.data_path(file_id), media_type="application/octet-stream")

    @router.delete("/v1/files/{file_id}")
    async def delete(file_id: str, request: Request) -> Any:
        store.delete(file_id, owner_of(request))
        return {"id": file_id, "object": "file", "deleted": True}

    return router


class UploadAwareBodyLimit:
    """The request body limit, with uploads (POST /v1/files) allowed up to ``upload_bytes``.

    Both limits answer 413 in OpenAI's envelope; the upload one names ``--max-file-mb``.
    """

    def __init__(self, app: Any, max_bytes: int, upload_bytes: int):
        self.default = BodyLimitMiddleware(app, max_bytes)
        self.uploads = _UploadLimit(app, upload_bytes + MULTIPART_SLACK)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/files" and scope.get("method") == "POST":
            return await self.uploads(scope, receive, send)
        await self.default(scope, receive, send)


class _UploadLimit(BodyLimitMiddleware):
    def _error(self, size: int) -> dict[str, Any]:
        return error_body(f"upload of {size} bytes is over the limit of {self.max_bytes - MULTIPART_SLACK} bytes "
                          "(--max-file-mb)", "invalid_request_error", code="file_too_large")
