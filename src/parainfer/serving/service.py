"""The service contract: what the HTTP app (``serving.app``) needs of the service behind its routes.

Two services implement it: ``embed.service.InferenceService`` (embed, classify and translate:
dynamic batches over executor workers) and ``generate.service.GenerationService`` (generate: one
engine in the server, or engine replicas in workers). The app starts and stops it with its
lifespan and reads its state for /health and /metrics; the routes call its own methods.
"""

from __future__ import annotations

from typing import Any, Protocol


class Service(Protocol):
    """One app's service: its lifecycle and the state /health and /metrics show."""

    async def start(self) -> None:
        """Start the workers or the engine (they load in the background); called on the event
        loop by the app's lifespan, before the first request.

        Raises:
            UsageError: the service cannot start at all (e.g. a Ray cluster without room).
        """

    async def stop(self) -> None:
        """Stop the workers or the engine, failing what is still queued; called by the lifespan
        once uvicorn has finished the requests in flight."""

    @property
    def ready(self) -> bool:
        """True when the service can take requests now (/health answers 200, else 503)."""

    @property
    def queue_depth(self) -> int:
        """Inputs (or sequences) waiting or running now, for the queue-depth gauge of /metrics."""

    def health(self) -> dict[str, Any]:
        """The /health body: ``status`` (ok | loading | failed ...) plus the service's details."""
