"""Local workers from a warmed forkserver or from spawn (start-up time): where they come
from, what they inherit, same outputs, and a SIGKILLed worker is still replaced."""

from __future__ import annotations

import os
from multiprocessing import forkserver

import pytest

from parainfer.executors.base import TaskResult, WorkerFailed, WorkerReady
from parainfer.executors.local import LocalExecutor
from parainfer.executors.start_method import choose_start_method
from parainfer.models.python_callable import CallablePredictor
from tests.executors.test_local import collect, task


def test_start_method_comes_from_the_argument_then_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("PARAINFER_START_METHOD", "spawn")
    assert choose_start_method() == "spawn"
    assert choose_start_method("forkserver") == "forkserver"
    monkeypatch.setenv("PARAINFER_START_METHOD", "fork")
    with pytest.raises(ValueError, match="'fork' is not one of forkserver, spawn"):
        choose_start_method()


def _run(method: str, monkeypatch) -> tuple[list[dict], list[dict]]:
    """Start 1 worker by ``method``; outputs of one task before and after a SIGKILL + restart."""
    predictor = CallablePredictor("parainfer.testing:origin")
    predictor.preload_modules = ("colorsys",)  # imported by the forkserver only
    if method == "forkserver":
        forkserver._forkserver._stop()  # noqa: SLF001 - a fresh server, so this preload list applies
    ex = LocalExecutor(predictor, num_workers=1, start_method=method)
    assert ex.start_method == method
    monkeypatch.setenv("PARAINFER_TEST_MARKER", f"set-after-{method}-server-start")  # workers still see it
    ex.start()
    try:
        collect(ex, (WorkerReady,), 1)
        ex.submit(0, task(0, ["a", "bb"]))
        (first,) = collect(ex, (TaskResult,), 1)
        ex.kill(0)
        (failed,) = collect(ex, (WorkerFailed,), 1)
        assert not failed.fatal
        ex.restart(0)
        collect(ex, (WorkerReady,), 1)
        ex.submit(0, task(1, ["ccc"]))
        (second,) = collect(ex, (TaskResult,), 1)
        return first.outputs, second.outputs
    finally:
        ex.shutdown()


def test_forkserver_workers_inherit_the_preload_and_match_spawn_workers(monkeypatch) -> None:
    fork_out, fork_again = _run("forkserver", monkeypatch)
    assert {o["marker"] for o in fork_out + fork_again} == {"set-after-forkserver-server-start"}
    spawn_out, spawn_again = _run("spawn", monkeypatch)
    driver = os.getpid()
    assert all(o["ppid"] != driver and o["preloaded"] for o in fork_out + fork_again)  # forked by the server
    assert all(o["ppid"] == driver and not o["preloaded"] for o in spawn_out + spawn_again)  # spawned by us
    assert all(o["gc"]["enabled"] for o in fork_out + spawn_out)  # preload turned it off only for its imports
    assert all(o["gc"]["frozen"] > 0 for o in fork_out) and all(o["gc"]["frozen"] == 0 for o in spawn_out)
    strip = lambda outs: [o["length"] for o in outs]  # noqa: E731
    assert strip(fork_out) == strip(spawn_out) == [1, 2] and strip(fork_again) == strip(spawn_again) == [3]


def test_parainfer_processes_start_without_the_drivers_main_module() -> None:
    """multiprocessing tells each spawn/forkserver child to re-run the parent's __main__; ours are
    told nothing of it (a script without the __main__ guard, or read from stdin, then works),
    while every other process of the driver keeps the standard behaviour."""
    from multiprocessing import spawn

    from parainfer.executors import start_method

    start_method.start_without_driver_main()
    start_method.start_without_driver_main()  # idempotent: one wrapper, not two
    main_keys = {"init_main_from_name", "init_main_from_path"}
    theirs = spawn.get_preparation_data("Process-7")
    ours = spawn.get_preparation_data(f"{start_method.PROCESS_NAME_PREFIX}worker-0")
    assert main_keys & theirs.keys()  # pytest's own __main__ (a module or a script)
    assert not main_keys & ours.keys()
    rest = lambda data: {k: v for k, v in data.items() if k not in main_keys | {"name"}}  # noqa: E731
    assert rest(ours) == rest(theirs) and ours["sys_path"]  # the workers still get sys.path, cwd, argv
