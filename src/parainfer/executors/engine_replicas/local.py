"""Generation engine replicas as worker processes on this machine (spawned, without the
driver's main module), one engine each.

Each process runs ``host.replica_process_main``: commands go to it on one pipe, its events come
back on another, of which it holds the only write end (EOF: it died).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import threading
from typing import Any

from parainfer.executors.engine_replicas.handles import OnEvent, ReplicaExited, ReplicaOutput
from parainfer.executors.engine_replicas.host import EngineSpec, replica_process_main
from parainfer.executors.local import default_threads
from parainfer.executors.start_method import start_without_driver_main
from parainfer.executors.worker_env import die_with_parent_env


class LocalReplicas:
    """A ``handles.ReplicaLauncher`` of worker processes on this machine.

    Args:
        spec: the engine to build (``threads`` None: usable cores // workers).
        workers: how many replicas the server runs (for the thread default).
    """

    name = "local"

    def __init__(self, spec: EngineSpec, workers: int) -> None:
        threads = spec.threads or default_threads(workers)
        self.spec = dataclasses.replace(spec, threads=threads)
        start_without_driver_main()  # replicas never re-run the driver's __main__
        self._ctx = mp.get_context("spawn")

    def connect(self) -> None:
        """Nothing to connect to."""

    def start(self, w: int, on_event: OnEvent) -> LocalReplicaHandle:
        """Spawn replica ``w``'s process (see ``handles.ReplicaLauncher.start``)."""
        return LocalReplicaHandle(self._ctx, w, self.spec, on_event)

    def close(self) -> None:
        """Nothing to release (each handle's ``close`` stops its process)."""


class LocalReplicaHandle:
    """A ``handles.ReplicaHandle`` of one worker process (started here, by ``LocalReplicas``)."""

    def __init__(self, ctx: Any, w: int, spec: EngineSpec, on_event: OnEvent) -> None:
        self.w, self.on_event, self.closed = w, on_event, False
        commands_in, self._commands = ctx.Pipe(duplex=False)
        self._events, events_out = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=replica_process_main, args=(w, spec, commands_in, events_out,
                                                                   die_with_parent_env()),
                                name=f"parainfer-replica-{w}", daemon=True)
        self.proc.start()
        commands_in.close()
        events_out.close()  # the worker holds the only write end: EOF means it died
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name=f"parainfer-replica-{w}-reader", daemon=True).start()

    def add(self, request_id: str, prompt: list[int], params: Any) -> None:
        """Raises OSError when the worker is gone (its ``ReplicaExited`` follows)."""
        with self._lock:
            self._commands.send(("add", request_id, prompt, params))

    def abort(self, request_id: str) -> None:
        try:
            with self._lock:
                self._commands.send(("abort", request_id))
        except (OSError, ValueError):  # gone already: nothing left to abort
            pass

    def close(self) -> None:
        self.closed = True
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        for conn in (self._commands, self._events):
            conn.close()

    def _read(self) -> None:
        try:
            while True:
                event = self._events.recv()  # ReplicaReady | ReplicaFailed, then lists of messages
                if isinstance(event, list):
                    self.on_event(ReplicaOutput(event))
                elif not self.closed:
                    self.on_event(event)
        except Exception:  # noqa: BLE001 - EOF (it died), a closed pipe, a message cut short
            pass
        if self.closed:
            return
        self.proc.join(timeout=5)
        self.on_event(ReplicaExited(f"replica {self.w} (pid {self.proc.pid}) exited with code {self.proc.exitcode}"))
