"""``dynamic``: one shared FIFO; a worker pulls the next task whenever it has room.

Self-balancing (a slow worker simply pulls fewer tasks); the default policy.
"""

from __future__ import annotations

from collections import deque

from parainfer.scheduling.base import SchedulingPolicy, Task


class DynamicPolicy(SchedulingPolicy):
    """Workers pull from a single FIFO queue (dynamic load balancing, "self-scheduling")."""

    name = "dynamic"

    def __init__(self, num_workers: int, **kwargs: object):
        super().__init__(num_workers, **kwargs)
        self._queue: deque[Task] = deque()

    def add_tasks(self, tasks: list[Task]) -> None:
        self._queue.extend(tasks)

    def _requeue(self, task: Task) -> None:
        self._queue.appendleft(task)  # a retried task goes first: it blocks the merger

    def next_task(self, worker_id: int) -> Task | None:
        return self._handed(worker_id, self._queue.popleft()) if self._queue else None

    def pending(self) -> int:
        return len(self._queue)
