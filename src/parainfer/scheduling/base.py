"""The scheduling-policy contract: which worker runs which task, and when (docs/scheduling.md).

The driver calls ``add_tasks(tasks)`` as tasks are created (as the input streams),
``next_task(worker_id)`` whenever that worker has room (a task to send there, or None to leave
it alone for now), ``on_task_done(worker_id, task, busy_s)`` when a task finishes (measured
feedback) and ``requeue(task)`` when a task must run again (its worker died). Example::

    policy = make_policy("dynamic", num_workers=2)   # one FIFO
    policy.add_tasks(tasks)
    task = policy.next_task(0)   # worker 0 is free: it gets the oldest task
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from parainfer.scheduling.cost import CostModel


class Task(Protocol):
    """What a policy needs of a task (``executors.base.Task`` is one): its index in the job
    (unique while it is live) and its cost estimate in padded tokens."""

    index: int
    padded_tokens: int


class SchedulingPolicy(ABC):
    """Places tasks on workers. Implementations live one per module in this package.

    The base class keeps what every policy may use: the online :class:`CostModel` and each
    worker's outstanding work (estimated seconds of the tasks handed to it and not finished).
    Subclasses call ``_handed(worker_id, task)`` for each task ``next_task`` returns.
    """

    name: str = "base"

    def __init__(self, num_workers: int, cost: CostModel | None = None):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self.cost = cost or CostModel(num_workers)
        self._outstanding: list[dict[int, float]] = [{} for _ in range(num_workers)]
        self._backlog = [0.0] * num_workers
        self.stats: dict[str, int] = {}

    def backlog(self, worker_id: int) -> float:
        """Estimated seconds of work handed to ``worker_id`` and not finished."""
        return self._backlog[worker_id]

    def _handed(self, worker_id: int, task: Task) -> Task:
        estimate = self.cost.estimate(task.padded_tokens, worker_id)
        self._outstanding[worker_id][task.index] = estimate
        self._backlog[worker_id] += estimate
        return task

    def forget(self, task: Task) -> None:
        """Drop ``task`` from every worker's outstanding work (it was split or given up)."""
        for w, held in enumerate(self._outstanding):
            estimate = held.pop(task.index, None)
            if estimate is not None:
                self._backlog[w] = max(0.0, self._backlog[w] - estimate) if held else 0.0

    @abstractmethod
    def add_tasks(self, tasks: list[Task]) -> None:
        """Accept newly created tasks (in creation order)."""

    @abstractmethod
    def next_task(self, worker_id: int) -> Task | None:
        """The task ``worker_id`` should run next, or None."""

    @abstractmethod
    def pending(self) -> int:
        """Tasks accepted and not yet handed out."""

    def on_task_done(self, worker_id: int, task: Task, busy_s: float) -> None:
        """Feedback: ``task`` took ``busy_s`` seconds of compute on ``worker_id``."""
        self.forget(task)
        self.cost.observe(worker_id, task.padded_tokens, busy_s)

    def requeue(self, task: Task) -> None:
        """Give ``task`` out again (its worker died); it is queued first where the policy can."""
        self.forget(task)
        self._requeue(task)

    def _requeue(self, task: Task) -> None:
        self.add_tasks([task])
