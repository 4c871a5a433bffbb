"""Online serving: an OpenAI-compatible HTTP API over N model replicas with dynamic batching.

HTTP request -> ``service`` (tokens, queue, wait) -> ``batcher`` (group by length, max batch
size / max wait) -> ``router`` (least outstanding work, restart + retry) -> worker -> response.
``--task generate``: ``generation_routes`` -> ``generation_service`` -> one LLMEngine in the
server process (continuous batching inside the engine) -> streamed response.
Entry points: ``create_app(ServeConfig(...))`` and ``parainfer serve`` (``cli.serve_command``).
"""

from parainfer.serving.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):  # keep ``import parainfer.serving`` light: FastAPI loads on use
    if name == "create_app":
        from parainfer.serving.app import create_app

        return create_app
    raise AttributeError(name)
