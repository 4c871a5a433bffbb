"""Autoscaling of a server's replicas (``serve --min-replicas A --max-replicas B``): the one policy
and the one control loop, for every task and both executors.

:class:`AutoscalePolicy` turns the measured ongoing work (inputs, or generate's sequences, waiting
or running) into a replica count; :class:`Autoscaler` samples a :class:`Scalable` (the embed
server's ``BatchRouter``, the generate server's ``SequenceRouter``) every ``CONTROL_INTERVAL_S``,
asks the policy, and tells the router to add or remove replicas. The router owns how: a new
replica starts on the executor's usual start path and is routed to once loaded; a removed one is
taken out of routing, finishes what it holds (drains), then stops. The policy is Ray Serve's
default (``replica_queue_length_autoscaling_policy``), stated with its defaults and the
differences in docs/serving.md, "Autoscaling".
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)
CONTROL_INTERVAL_S = 0.1  # Ray Serve's CONTROL_LOOP_INTERVAL_S: one sample and one decision per period


@dataclass
class AutoscalePolicy:
    """Desired replica count from the ongoing work, with Ray Serve's delays.

    Each ``decide`` adds one sample of the ongoing work (inputs or sequences waiting or running,
    over all replicas) and averages the samples of the last ``look_back_s`` seconds; then

        desired = clip(ceil(average / target_ongoing), min_replicas, max_replicas)

    (Ray Serve: ``num_running_replicas * total / (target * num_running_replicas)``, the same).
    A change is made only once ``desired`` has stayed above the current count for
    ``upscale_delay_s`` (below it for ``downscale_delay_s``) without a break; a decision the other
    way, or ``desired`` equal to the current count, restarts the wait (Ray Serve's
    ``_apply_delay_logic``, its decision counter counted in seconds instead of control periods).

    Args:
        min_replicas, max_replicas: the range, 1 <= min <= max.
        target_ongoing: work per replica aimed for (> 0; Ray Serve's ``target_ongoing_requests``).
        upscale_delay_s, downscale_delay_s: seconds a decision must hold (>= 0).
        look_back_s: seconds of samples averaged (> 0; Ray Serve's ``look_back_period_s``).

    Raises:
        ValueError: a bound or setting out of range (named, with the value).
    """

    min_replicas: int
    max_replicas: int
    target_ongoing: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_s: float = 30.0
    _samples: collections.deque = field(default_factory=collections.deque, init=False, repr=False)
    _direction: int = field(default=0, init=False, repr=False)  # +1 up, -1 down, 0 none
    _since: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 1 <= min_replicas <= max_replicas, got {self.min_replicas} and {self.max_replicas}")
        if self.target_ongoing <= 0 or self.look_back_s <= 0:
            raise ValueError(f"target_ongoing and look_back_s must be > 0, got {self.target_ongoing} and "
                             f"{self.look_back_s}")
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0:
            raise ValueError(f"delays must be >= 0 s, got {self.upscale_delay_s} and {self.downscale_delay_s}")

    def average(self, now: float) -> float:
        """Mean ongoing work over the samples of the last ``look_back_s`` seconds (0 without any)."""
        while self._samples and self._samples[0][0] < now - self.look_back_s:
            self._samples.popleft()
        return sum(v for _, v in self._samples) / len(self._samples) if self._samples else 0.0

    def desired(self, now: float) -> int:
        """``clip(ceil(average / target_ongoing), min, max)`` at ``now`` (no delay applied)."""
        raw = math.ceil(self.average(now) / self.target_ongoing - 1e-9)
        return max(self.min_replicas, min(self.max_replicas, raw))

    def decide(self, now: float, ongoing: float, current: int) -> int:
        """Record ``ongoing`` (work waiting or running now) at ``now`` (monotonic seconds) and
        return the replica count to have: ``current`` (replicas starting or routed to, not
        draining) until a change has been wanted for its delay, then the desired count."""
        self._samples.append((now, float(ongoing)))
        want = self.desired(now)
        direction = (want > current) - (want < current)
        if direction == 0:
            self._direction = 0
            return current
        if direction != self._direction:
            self._direction, self._since = direction, now
        delay = self.upscale_delay_s if direction > 0 else self.downscale_delay_s
        if now - self._since < delay:
            return current
        self._direction = 0
        return want


@dataclass
class ReplicaCounts:
    """Replicas of a server by state: ``starting`` (loading, not routed to), ``ready`` (routed
    to), ``draining`` (finishing what they hold, then stopped)."""

    starting: int
    ready: int
    draining: int

    @property
    def current(self) -> int:
        """Replicas that count towards the target: starting + ready."""
        return self.starting + self.ready


class Scalable(Protocol):
    """A router whose replica count the autoscaler sets (``BatchRouter``, ``SequenceRouter``)."""

    def ongoing(self) -> int:
        """Work waiting or running now, over all replicas (inputs, or sequences)."""

    def replica_counts(self) -> ReplicaCounts:
        """Replicas by state."""

    def add_replica(self) -> int | None:
        """Start one more replica (routed to once loaded); its index, or None when no slot is free."""

    def remove_replica(self) -> int | None:
        """Stop routing to one ready replica, drain it, then stop it; its index, or None when none
        can go now."""


class Autoscaler:
    """The control loop: every ``CONTROL_INTERVAL_S`` sample ``router``, ask ``policy``, scale.

    Args:
        router: the replicas' router (``Scalable``).
        policy: the policy (``ServeConfig.autoscale_policy()``).
        metrics: the app's ``ServingMetrics``: replica gauges and scale-up/down counters.
        ongoing: extra work waiting before the router (the embed batcher's queue), added to
            ``router.ongoing()``; default none.
    """

    def __init__(self, router: Scalable, policy: AutoscalePolicy, metrics: Any,
                 ongoing: Any = lambda: 0) -> None:
        self.router, self.policy, self.metrics, self._extra = router, policy, metrics, ongoing
        self.target = policy.min_replicas
        self.scale_ups = self.scale_downs = 0
        self.last_event: dict[str, Any] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.create_task(self._run(), name="parainfer-autoscaler")

    async def stop(self) -> None:
        """Stop the loop (the replicas stay as they are; the service stops them)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                self.tick(time.monotonic())
            except Exception:  # noqa: BLE001 - one bad tick must not end autoscaling
                log.exception("autoscaler tick failed")
            await asyncio.sleep(CONTROL_INTERVAL_S)

    def tick(self, now: float) -> None:
        """One control period (on the loop): sample, decide, add or remove replicas, export."""
        ongoing = self.router.ongoing() + self._extra()
        counts = self.router.replica_counts()
        target = self.policy.decide(now, ongoing, counts.current)
        average = self.policy.average(now)
        for _ in range(target - counts.current):
            w = self.router.add_replica()
            if w is None:
                break
            self._count("up", w, average, target)
        for _ in range(counts.current - target):
            w = self.router.remove_replica()
            if w is None:
                break
            self._count("down", w, average, target)
        self.target = target
        self.export(self.router.replica_counts())

    def _count(self, direction: str, w: int, average: float, target: int) -> None:
        reason = "load_above_target" if direction == "up" else "load_below_target"
        if direction == "up":
            self.scale_ups += 1
            self.metrics.scale_ups.labels(reason).inc()
        else:
            self.scale_downs += 1
            self.metrics.scale_downs.labels(reason).inc()
        self.last_event = {"direction": direction, "replica": w, "reason": reason, "to": target,
                           "ongoing_avg": round(average, 2), "at": time.time()}
        log.info("autoscaler: scale %s to %d replicas (replica %d): average ongoing work %.1f, target %.1f per "
                 "replica", direction, target, w, average, self.policy.target_ongoing)

    def export(self, counts: ReplicaCounts) -> None:
        """Set the replica gauges of /metrics."""
        for state in ("starting", "ready", "draining"):
            self.metrics.replicas.labels(state).set(getattr(counts, state))
        self.metrics.replicas_desired.set(self.target)
        self.metrics.replicas_ready.set(counts.ready)

    def describe(self, counts: ReplicaCounts) -> dict[str, Any]:
        """The /health ``autoscaling`` key."""
        p = self.policy
        return {"enabled": p.min_replicas < p.max_replicas, "replicas": counts.current, "starting": counts.starting, "ready": counts.ready,
                "draining": counts.draining, "desired": self.target, "min_replicas": p.min_replicas,
                "max_replicas": p.max_replicas, "target_ongoing": p.target_ongoing,
                "ongoing_avg": round(p.average(time.monotonic()), 2), "upscale_delay_s": p.upscale_delay_s,
                "downscale_delay_s": p.downscale_delay_s, "look_back_s": p.look_back_s,
                "scale_ups": self.scale_ups, "scale_downs": self.scale_downs, "last_event": self.last_event}
