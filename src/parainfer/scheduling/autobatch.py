"""``--batch-size auto``: tune the batch size while the job runs, from measured throughput.

Hill climbing (a one-dimensional pattern search) on real tokens per busy worker-second: start
small, double the batch size while throughput improves by more than ``min_gain``, and settle
on the best size seen when it stops improving (a larger batch also raises latency and memory,
so a size is only worth taking for a clear gain). The size never exceeds ``max_size``; the
token budget of ``TaskBuilder`` still caps each batch's padded size (the memory bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Sample:
    tokens: int = 0
    busy_s: float = 0.0
    tasks: int = 0

    @property
    def throughput(self) -> float:
        return self.tokens / self.busy_s if self.busy_s > 0 else 0.0


@dataclass
class BatchSizeTuner:
    """Chooses the batch size for the next tasks.

    Args:
        start: first size tried.
        max_size: largest size tried.
        tasks_per_trial: finished tasks measured at a size before judging it.
        min_gain: relative throughput gain needed to keep growing (0.05 = 5%).

    Attributes:
        current: the size to build tasks with now.
        history: [(seconds since start, size)] each time the size changed.
    """

    start: int = 8
    max_size: int = 512
    tasks_per_trial: int = 4
    min_gain: float = 0.05
    current: int = 0
    settled: bool = False
    history: list[tuple[float, int]] = field(default_factory=list)
    _samples: dict[int, _Sample] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.current = self.current or self.start
        self.history.append((0.0, self.current))

    def observe(self, size: int, tokens: int, busy_s: float, now_s: float) -> None:
        """A task built with batch size ``size`` (``tokens`` real tokens) took ``busy_s``."""
        sample = self._samples.setdefault(size, _Sample())
        sample.tokens += tokens
        sample.busy_s += busy_s
        sample.tasks += 1
        if self.settled or size != self.current or sample.tasks < self.tasks_per_trial:
            return
        previous = self._samples.get(self.current // 2)
        improved = previous is None or sample.throughput > previous.throughput * (1 + self.min_gain)
        if improved and self.current < self.max_size:
            self._move(min(self.max_size, self.current * 2), now_s)
            return
        self.settled = True
        self._move(self.current if improved else self.current // 2, now_s)

    def _move(self, size: int, now_s: float) -> None:
        if size != self.current:
            self.current = size
            self.history.append((round(now_s, 3), size))
