"""Fixtures: real servers on a free loopback port (uvicorn in a thread, workers in processes)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

import httpx
import pytest
import uvicorn

from parainfer.serving.app import create_app
from parainfer.serving.config import ServeConfig
from parainfer.serving.http.protocol import uvicorn_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(wait_ready: bool = True, **settings: object) -> Iterator[str]:
    """Serve ``ServeConfig(**settings)`` on 127.0.0.1:<free port>; yields the base URL.

    With ``wait_ready`` it returns once /health says 200 (every replica loaded).
    ``header_timeout_s`` (default 10) is the server's header-read timeout (``http_protocol``);
    ``on_app`` (optional) is called with the app before it serves (to read its state).
    """
    header_timeout_s = float(settings.pop("header_timeout_s", 10.0))  # type: ignore[arg-type]
    on_app = settings.pop("on_app", None)
    config = ServeConfig(port=free_port(), **settings)
    app = create_app(config)
    if on_app is not None:
        on_app(app)  # type: ignore[operator]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port,
                                           log_level="warning", access_log=False,
                                           **uvicorn_settings(header_timeout_s)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        while wait_ready and httpx.get(f"{url}/health").status_code != 200:
            assert time.monotonic() < deadline, "replicas did not load"
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    """One replica of the cheap echo model (task classify): outputs {"length": n}."""
    with running_server(task="classify", model="parainfer.testing:echo", workers=1) as url:
        yield url


@pytest.fixture(scope="session")
def reference_engine():
    """``reference_engine(threads) -> LLMEngine``: SmolLM2 run directly in this process (the
    reference a generate server's greedy answers must equal), loaded once per thread count for
    the whole session instead of once per module. 0.1 GiB of KV cache: the references are short.
    No prefix cache: a reference is computed from its prompt alone, whatever ran before it in the
    session."""
    from parainfer.generation import LLMEngine, ensure_smollm2

    engines: dict[int, LLMEngine] = {}

    def get(threads: int = 1) -> LLMEngine:
        if threads not in engines:
            engines[threads] = LLMEngine(ensure_smollm2(), threads=threads, kv_cache_gb=0.1,
                                        enable_prefix_caching=False)
        return engines[threads]

    return get
