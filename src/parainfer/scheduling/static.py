"""``static``: the textbook fixed plan, tasks dealt round robin to workers as they are created.

Task i goes to worker i mod N and nowhere else, whatever the workers' speeds: the baseline the
adaptive policies are measured against (a slow worker becomes the job's straggler).
"""

from __future__ import annotations

from collections import deque

from parainfer.scheduling.base import SchedulingPolicy, Task


class StaticPolicy(SchedulingPolicy):
    """Round-robin assignment fixed at creation time; no rebalancing."""

    name = "static"

    def __init__(self, num_workers: int, **kwargs: object):
        super().__init__(num_workers, **kwargs)
        self._queues: list[deque[Task]] = [deque() for _ in range(num_workers)]
        self._next = 0

    def add_tasks(self, tasks: list[Task]) -> None:
        for task in tasks:
            self._queues[self._next].append(task)
            self._next = (self._next + 1) % self.num_workers

    def _requeue(self, task: Task) -> None:
        self._queues[task.index % self.num_workers].appendleft(task)

    def next_task(self, worker_id: int) -> Task | None:
        q = self._queues[worker_id]
        return self._handed(worker_id, q.popleft()) if q else None

    def pending(self) -> int:
        return sum(len(q) for q in self._queues)
