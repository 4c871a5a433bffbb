"""LocalExecutor with real processes: readiness, results, per-record errors, worker death."""

from __future__ import annotations

import time

from parainfer.executors.base import TaskResult, WorkerFailed, WorkerReady
from parainfer.executors.local import LocalExecutor
from parainfer.models.python_callable import CallablePredictor
from parainfer.executors.base import Task


def collect(executor: LocalExecutor, kinds: tuple, n: int, timeout: float = 60) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += [e for e in executor.poll(0.1) if isinstance(e, kinds)]
    return got


def task(index: int, texts: list[str]) -> Task:
    return Task(index=index, seqs=list(range(len(texts))), texts=texts, tokens=len(texts), padded_tokens=len(texts))


def test_workers_load_run_tasks_and_quarantine_bad_records() -> None:
    ex = LocalExecutor(CallablePredictor("parainfer.testing:raise_on_marker"), num_workers=2)
    ex.start()
    try:
        ready = collect(ex, (WorkerReady,), 2)
        assert sorted(e.worker_id for e in ready) == [0, 1]
        ex.submit(0, task(0, ["a", "bb"]))
        ex.submit(1, task(1, ["ccc", "x @@crash@@", "dddd"]))
        results = {r.task_index: r for r in collect(ex, (TaskResult,), 2)}
        assert results[0].outputs == [{"length": 1}, {"length": 2}] and results[0].errors == []
        assert results[1].outputs[0] == {"length": 3} and results[1].outputs[1] is None
        assert results[1].errors[0][0] == 1 and "poison record" in results[1].errors[0][1]
        assert results[1].t_start <= results[1].t_end
        assert ex.in_flight(0) == ex.in_flight(1) == 0
    finally:
        ex.shutdown()


def test_killed_worker_is_reported_with_its_tasks_and_restarts() -> None:
    ex = LocalExecutor(CallablePredictor("parainfer.testing:crash_on_marker"), num_workers=1)
    ex.start()
    try:
        collect(ex, (WorkerReady,), 1)
        ex.submit(0, task(7, ["@@crash@@"]))
        (failed,) = collect(ex, (WorkerFailed,), 1)
        assert failed.worker_id == 0 and [t.index for t in failed.tasks] == [7]
        assert "-9" in failed.reason
        ex.restart(0)
        collect(ex, (WorkerReady,), 1)
        ex.submit(0, task(8, ["fine"]))
        (res,) = collect(ex, (TaskResult,), 1)
        assert res.outputs == [{"length": 4}] and ex.restarts == 1
    finally:
        ex.shutdown()


def test_a_worker_that_dies_while_loading_is_given_up_after_three_tries(tmp_path) -> None:
    """Restarting a worker whose model kills it during load would loop forever: the third death
    in a row before WorkerReady is fatal, and the CLI says so in one line (exit 3)."""
    import subprocess
    import sys

    executor = LocalExecutor(CallablePredictor("tests.executors.load_crash_model:echo"), 1, 1)
    executor.start()
    failures = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (failures and failures[-1].fatal):
        for ev in executor.poll(0.5):
            assert isinstance(ev, WorkerFailed)
            failures.append(ev)
            if not ev.fatal:
                executor.restart(ev.worker_id)
    executor.shutdown()
    assert [f.fatal for f in failures] == [False, False, True]
    assert "died 3 times in a row while loading" in failures[-1].reason and "code -9" in failures[-1].reason

    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "hi"}\n')
    proc = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(src), "-o", str(tmp_path / "o.jsonl"),
                           "--model", "tests.executors.load_crash_model:echo", "--workers", "1", "-q"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 3, proc.stderr
    assert "died 3 times in a row while loading" in proc.stderr and "Traceback" not in proc.stderr


def test_the_reason_a_worker_is_given_up_follows_how_it_ended() -> None:
    """Only a SIGKILL suggests fewer workers (the out-of-memory killer); an exit code without a
    message (the process failed while starting, before the model's load ran) is not called a
    model that failed to load."""
    from parainfer.executors.local import load_deaths_reason

    killed = load_deaths_reason(1, 3, -9)
    assert killed.startswith("model failed to load: worker 1 died 3 times in a row while loading it")
    assert "code -9, killed by SIGKILL" in killed and "try fewer --workers" in killed
    segv = load_deaths_reason(0, 3, -11)
    assert "killed by SIGSEGV" in segv and "fewer --workers" not in segv
    exited = load_deaths_reason(0, 3, 1)
    assert exited.startswith("worker 0 exited 3 times in a row before its model was loaded (last: exit code 1)")
    assert "model failed to load" not in exited and "fewer --workers" not in exited and "stderr" in exited
