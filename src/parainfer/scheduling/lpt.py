"""``lpt``: longest processing time first, with worker speeds from the cost model.

Graham's LPT rule (Graham, "Bounds on multiprocessing timing anomalies", SIAM J. Appl. Math.
17(2), 1969): order tasks by decreasing cost and give each to the machine that becomes free
first; its makespan is within 4/3 - 1/(3m) of optimal on identical machines. Online here:
when a worker has room (it is, by definition, the one free first) it gets the largest pending
task by padded tokens, unless another worker, after finishing its backlog, would complete that
task sooner (a slower worker, as measured by the cost model; the uniform-machines variant of
LPT); then it gets the largest task it can finish no later than the others would, else the
smallest. Big tasks go first, so no worker is left with a long task at the end.
"""

from __future__ import annotations

import bisect

from parainfer.scheduling.base import SchedulingPolicy, Task


class LptPolicy(SchedulingPolicy):
    """Largest pending task to whichever worker asks, adjusted for worker speed."""

    name = "lpt"

    def __init__(self, num_workers: int, **kwargs: object):
        super().__init__(num_workers, **kwargs)
        self._keys: list[tuple[int, int]] = []  # (-padded_tokens, index), ascending = largest first
        self._tasks: dict[int, Task] = {}

    def add_tasks(self, tasks: list[Task]) -> None:
        for task in tasks:
            bisect.insort(self._keys, (-task.padded_tokens, task.index))
            self._tasks[task.index] = task

    def pending(self) -> int:
        return len(self._keys)

    def next_task(self, worker_id: int) -> Task | None:
        if not self._keys:
            return None
        pos = self._choose(worker_id)
        _, index = self._keys.pop(pos)
        return self._handed(worker_id, self._tasks.pop(index))

    def _choose(self, worker_id: int) -> int:
        """Position in ``_keys`` of the task for ``worker_id``."""
        if self.num_workers == 1 or len(self._keys) == 1:
            return 0
        mine = self.backlog(worker_id)
        others = [self.backlog(o) for o in range(self.num_workers)]
        for pos in (0, len(self._keys) // 2):
            tokens = -self._keys[pos][0]
            finish_here = mine + self.cost.estimate(tokens, worker_id)
            best_other = min(others[o] + self.cost.estimate(tokens, o)
                             for o in range(self.num_workers) if o != worker_id)
            if finish_here <= best_other * 1.05:
                return pos
        self.stats["deferred_to_faster"] = self.stats.get("deferred_to_faster", 0) + 1
        return len(self._keys) - 1
