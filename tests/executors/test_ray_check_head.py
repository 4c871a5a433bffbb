"""``ray_cluster.check_head``'s checks that need no network: the address's form and the token file."""

from __future__ import annotations

from pathlib import Path

import pytest

from parainfer.errors import UsageError
from parainfer.executors.ray_cluster import check_head


@pytest.mark.parametrize("address", ["10.0.0.1", "10.0.0.1:", ":6379", "head:port"])
def test_an_address_without_host_and_port_is_named(address: str) -> None:
    with pytest.raises(UsageError, match=r"must be HOST:PORT of the Ray head .*got " + repr(address)):
        check_head(address)


def test_a_token_file_that_cannot_be_read_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(missing))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    with pytest.raises(UsageError, match=f"RAY_AUTH_TOKEN_PATH='{missing}' cannot be read .No such file"):
        check_head("10.0.0.1:6379")  # stops before any connection
