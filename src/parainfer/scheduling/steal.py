"""``steal``: work stealing. Each worker has its own queue; an idle one steals from the tail of
the most loaded queue.

New tasks go to the queue with the least estimated work (cost model), a worker takes from the
head of its own queue, and a worker whose queue is empty steals from the tail of the queue with
the most estimated work (the randomized-victim version is Blumofe & Leiserson, "Scheduling
multithreaded computations by work stealing", JACM 46(5), 1999; with one driver the most-loaded
victim is known exactly, so no randomness is needed). Tail steals take the work its owner
would reach last.
"""

from __future__ import annotations

from collections import deque

from parainfer.scheduling.base import SchedulingPolicy, Task


class StealPolicy(SchedulingPolicy):
    """Per-worker deques with stealing from the most loaded one."""

    name = "steal"

    def __init__(self, num_workers: int, **kwargs: object):
        super().__init__(num_workers, **kwargs)
        self._queues: list[deque[Task]] = [deque() for _ in range(num_workers)]
        self._queued_s = [0.0] * num_workers
        self.stats["steals"] = 0

    def _cost(self, task: Task) -> float:
        return self.cost.estimate(task.padded_tokens)

    def add_tasks(self, tasks: list[Task]) -> None:
        for task in tasks:
            w = min(range(self.num_workers), key=lambda i: self._queued_s[i] + self.backlog(i))
            self._queues[w].append(task)
            self._queued_s[w] += self._cost(task)

    def _requeue(self, task: Task) -> None:
        w = min(range(self.num_workers), key=lambda i: self._queued_s[i])
        self._queues[w].appendleft(task)
        self._queued_s[w] += self._cost(task)

    def pending(self) -> int:
        return sum(len(q) for q in self._queues)

    def next_task(self, worker_id: int) -> Task | None:
        own = self._queues[worker_id]
        if own:
            task = own.popleft()
            source = worker_id
        else:
            source = max(range(self.num_workers), key=lambda i: (len(self._queues[i]) > 0, self._queued_s[i]))
            if not self._queues[source]:
                return None
            task = self._queues[source].pop()
            self.stats["steals"] += 1
        self._queued_s[source] = max(0.0, self._queued_s[source] - self._cost(task))
        if not self._queues[source]:
            self._queued_s[source] = 0.0
        return self._handed(worker_id, task)
