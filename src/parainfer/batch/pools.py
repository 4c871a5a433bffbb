"""Warm worker pools: ``parainfer pool up | down | ls`` and ``parainfer run --pool NAME``.

A pool is a background process (the daemon, ``python -m parainfer.batch.pools DIR``) that starts
N workers with the model loaded (``setup.start_workers``, the jobs' own way, on a local
executor) and keeps them. A job run with ``--pool NAME`` builds its setup as always, then runs
its driver on the pool's workers through ``executors.remote.RemoteExecutor`` (the executor
contract over one authenticated Unix socket) instead of starting its own: no worker process
and no model load in its start-up. One job at a time; a second is refused with the running
job's pid. The batches are a function of the input and the options only, so the output bytes
are those of a run without the pool.

State, per pool, in ``<user cache dir>/parainfer/pools/NAME/`` (``$PARAINFER_POOLS_DIR/NAME``
when set), a folder only the user can read: ``pool.json`` (the pool's settings, pid, start
time, whether its workers are ready), ``pid``, ``sock`` (the socket) and ``token`` (the socket's
key, mode 0600).
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

from parainfer.config import JobConfig
from parainfer.errors import JobError, UsageError
from parainfer.executors.base import WorkerFailed, WorkerReady
from parainfer.platform.user_cache import user_cache_folder

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
# The settings that decide a pool's outputs: a job must ask for the same ones to use it.
MATCH_KEYS = ("task", "model", "dtype", "backend", "device", "max_batch_tokens", "deterministic")
DAEMON_MODULE = "parainfer.batch.pools"
UP_TIMEOUT_S = 900.0  # most seconds ``pool up`` waits for the workers' models to load


def pools_folder() -> Path:
    """The folder holding every pool's state folder. Raises UsageError when the user cache is off."""
    folder = user_cache_folder("pools", "PARAINFER_POOLS")
    if folder is None:
        raise UsageError("PARAINFER_POOLS=0 turns pools off; unset it to use parainfer pool")
    return folder


def pool_dir(name: str) -> Path:
    """The state folder of pool ``name``. Raises UsageError for a name that is not 1-40 of
    letters, digits, '_', '.', '-' (starting with a letter or digit)."""
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"pool name {name!r} is not accepted: 1-40 letters, digits, '_', '.', '-', "
                         "starting with a letter or digit")
    return pools_folder() / name


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "pool.json").read_text())
    except (OSError, ValueError):
        return None


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    tmp = folder / "pool.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, folder / "pool.json")


