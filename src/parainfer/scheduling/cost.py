"""Online cost model: seconds a task takes on a worker, from measured task times.

Each worker's task time is modelled as ``overhead_s + s_per_token * padded_tokens`` and fitted
by exponentially weighted least squares (recursive sums with forgetting factor ``decay``;
see e.g. Ljung, *System Identification*, 2nd ed., section 11.2), so the estimate follows a
worker whose speed changes (another job on its core). Until a worker has two distinct
measurements it borrows the pooled fit of all workers, and before any measurement a prior
(``prior_s_per_token``). Used by the ``lpt`` and ``steal`` policies, the ETA, and the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Fit:
    """Exponentially weighted sums for a 1-D linear regression y = a + b x."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    samples: int = 0

    def add(self, x: float, y: float, decay: float) -> None:
        self.n = decay * self.n + 1.0
        self.sx = decay * self.sx + x
        self.sy = decay * self.sy + y
        self.sxx = decay * self.sxx + x * x
        self.sxy = decay * self.sxy + x * y
        self.samples += 1

    def coefficients(self) -> tuple[float, float] | None:
        """(overhead_s, s_per_token), or None before any sample. Both clamped at >= 0."""
        if self.n == 0:
            return None
        var = self.n * self.sxx - self.sx * self.sx
        if var <= 1e-9 * max(1.0, self.sxx * self.n):  # all tasks the same size: proportional fit
            b = self.sy / self.sx if self.sx > 0 else 0.0
            return 0.0, max(0.0, b)
        b = (self.n * self.sxy - self.sx * self.sy) / var
        a = (self.sy - b * self.sx) / self.n
        if b < 0:
            return max(0.0, self.sy / self.n), 0.0
        if a < 0:
            return 0.0, self.sxy / self.sxx if self.sxx > 0 else b
        return a, b


class CostModel:
    """Per-worker task-time estimates.

    Args:
        num_workers: N.
        decay: forgetting factor in (0, 1]; 0.9 weighs the last ~10 tasks most.
        prior_s_per_token: the guess before any task finished (seconds per padded token).
    """

    def __init__(self, num_workers: int, decay: float = 0.9, prior_s_per_token: float = 1e-4):
        self.decay = decay
        self.prior = (0.0, prior_s_per_token)
        self._workers = [_Fit() for _ in range(num_workers)]
        self._pooled = _Fit()

    def observe(self, worker_id: int, tokens: int, seconds: float) -> None:
        """Record that a task of ``tokens`` padded tokens took ``seconds`` on ``worker_id``."""
        self._workers[worker_id].add(float(tokens), seconds, self.decay)
        self._pooled.add(float(tokens), seconds, self.decay)

    def coefficients(self, worker_id: int | None = None) -> tuple[float, float]:
        """(overhead_s, s_per_token) for a worker (None: all workers pooled)."""
        fit = self._pooled if worker_id is None else self._workers[worker_id]
        if fit.samples >= 2 or (worker_id is None and fit.samples):
            got = fit.coefficients()
            if got is not None:
                return got
        if worker_id is not None and fit.samples == 1 and self._pooled.samples >= 2:
            a, b = self._pooled.coefficients() or self.prior
            # One sample of this worker: scale the pooled fit to match it (a speed factor).
            predicted = a + b * (fit.sx / fit.n)
            ratio = (fit.sy / fit.n) / predicted if predicted > 0 else 1.0
            return a * ratio, b * ratio
        return self._pooled.coefficients() if self._pooled.samples else self.prior

    def estimate(self, tokens: int, worker_id: int | None = None) -> float:
        """Predicted seconds for a task of ``tokens`` padded tokens on ``worker_id``."""
        a, b = self.coefficients(worker_id)
        return a + b * tokens

    def speed(self, worker_id: int) -> float:
        """Relative speed of a worker: pooled seconds per token / its seconds per token (1 = average)."""
        pooled = self.coefficients(None)[1]
        own = self.coefficients(worker_id)[1]
        return pooled / own if own > 0 else 1.0
