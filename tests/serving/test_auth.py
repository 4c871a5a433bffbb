"""API keys: the key file's format, the key set's owners, and a real server started with a key
file and an environment key (the keys of both accepted, each with its own owner)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import running_server

from parainfer.errors import UsageError
from parainfer.serving.http.auth import KeySet, bearer_key, key_owner, read_key_file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys"
    path.write_text(text)
    return path


def test_a_key_file_holds_keys_with_optional_names_and_comment_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "# team keys\n\nsk-alpha alpha\n   sk-beta\n\tsk-alpha-2   alpha  \n#sk-off\n")
    assert read_key_file(path) == [("sk-alpha", "alpha"), ("sk-beta", None), ("sk-alpha-2", "alpha")]
    keys = KeySet.from_settings("sk-env", str(path))
    assert len(keys) == 4
    assert keys.owner(b"sk-alpha") == keys.owner(b"sk-alpha-2") == "name:alpha"  # one name, one owner
    assert keys.owner(b"sk-beta") == key_owner("sk-beta", None) != keys.owner(b"sk-env")
    assert keys.owner(b"sk-off") is None and keys.owner(b"") is None and keys.owner(b"sk-alph") is None


def test_an_unnamed_key_owns_what_the_single_key_server_stored() -> None:
    # a data directory made with --api-key stored sha256("Bearer KEY")[:24] as the owner
    import hashlib

    assert key_owner("k", None) == hashlib.sha256(b"Bearer k").hexdigest()[:24]
    assert key_owner("k", "ops") == "name:ops"


@pytest.mark.parametrize("text, message", [
    ("sk-a alpha extra\n", "line 1 has 3 fields"),
    ("# only a comment\n\n", "holds no key"),
    ("sk-a al/pha\n", "name 'al/pha' must be"),
    ("ok\nsk-é\n", "line 2: the key must be printable ASCII"),
    ("sk-a alpha\nsk-a beta\n", "listed twice with different names"),
])
def test_a_bad_key_file_is_refused_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        KeySet.from_settings(None, str(write(tmp_path, text)))


def test_the_environment_key_alone_and_no_key_at_all() -> None:
    assert KeySet.from_settings(None, None) is None and KeySet.from_settings("", None) is None
    only = KeySet.from_settings("sk-env", None)
    assert len(only) == 1 and only.owner(b"sk-env") == key_owner("sk-env", None)


@pytest.mark.parametrize("header, key", [
    (b"Bearer k", b"k"), (b"bearer k", b"k"), (b"BEARER   k ", b"k"), (b"Bearer\tk", b"k"),
    (b"Basic k", None), (b"Bearer", None), (b"", None), (b"k", None),
])
def test_the_bearer_scheme_is_case_insensitive(header: bytes, key: bytes | None) -> None:
    assert bearer_key(header) == key


def test_a_server_with_a_key_file_and_an_environment_key_accepts_each(tmp_path: Path) -> None:
    path = write(tmp_path, "sk-alpha alpha\nsk-beta\n")
    with running_server(task="classify", model="parainfer.testing:echo", workers=1, api_key="sk-env",
                        api_keys_file=str(path), data_dir=str(tmp_path / "data")) as url:
        body = {"input": "abc"}
        for key in ("sk-alpha", "sk-beta", "sk-env"):
            r = httpx.post(url + "/v1/classify", json=body, headers={"Authorization": f"bearer {key}"})
            assert r.status_code == 200, (key, r.text)
        for header in ("Bearer sk-gamma", "Bearer sk-alpha alpha", "sk-alpha", ""):
            r = httpx.post(url + "/v1/classify", json=body, headers={"Authorization": header})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", header
        assert httpx.get(url + "/health").status_code == 200  # outside /v1: open


def test_serve_refuses_to_start_with_an_unreadable_key_file(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    missing = tmp_path / "no-such-keys"
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "serve", "--task", "classify", "--model",
                           "parainfer.testing:echo", "--api-keys", str(missing)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2 and f"--api-keys {str(missing)!r} cannot be read" in proc.stderr, proc.stderr