def daemon_alive(pid: int | None) -> bool:
    """True when process ``pid`` runs and is a pool daemon (not another process that got the pid)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return DAEMON_MODULE.encode() in f.read()
    except OSError:
        return False


def _normal_model(task: str, model: str | None) -> str:
    from parainfer.models.registry import DEFAULT_NAMES

    return DEFAULT_NAMES.get(task, "default") if model in (None, "default") else str(model)


def _settings(config: JobConfig) -> dict[str, Any]:
    values = {k: getattr(config, k) for k in MATCH_KEYS}
    values["model"] = _normal_model(config.task, config.model)
    return values


# -- the commands ------------------------------------------------------------------------------
def pool_up(name: str, config: JobConfig, wait_s: float = UP_TIMEOUT_S) -> dict[str, Any]:
    """Start pool ``name``: ``config.workers`` workers of ``config``'s task, model and settings,
    in a background process that outlives this one; returns once every worker has loaded its
    model, with the pool's state (``pool.json``).

    Raises UsageError when a pool of that name is up or the daemon refused an option (an unknown
    model), JobError when the workers cannot load the
    model (the daemon's last log lines say why) or are not ready within ``wait_s`` seconds."""
    folder = pool_dir(name)
    state = _read_state(folder)
    if state is not None and daemon_alive(state.get("pid")):
        raise UsageError(f"pool {name} is already up (pid {state['pid']}); parainfer pool down {name} stops it")
    shutil.rmtree(folder, ignore_errors=True)  # a pool that is gone leaves its state: start afresh
    folder.mkdir(parents=True, mode=0o700)
    os.chmod(folder, 0o700)
    fd = os.open(folder / "token", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    state = {"name": name, **_settings(config), "workers": config.workers, "ready": False,
             "config": config.model_dump(mode="json")}
    _write_state(folder, state)
    with open(folder / "log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", DAEMON_MODULE, str(folder)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state = _read_state(folder) or state
        if state.get("ready"):
            return state
        if proc.poll() is not None:
            tail = (folder / "log").read_text(errors="replace").strip().splitlines()[-5:]
            shutil.rmtree(folder, ignore_errors=True)
            if proc.returncode == 2 and tail:  # a bad option the daemon found (an unknown model): its one line
                raise UsageError(tail[-1].removeprefix("error: "))
            raise JobError(f"pool {name} did not start (exit code {proc.returncode}): " + " | ".join(tail))
        time.sleep(0.1)
    _stop(proc.pid)
    shutil.rmtree(folder, ignore_errors=True)
    raise JobError(f"pool {name}: its workers were not ready within {wait_s:.0f} s; stopped it")


def _stop(pid: int, grace_s: float = 20.0) -> None:
    """SIGTERM the daemon ``pid`` (it stops its workers), SIGKILL its process group after ``grace_s``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not daemon_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def pool_down(name: str) -> str:
    """Stop pool ``name`` and remove its state; returns the line to print. A pool whose daemon is
    gone has its state removed. Raises UsageError when no pool of that name exists."""
    folder = pool_dir(name)
    state = _read_state(folder)
    if state is None:
        raise UsageError(f"no pool named {name} (parainfer pool ls lists them)")
    pid = state.get("pid")
    if not daemon_alive(pid):
        shutil.rmtree(folder, ignore_errors=True)
        return f"pool {name} was already gone (pid {pid} not running); removed its state"
    _stop(pid)
    # Wait for the daemon process itself to be reaped or gone (it is not our child).
    shutil.rmtree(folder, ignore_errors=True)
    return f"pool {name} stopped (pid {pid})"


def pool_list() -> list[dict[str, Any]]:
    """Every pool: name, task, model, workers, pid, uptime_s (seconds since it started), status
    ("up", "starting", or "gone": its daemon is not running)."""
    folder = pools_folder()
    rows = []
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        state = _read_state(sub)
        if state is None:
            continue
        alive = daemon_alive(state.get("pid"))
        status = "gone" if not alive and state.get("pid") else "up" if state.get("ready") else "starting"
        started = state.get("started")
        rows.append({"name": state["name"], "task": state["task"], "model": state["model"],
                     "workers": state["workers"], "pid": state.get("pid"), "status": status,
                     "uptime_s": round(time.time() - started, 1) if started and alive else None})
    return rows


def run_on_pool(config: JobConfig, name: str) -> dict[str, Any]:
    """Run the job of ``config`` on pool ``name``'s workers; returns the report dict (as
    ``Job.run``). ``config.workers``: 0 or the pool's count.

    Raises UsageError (exit 2, one line) when there is no such pool, its daemon is gone, it is
    still starting, it holds another task/model/setting than the job asks (naming both), another
    job is running on it (naming that job's pid), or the job would run in sharded mode or on
    another executor; otherwise as ``Job.run``."""
    from parainfer.batch.job import Job
    from parainfer.batch.mode import choose_mode
    from parainfer.executors.pool import Workers
    from parainfer.executors.remote import PoolBusy, RemoteExecutor, connect
    from parainfer.io.shards.store import is_dir_output

    folder = pool_dir(name)
    state = _read_state(folder)
    if state is None:
        raise UsageError(f"no pool named {name} (parainfer pool ls lists them; parainfer pool up {name} starts one)")
    if not daemon_alive(state.get("pid")):
        raise UsageError(f"pool {name} is gone (pid {state.get('pid')} is not running); parainfer pool down {name} "
                         f"clears it, parainfer pool up {name} starts it again")
    if not state.get("ready"):
        raise UsageError(f"pool {name} is still starting (its workers are loading the model); try again shortly")
    asked, held = _settings(config), {k: state[k] for k in MATCH_KEYS}
    differ = [k for k in MATCH_KEYS if asked[k] != held[k]]
    if differ:
        raise UsageError(f"pool {name} holds " + ", ".join(f"{k}={held[k]}" for k in differ) + "; this job asks for "
                         + ", ".join(f"{k}={asked[k]}" for k in differ) + " (use another pool, or run without --pool)")
    if config.executor != "local":
        raise UsageError(f"--pool runs on the pool's own workers; drop --executor {config.executor}")
    if config.workers not in (0, None, state["workers"]):
        raise UsageError(f"pool {name} has {state['workers']} workers; this job asks --workers {config.workers} "
                         "(leave --workers out with --pool)")
    update: dict[str, Any] = {"workers": state["workers"], "min_workers": None}
    if config.shard_mode == "auto" and not is_dir_output(config.output):
        update["shard_mode"] = "off"  # record mode: the same output bytes (docs/sharded.md)
    config = config.model_copy(update=update)
    if choose_mode(config) == "sharded":
        raise UsageError("--pool runs jobs in record mode; this job asks for sharded mode (--shard-mode on, or an "
                         "output folder): drop it, or run without --pool")
    job = Job(config)
    try:
        conn, hello = connect(str(folder / "sock"), (folder / "token").read_bytes())
    except PoolBusy as e:
        raise UsageError(f"pool {name} is busy with job {e.pid}; wait for it to end or use another pool") from None
    except (OSError, ConnectionError, EOFError) as e:
        raise UsageError(f"pool {name} does not answer ({e}); parainfer pool down {name} and up again") from None
    executor = RemoteExecutor(conn, hello, name)
    try:
        workers = Workers(executor, ready=set(hello["ready"]), model_info=hello.get("model_info"))
        return job.run(workers)
    finally:
        executor.shutdown()


# -- the daemon --------------------------------------------------------------------------------
class _Daemon:
    """The pool process: starts the workers, then serves one job at a time until SIGTERM."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.state = _read_state(folder) or {}
        self.config = JobConfig(**self.state["config"])
        self.stopping = False
        self.busy_with: int | None = None  # the pid of the job being served
        self.incoming: queue.Queue[Any] = queue.Queue()
        self.given_up: set[int] = set()  # workers whose model cannot load (fatal): not restarted

    def main(self) -> None:
        from parainfer.batch.setup import build_job_predictor, prepare_predictor, start_workers
        from parainfer.executors.pool import wait_ready

        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        (self.folder / "pid").write_text(str(os.getpid()))
        self.state.update(pid=os.getpid(), started=time.time())
        _write_state(self.folder, self.state)
        predictor = build_job_predictor(self.config)
        prepare_predictor(self.config, predictor, self.config.workers)
        self.workers = start_workers(predictor, self.config.workers, self.config.threads_per_worker, self.config)
        try:
            wait_ready(self.workers)
            sock = self.folder / "sock"
            listener = Listener(str(sock), family="AF_UNIX", authkey=(self.folder / "token").read_bytes())
            os.chmod(sock, 0o600)
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
            self.state.update(ready=True, workers=self.workers.num_workers, model_info=self.workers.model_info)
            _write_state(self.folder, self.state)
            self._serve()
        finally:
            self.workers.shutdown()

    def _accept(self, listener: Listener) -> None:
        """Accept connections: greet a second job while one runs with ``busy``, queue the first."""
        while True:
            try:
                conn = listener.accept()
                _, pid = conn.recv()  # ("hello", pid)
            except (OSError, EOFError):
                if self.stopping:
                    return
                continue
            except Exception:  # noqa: BLE001 - a client without the token (AuthenticationError)
                continue
            if self.busy_with is not None:
                conn.send(("busy", self.busy_with))
                conn.close()
                continue
            self.busy_with = pid
            self.incoming.put(conn)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, WorkerReady):
            self.workers.ready.add(event.worker_id)
            self.workers.model_info = event.info
        elif isinstance(event, WorkerFailed):
            self.workers.ready.discard(event.worker_id)
            if event.fatal:
                self.given_up.add(event.worker_id)

    def _serve(self) -> None:
        from parainfer.executors.remote import relay

        executor = self.workers.executor
        while not self.stopping:
            try:
                conn = self.incoming.get(timeout=0.2)
            except queue.Empty:
                conn = None
            if conn is not None:
                hello = {"num_workers": executor.num_workers, "threads": executor.threads,
                         "ready": sorted(self.workers.ready), "model_info": self.workers.model_info,
                         "describe": executor.describe()}
                try:
                    relay(executor, conn, hello, lambda: self.stopping, self._on_event)
                finally:
                    self.busy_with = None
            for event in executor.poll(0):  # between jobs: keep every worker up
                self._on_event(event)
            for w in range(executor.num_workers):
                if w not in self.given_up and not executor.alive(w):
                    executor.restart(w)


def main(argv: list[str]) -> None:
    """The daemon's entry point: ``python -m parainfer.batch.pools STATE_FOLDER``. A bad option
    (UsageError: an unknown model) ends it with its one line and exit code 2, which ``pool_up`` says."""
    try:
        _Daemon(Path(argv[0])).main()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
