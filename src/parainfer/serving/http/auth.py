"""API keys of one server: the key set, the middleware that checks it, and who owns what.

Keys come from ``--api-keys FILE`` and from ``PARAINFER_API_KEY`` (``--api-key``); with both,
every key of either is accepted. The file holds one key a line, optionally followed by a name
(``KEY NAME``, separated by blanks); a line whose first non-blank character is ``#`` is a
comment, blank lines are skipped. Every key is its own *owner*: the files and batches made with
it are invisible (404) to every other key. A named key owns by its name (several lines with the
same name share one owner, so a key can be replaced and keep its objects); an unnamed key by a
hash of itself. ``AuthMiddleware`` puts the owner of the request's key into the ASGI scope
(``OWNER``), where ``owner_of`` finds it; without any key the server is open and every client
shares one owner, "": no authentication means no scoping. File format and rules:
docs/serving.md, "Authentication and ownership".
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError
from parainfer.openai.errors import error_body
from parainfer.serving.http.middleware import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    lane_of,
    send_json,
)

OWNER = "parainfer.owner"  # ASGI scope key: the owner of the request's key, set by AuthMiddleware
NO_KEYS_OWNER = ""  # every client's owner on a server without keys
_KEY = re.compile(r"[\x21-\x7e]+")  # printable ASCII without blanks: what a header carries as is
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def key_owner(key: str, name: str | None) -> str:
    """The stable owner id of ``key``: ``name:<name>`` for a named key; for an unnamed one the
    first 24 hex digits of the SHA-256 of ``Bearer <key>`` (what earlier versions stored, so a
    data directory made with ``--api-key`` keeps its owners)."""
    if name is not None:
        return f"name:{name}"
    return hashlib.sha256(f"Bearer {key}".encode()).hexdigest()[:24]


def read_key_file(path: str | Path) -> list[tuple[str, str | None]]:
    """The ``(key, name or None)`` pairs of a key file (format: the module doc), in file order.

    Raises:
        UsageError: the file cannot be read, holds no key, or a line is not ``KEY [NAME]``
            (a key of printable ASCII without blanks, a name of up to 64 letters, digits,
            ``.``, ``_``, ``@``, ``-``); the message names the file and the line number.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--api-keys {str(path)!r} cannot be read: {exc}") from None
    pairs: list[tuple[str, str | None]] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"--api-keys {str(path)!r} line {number}"
        if len(fields) > 2:
            raise UsageError(f"{where} has {len(fields)} fields; a line is 'KEY' or 'KEY NAME' "
                             "(a comment is a line of its own, starting with #)")
        if not _KEY.fullmatch(fields[0]):
            raise UsageError(f"{where}: the key must be printable ASCII without blanks")
        if len(fields) == 2 and not _NAME.fullmatch(fields[1]):
            raise UsageError(f"{where}: name {fields[1]!r} must be 1-64 letters, digits, '.', '_', '@' or '-' "
                             "(starting with a letter or digit)")
        pairs.append((fields[0], fields[1] if len(fields) == 2 else None))
    if not pairs:
        raise UsageError(f"--api-keys {str(path)!r} holds no key; write one key a line ('KEY' or 'KEY NAME')")
    return pairs


class KeySet:
    """The accepted keys and their owners.

    Args:
        pairs: ``(key, name or None)``; the same key twice must have the same name.

    Raises:
        UsageError: a key listed under two different names (its owner would be ambiguous).
    """

    def __init__(self, pairs: list[tuple[str, str | None]]):
        owners: dict[str, str] = {}
        for key, name in pairs:
            owner = key_owner(key, name)
            if owners.setdefault(key, owner) != owner:
                raise UsageError(f"a key is listed twice with different names ({owners[key]!r} and {owner!r}); "
                                 "give each key one name")
        # SHA-256 digests: compare_digest then compares equal lengths, whatever key was sent
        self._digests = [(hashlib.sha256(key.encode()).digest(), owner) for key, owner in owners.items()]

    @classmethod
    def from_settings(cls, api_key: str | None, api_keys_file: str | None) -> KeySet | None:
        """The keys of ``--api-key``/``PARAINFER_API_KEY`` and ``--api-keys FILE`` together;
        None when neither gives a key (the server is open). A key in both takes the file's name.

        Raises:
            UsageError: as ``read_key_file`` and the constructor.
        """
        pairs = read_key_file(api_keys_file) if api_keys_file else []
        if api_key and api_key not in {key for key, _ in pairs}:
            pairs.append((api_key, None))
        return cls(pairs) if pairs else None

    def __len__(self) -> int:
        return len(self._digests)

    def owner(self, key: bytes) -> str | None:
        """The owner of ``key`` (the bytes after ``Bearer``), or None for a key not in the set.
        Compares against every key in constant time (``hmac.compare_digest`` of SHA-256 digests),
        without stopping at a match."""
        given = hashlib.sha256(key).digest()
        found = None
        for digest, owner in self._digests:
            if hmac.compare_digest(given, digest):
                found = owner
        return found


def bearer_key(header: bytes) -> bytes | None:
    """The key of an ``Authorization`` header value, or None when it is not a bearer one. The
    scheme is case-insensitive (RFC 9110 section 11.1: ``bearer``, ``BEARER`` as ``Bearer``)
    and any blanks separate it from the key."""
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        return None
    return parts[1].strip()


def owner_in(scope: dict[str, Any]) -> str:
    """The owner of a request (``OWNER`` in its ASGI scope), ``NO_KEYS_OWNER`` on an open server."""
    return scope.get(OWNER, NO_KEYS_OWNER)


class AuthMiddleware:
    """Requires ``Authorization: Bearer <key>`` with a key of ``keys`` on paths under ``prefix``
    (401 otherwise) and records the key's owner in the scope (``OWNER``).

    Other paths (/health, /metrics, /docs) stay open. The server's own in-process calls (the
    batch runner's, marked by ``middleware.lane_of``, which no HTTP client can set) pass without a key.
    """

    def __init__(self, app: ASGIApp, keys: KeySet, prefix: str = "/v1"):
        self.app, self.keys, self.prefix = app, keys, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and lane_of(scope) == "online"
                and (scope["path"] == self.prefix or scope["path"].startswith(self.prefix + "/"))):
            key = bearer_key(dict(scope["headers"]).get(b"authorization", b""))
            owner = self.keys.owner(key) if key is not None else None
            if owner is None:
                return await send_json(send, 401, error_body(
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    "authentication_error", code="invalid_api_key"), {"WWW-Authenticate": "Bearer"})
            scope[OWNER] = owner
        await self.app(scope, receive, send)
