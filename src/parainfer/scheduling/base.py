"""The scheduling-policy contract: which worker runs which task, and when.

The engine calls, in a loop:

* ``add_tasks(tasks)`` as tasks are created (the input is streamed, so tasks arrive over time);
* ``next_task(worker_id)`` whenever ``worker_id`` has room for another task; the policy
  returns a task to send there, or None to leave the worker alone for now;
* ``on_task_done(worker_id, task, busy_s)`` when a task finishes (measured feedback);
* ``requeue(task)`` when a task must run again (its worker died).

Example (a policy that pulls from one FIFO, i.e. ``dynamic``)::

    policy = make_policy("dynamic", num_workers=2)
    policy.add_tasks(tasks)
    task = policy.next_task(0)   # worker 0 is free: it gets the oldest task
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from parainfer.tasks import Task


class SchedulingPolicy(ABC):
    """Places tasks on workers. Implementations live one per module in this package."""

    name: str = "base"

    def __init__(self, num_workers: int):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers

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

    def requeue(self, task: Task) -> None:
        """Give ``task`` out again (its worker died); default: back in through add_tasks."""
        self.add_tasks([task])
