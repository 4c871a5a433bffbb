"""The set-up every worker shares: batch worker processes, Ray actors, engine replicas (process or
actor) and the local forkserver they fork from.

It owns the library defaults of a worker's environment (offline hub, quiet libraries, no
tokenizer threads), the worker's id and thread count (``OMP``/``MKL`` variables, torch's intra-op
pool), a local process's signals (SIGINT is the driver's; the kernel kills it with its parent),
and a predictor's placement (its own thread pool, its device).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from parainfer.platform.devices import worker_device

# Workers never reach a model hub, print no download bars, and leave threading to the executor.
WORKER_ENV_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
DIE_WITH_PARENT = "PARAINFER_DIE_WITH_PARENT"  # "1" in a local worker's env: see enter_worker_process


def die_with_parent_env() -> dict[str, str]:
    """``{DIE_WITH_PARENT: "1"}`` when called on the main thread, else ``"0"``: the entry of the
    environment a local process is started with. The kernel's parent-death signal fires when
    the *thread* that started the process ends, so only the main thread may ask for it."""
    return {DIE_WITH_PARENT: "1" if threading.current_thread() is threading.main_thread() else "0"}


def apply_env_defaults() -> None:
    """Set each of ``WORKER_ENV_DEFAULTS`` in ``os.environ`` unless the variable is set already."""
    for var, value in WORKER_ENV_DEFAULTS.items():
        os.environ.setdefault(var, value)


def prepare_worker_env(worker_id: int, threads: int | None, env: dict[str, str] | None = None) -> None:
    """A worker's environment, before it loads anything: the defaults (``apply_env_defaults``),
    then ``env`` over them, ``PARAINFER_WORKER_ID`` and, when ``threads`` is given,
    ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (read when torch initialises).

    Args:
        worker_id: the worker's index (0..N-1).
        threads: intra-op threads, or None to leave the libraries' default.
        env: variables sent by the driver (None: nothing; Ray passes them as the runtime env).
    """
    apply_env_defaults()
    os.environ.update(env or {})
    os.environ["PARAINFER_WORKER_ID"] = str(worker_id)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)


def enter_worker_process(worker_id: int, threads: int | None, env: dict[str, str]) -> None:
    """First call of a local worker process (batch worker or engine replica): ignore SIGINT (a
    terminal Ctrl-C is the driver's to handle), die with the driver when ``env`` asks for it
    (``die_with_parent_env``), then ``prepare_worker_env(worker_id, threads, env)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if env.get(DIE_WITH_PARENT) == "1":
        die_with_parent()
        if driver_gone():  # it died before the kernel could be asked: nobody would ever stop us
            os._exit(0)
    prepare_worker_env(worker_id, threads, env)


_driver_fd: int | None = None
_driver_ppid: int | None = None


def driver_gone() -> bool:
    """True once this process's driver (multiprocessing's ``parent_process()``: the process
    that started it, also when the OS parent is a forkserver) has exited, a zombie not yet
    reaped included. Linux: a pidfd on the driver, opened at the first call (readable once the
    driver exits, whatever its pid is reused for); elsewhere, or outside multiprocessing: the
    OS parent pid seen at the first call changed. Why not ``os.getppid()`` alone: a worker
    forked by the forkserver just as the driver died is re-parented before it could ask for
    the parent-death signal, and would wait for tasks forever (holding the driver's stderr)."""
    global _driver_fd, _driver_ppid
    if _driver_fd is None and _driver_ppid is None:
        import multiprocessing

        parent = multiprocessing.parent_process()
        _driver_ppid = os.getppid()
        if parent is not None and parent.pid and hasattr(os, "pidfd_open"):
            try:
                _driver_fd = os.pidfd_open(parent.pid)
            except ProcessLookupError:
                return True
            except OSError:  # no pidfd support in this kernel
                pass
    if _driver_fd is not None:
        import select

        return bool(select.select([_driver_fd], [], [], 0)[0])
    return os.getppid() != _driver_ppid


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (even mid-task); a no-op
    elsewhere. The kernel fires on the exit of the parent *thread* that started this process."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def place_predictor(predictor: Any, worker_id: int, threads: int | None) -> None:
    """Before ``predictor.load()``: give a predictor with its own thread pool (a ``threads``
    attribute: translate) ``threads``, and one with a ``device`` attribute its device for this
    worker (``platform.devices.worker_device``: "cuda" spreads the replicas over the GPUs)."""
    if threads and hasattr(predictor, "threads"):
        predictor.threads = threads
    if hasattr(predictor, "device"):
        predictor.device = worker_device(predictor.device, worker_id)


def pin_torch_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when torch is imported already (by the forkserver, or
    by a predictor's load: ``OMP_NUM_THREADS`` came too late for it); nothing when ``threads``
    is None or torch is not imported."""
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
