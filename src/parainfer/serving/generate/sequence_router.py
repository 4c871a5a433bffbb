"""Routes generation *sequences* to N engine replicas behind one ``stream_async``, by least
outstanding tokens (the embed/classify server's ``embed.batch_router`` routes model batches).

``serve --task generate --workers N`` (N > 1, or ``--executor ray``) runs one engine per worker
(``executors.engine_replicas``, behind a ``ReplicaHandle``). :class:`SequenceRouter` stands where
the one-engine server has its ``EngineLoop``: it picks a replica per sequence, streams its
outputs back, restarts replicas that die (:class:`ReplicaDied` for the requests they held) and
gives up on those that cannot load. Routing rule and faults: docs/serving.md, "Generation"
("Engine replicas" and "How the router and the replicas talk"). The replica set may change
(``serving.autoscale``): ``add_replica`` starts a slot as a restart does (routed to once loaded),
``remove_replica`` stops routing to one, lets its sequences finish, then closes it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from parainfer.executors import MAX_DEATHS_WHILE_LOADING
from parainfer.executors.engine_replicas.handles import (
    EngineBroken,
    EngineMessage,
    EngineStats,
    ReplicaEvent,
    ReplicaExited,
    ReplicaFailed,
    ReplicaHandle,
    ReplicaLauncher,
    ReplicaOutput,
    ReplicaReady,
    SequenceFailed,
    SequenceOutput,
)
from parainfer.serving.autoscale import ReplicaCounts
from parainfer.serving.generate.engine_view import EngineView
from parainfer.openai.errors import ApiError

log = logging.getLogger(__name__)


class ReplicaDied(RuntimeError):
    """The replica running this request died or its engine broke (it is being restarted)."""


@dataclass
class _Request:
    queue: asyncio.Queue
    prompt: int
    max_tokens: int
    generated: int = 0
    started: bool = False

    @property
    def outstanding(self) -> int:
        return (0 if self.started else self.prompt) + max(0, self.max_tokens - self.generated)


@dataclass
class _Replica:
    handle: ReplicaHandle | None = None
    incarnation: int = 0
    ready: bool = False
    loaded_once: bool = False
    dead: bool = False  # given up: never restarted
    active: bool = True  # False: a slot the autoscaler has not started (or has stopped)
    draining: bool = False  # removed: takes no new sequence; closed once it holds none
    info: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, _Request] = field(default_factory=dict)
    routed: int = 0
    restarts: int = 0
    load_deaths: int = 0
    stats: dict[str, Any] = field(default_factory=dict)  # its engine's counters, from 0 at each start

    @property
    def outstanding(self) -> int:
        return sum(r.outstanding for r in self.requests.values())


class SequenceRouter:
    """Starts the replicas and routes sequences to them (see the module docstring).

    Args:
        factory: the replicas' launcher (``engine_replicas.make_replicas``; connected already).
        num_workers: N replicas.
        tokenizer: the model's tokenizer (loaded in the server process).
        on_ready: called once (on the loop) when every replica not given up has loaded.
        on_failed: called (on the loop) with the reason when every replica is given up.
        on_restart: called with the replica index when it is started again.
        on_route: called with the replica index each time a sequence is sent to it.
        initial: replicas ``start`` starts (default ``num_workers``; fewer under autoscaling: the
            other slots are started by ``add_replica``).
    """

    def __init__(self, factory: ReplicaLauncher, num_workers: int, tokenizer: Any, on_ready: Callable[[], None],
                 on_failed: Callable[[str], None], on_restart: Callable[[int], None] = lambda w: None,
                 on_route: Callable[[int], None] = lambda w: None, initial: int | None = None) -> None:
        self.factory, self.tokenizer = factory, tokenizer
        self.on_ready, self.on_failed, self.on_restart, self.on_route = on_ready, on_failed, on_restart, on_route
        initial = num_workers if initial is None else initial
        self.replicas = [_Replica(active=w < initial) for w in range(num_workers)]
        self.engine: EngineView | None = None
        self.error: BaseException | None = None
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    def start(self) -> None:
        """Start every replica (they load in the background). Call on the event loop."""
        self._loop = asyncio.get_running_loop()
        for w, rep in enumerate(self.replicas):
            if rep.active:
                self._spawn(w)

    def stop(self) -> None:
        """Stop every replica and fail what they hold (blocking: run it in a thread)."""
        self._stopped = True
        for rep in self.replicas:
            if rep.handle is not None:
                rep.handle.close()
        self.factory.close()

    @property
    def ready_count(self) -> int:
        """Replicas routed to now (loaded, not draining)."""
        return sum(self._routable(r) for r in self.replicas)

    @staticmethod
    def _routable(r: _Replica) -> bool:
        return r.ready and r.active and not r.draining

    # ---- the replica set (``serving.autoscale.Scalable``; on the loop) ---------------------------

    def ongoing(self) -> int:
        """Sequences on the replicas (waiting or running in their engines)."""
        return sum(len(r.requests) for r in self.replicas)

    def replica_counts(self) -> ReplicaCounts:
        """Replicas by state (those given up on are in none)."""
        live = [r for r in self.replicas if r.active and not r.dead]
        return ReplicaCounts(starting=sum(not r.ready and not r.draining for r in live),
                             ready=sum(self._routable(r) for r in live), draining=sum(r.draining for r in live))

    def add_replica(self) -> int | None:
        """Start the first slot not in use, as a restart does; routed to once its ReplicaReady
        arrives. None when every slot is in use."""
        free = [w for w, r in enumerate(self.replicas) if not r.active]
        if not free or self._stopped:
            return None
        w = free[0]
        old = self.replicas[w]
        self.replicas[w] = _Replica(incarnation=old.incarnation, routed=old.routed, restarts=old.restarts)
        self._spawn(w)
        return w

    def remove_replica(self) -> int | None:
        """Take the ready replica with the least outstanding work out of routing; it is closed
        once its sequences have finished. None when that would leave no replica routed to while
        another is still loading, or none is ready."""
        ready = [w for w, r in enumerate(self.replicas) if self._routable(r)]
        if not ready or (len(ready) == 1 and self.replica_counts().starting):
            return None
        w = min(ready, key=lambda v: (len(self.replicas[v].requests), self.replicas[v].outstanding, -v))
        self.replicas[w].draining = True
        self._retire_if_drained(w)
        return w

    def _retire_if_drained(self, w: int) -> None:
        rep = self.replicas[w]
        if not rep.draining or rep.requests or not rep.active:
            return
        rep.incarnation += 1  # what the closed replica still sends is dropped
        rep.active = rep.ready = rep.draining = False
        if rep.handle is not None:
            rep.handle.close()

    def describe(self) -> list[dict[str, Any]]:
        """Per-replica state for /health."""
        return [{"replica": w, "ready": r.ready, "dead": r.dead, "running": len(r.requests),
                 "outstanding_tokens": r.outstanding, "requests_routed": r.routed, "restarts": r.restarts,
                 "pid": r.info.get("pid"), "node": r.info.get("node"), "load_s": r.info.get("load_s"),
                 **({"draining": True} if r.draining else {})}
                for w, r in enumerate(self.replicas) if r.active]

    # ---- requests (on the loop) -------------------------------------------------------------

    async def stream_async(self, prompt: list[int], params: Any) -> AsyncIterator[Any]:
        """Send one sequence to the replica with the fewest outstanding tokens; async-iterate its
        RequestOutputs. Leaving early aborts it in its replica. A sequence whose replica dies
        before its first output is sent again, whole, to another ready replica (nothing of it
        reached the client, so the answer is the one it would have had); once an output has
        been yielded, the replica's death is the request's.

        Raises:
            ApiError: 503 (Retry-After) when no replica is ready now.
            ReplicaDied: its replica died or broke after its first output, or before it with no
                other ready replica left to try.
            RuntimeError: the sequence failed alone in its engine (the reason is the message).
        """
        tried: set[int] = set()
        while True:
            w = self._pick(tried)
            started = False
            try:
                async with aclosing(self._attempt(w, prompt, params)) as attempt:  # a client that
                    async for out in attempt:  # leaves closes the attempt too: its finally aborts
                        started = True
                        yield out
                return
            except ReplicaDied as exc:
                tried.add(w)
                if started or not any(self._routable(r) for i, r in enumerate(self.replicas) if i not in tried):
                    raise
                log.warning("generation replica %d lost a sequence before its first token (%s); sending it "
                            "to another replica", w, exc)

    async def _attempt(self, w: int, prompt: list[int], params: Any) -> AsyncIterator[Any]:
        """One try of a sequence on replica ``w`` (see ``stream_async``)."""
        rep, rid = self.replicas[w], f"g{next(self._ids)}"
        req = _Request(asyncio.Queue(), len(prompt), params.max_tokens)
        rep.requests[rid] = req
        rep.routed += 1
        self.on_route(w)
        incarnation, handle, finished = rep.incarnation, rep.handle, False
        try:
            try:
                handle.add(rid, prompt, params)
            except Exception as exc:  # noqa: BLE001 - the worker went away: its ReplicaExited follows
                raise ReplicaDied(f"replica {w} went away while the request was sent: {exc}") from None
            while not finished:
                out = await req.queue.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                yield out
        finally:
            rep.requests.pop(rid, None)
            if not finished and rep.incarnation == incarnation and rep.ready:
                handle.abort(rid)
            if rep.incarnation == incarnation:
                self._retire_if_drained(w)

    def _pick(self, exclude: set[int] = frozenset()) -> int:
        ready = [w for w, r in enumerate(self.replicas) if self._routable(r) and w not in exclude]
        if not ready:
            raise ApiError(503, "no generation replica is ready (restarting after a fault); retry shortly",
                           code="replica_unavailable", headers={"Retry-After": "2"})
        return min(ready, key=lambda w: (self.replicas[w].outstanding, len(self.replicas[w].requests), w))

    def fail_all(self, exc: BaseException) -> None:
        for rep in self.replicas:
            self._fail_requests(rep, exc)

    # ---- replica events (on the loop) ---------------------------------------------------------

    def _spawn(self, w: int) -> None:
        rep = self.replicas[w]
        rep.incarnation += 1
        rep.stats = {}  # a fresh engine counts from 0 (a counter reset, as after an engine rebuild)
        incarnation, loop = rep.incarnation, self._loop
        assert loop is not None

        def on_event(event: ReplicaEvent) -> None:  # in the handle's reader thread
            try:
                loop.call_soon_threadsafe(self._on_event, w, incarnation, event)
            except RuntimeError:  # the loop closed: shutting down
                pass
        rep.handle = self.factory.start(w, on_event)

    def _on_event(self, w: int, incarnation: int, event: ReplicaEvent) -> None:
        rep = self.replicas[w]
        if incarnation != rep.incarnation or self._stopped:
            return  # from a replica replaced already
        match event:
            case ReplicaOutput(messages):
                self._deliver(w, rep, messages)
            case ReplicaReady(info):
                rep.ready = rep.loaded_once = True
                rep.info, rep.load_deaths = info, 0
                if self.engine is None:
                    self.engine = EngineView(self.tokenizer, info, self)
                if all(r.loaded_once or r.dead for r in self.replicas if r.active):
                    self.on_ready()
            case ReplicaFailed(reason):
                log.error("generation replica %d: %s", w, reason)
                self._give_up(w, rep, reason.splitlines()[0])
            case ReplicaExited(reason):
                self._lost(w, rep, reason)

    def _deliver(self, w: int, rep: _Replica, messages: list[EngineMessage]) -> None:
        for msg in messages:
            match msg:
                case SequenceOutput(out):
                    req = rep.requests.get(out.request_id)
                    if req is None:
                        continue  # aborted: its request has left
                    req.started, req.generated = True, out.completion_tokens
                    if out.finished:
                        del rep.requests[out.request_id]
                    req.queue.put_nowait(out)
                case SequenceFailed(request_id, reason, status, code, message):
                    req = rep.requests.pop(request_id, None)
                    if req is not None and status is not None:  # the request's own fault: named to its client
                        req.queue.put_nowait(ApiError(status, message or reason, param="response_format", code=code))
                    elif req is not None:
                        req.queue.put_nowait(RuntimeError(f"the sequence failed in replica {w}: {reason}"))
                case EngineStats(stats):
                    rep.stats = stats
                case EngineBroken(reason):
                    self._lost(w, rep, f"replica {w}'s engine broke: {reason}")
                    return

    def _lost(self, w: int, rep: _Replica, reason: str) -> None:
        log.error("generation replica %d lost (%s); its %d requests fail, restarting it", w, reason,
                  len(rep.requests))
        was_ready, rep.ready = rep.ready, False
        rep.handle.close()
        self._fail_requests(rep, ReplicaDied(reason))
        if rep.draining:  # it was being removed: not restarted
            rep.incarnation += 1
            rep.active = rep.draining = False
            return None
        if not was_ready:
            rep.load_deaths += 1
            if rep.load_deaths >= MAX_DEATHS_WHILE_LOADING:
                return self._give_up(w, rep, f"replica {w} died {rep.load_deaths} times in a row while loading "
                                             f"(last: {reason})")
        rep.restarts += 1
        self.on_restart(w)
        self._spawn(w)
        return None

    def _give_up(self, w: int, rep: _Replica, reason: str) -> None:
        rep.ready, rep.dead = False, True
        rep.handle.close()
        self._fail_requests(rep, ReplicaDied(reason))
        if all(r.dead for r in self.replicas if r.active):
            self.error = RuntimeError(reason)
            self.on_failed(reason)
        elif all(r.loaded_once or r.dead for r in self.replicas if r.active) and self.ready_count:
            self.on_ready()

    @staticmethod
    def _fail_requests(rep: _Replica, exc: BaseException) -> None:
        held, rep.requests = rep.requests, {}
        for req in held.values():
            req.queue.put_nowait(exc)


async def start_router(config: Any, **callbacks: Callable) -> SequenceRouter:
    """Connect (Ray: to the cluster), load the tokenizer, and start ``config.min_replicas`` of the
    ``config.workers`` replica slots of
    ``config``'s engine on ``config.executor`` behind a router; ``callbacks`` are SequenceRouter's
    ``on_ready``, ``on_failed``, ``on_restart``, ``on_route``. Call on the event loop.

    Raises:
        UsageError: a Ray cluster without room for the actors.
    """
    from parainfer.executors.engine_replicas import make_replicas
    from parainfer.executors.engine_replicas.host import EngineSpec

    spec = EngineSpec(config.model, config.dtype, config.max_num_seqs, config.threads_per_worker, config.prefix_cache,
                      config.grammar_settings(), deterministic=bool(config.deterministic), engine=config.engine)
    factory = make_replicas(config, spec)
    await asyncio.to_thread(factory.connect)
    tokenizer = await asyncio.to_thread(spec.load_tokenizer)
    router = SequenceRouter(factory, config.workers, tokenizer, initial=config.min_replicas, **callbacks)
    router.start()
    return router
