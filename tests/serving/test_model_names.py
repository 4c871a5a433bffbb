"""One rule for a request's ``model`` on every route (``openai.requests.ModelNames``): without
``--served-model-name`` any name is answered by the one served model (an OpenAI client or batch
file runs unchanged); with it, those names only, anything else 404 ``model_not_found``."""

from __future__ import annotations

import httpx
import pydantic
import pytest
from fastapi.testclient import TestClient

from parainfer.openai.errors import ApiError
from parainfer.openai.requests import ModelNames
from parainfer.serving.app import create_app
from parainfer.serving.config import ServeConfig


def test_any_name_without_served_names_and_only_those_with_them() -> None:
    default = ModelNames.of("embed", None)
    assert default.names == ("all-MiniLM-L6-v2",) and default.reported == "all-MiniLM-L6-v2"
    for name in ("text-embedding-3-small", "", None, "all-minilm-l6-v2"):
        default.check(name)
    assert ModelNames.of("generate", "/models/Qwen2-0.5B/").reported == "Qwen2-0.5B"
    aliases = ModelNames.of("embed", None, ["mine", "text-embedding-3-small"])
    assert aliases.reported == "mine"
    for name in ("mine", "text-embedding-3-small", ""):  # no model named: the server's
        aliases.check(name)
    with pytest.raises(ApiError, match="'all-MiniLM-L6-v2' does not exist on this server; served: 'mine', "
                                       "'text-embedding-3-small'") as err:
        aliases.check("all-MiniLM-L6-v2")
    assert (err.value.status, err.value.code, err.value.param) == (404, "model_not_found", "model")


def test_served_model_names_must_be_non_empty() -> None:
    for bad in ([], [""], ["x" * 300]):
        with pytest.raises(pydantic.ValidationError, match="served_model_names"):
            ServeConfig(served_model_names=bad)


def test_the_generation_routes_check_the_name_before_anything_runs(tmp_path) -> None:
    """No engine is loaded here (no lifespan): a name not served is 404 at once, a served one gets
    past the check (to 503 loading)."""
    app = create_app(ServeConfig(task="generate", served_model_names=["chat-model", "gpt-4o-mini"],
                                 data_dir=str(tmp_path)))
    client = TestClient(app, base_url="http://127.0.0.1")
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    for path, body in (("/v1/chat/completions", chat), ("/v1/completions", {"prompt": "hi", "max_tokens": 1})):
        r = client.post(path, json={**body, "model": "gpt-4o"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
        for name in ("gpt-4o-mini", "chat-model", ""):
            r = client.post(path, json={**body, "model": name})
            assert r.status_code == 503 and r.json()["error"]["code"] == "loading", r.text
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["chat-model", "gpt-4o-mini"]


def test_classify_answers_any_name_with_its_own(echo_server) -> None:
    r = httpx.post(echo_server + "/v1/classify", json={"input": "abc", "model": "gpt-4o-mini"})
    assert r.status_code == 200 and r.json()["model"] == "parainfer.testing:echo"
