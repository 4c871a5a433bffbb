"""The Python API from wherever a user runs Python: a script without the ``__main__`` guard, a
script read from stdin (``python3 - <<EOF``), ``python -c``. Each is a real interpreter started
here, with 2 real worker processes; the workers never re-run the user's main module, and a model
function defined in it travels to them by value."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# No `if __name__ == "__main__":` guard. It prints one line when it runs, so a worker that ran
# it again would show (its copy would also call predict, recursively).
USER_CODE = textwrap.dedent("""
    import os
    import parainfer

    print("main module ran in", os.getpid())

    def shout(texts):
        return [{"upper": t.upper()} for t in texts]

    print(parainfer.predict(["abc", "de"], model="parainfer.testing:echo", workers=2))
    print(parainfer.predict(["abc", "de", "f"], model=shout, workers=2, batch_size=1))
""")
EXPECTED_OUTPUT = ["[{'length': 3}, {'length': 2}]", "[{'upper': 'ABC'}, {'upper': 'DE'}, {'upper': 'F'}]"]


def _python(args: list[str], tmp_path: Path, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, **env})


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("main module ran in"), proc.stdout  # by the driver only
    assert lines[1:] == EXPECTED_OUTPUT
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_a_script_without_the_main_guard(tmp_path: Path, start_method: str) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(USER_CODE)
    _check(_python([str(script)], tmp_path, PARAINFER_START_METHOD=start_method))


def test_a_script_read_from_stdin(tmp_path: Path) -> None:
    """``python3 - <<EOF ... EOF``: the main module's path is '<stdin>', which is no file."""
    _check(_python(["-"], tmp_path, stdin=USER_CODE))


def test_python_dash_c(tmp_path: Path) -> None:
    _check(_python(["-c", USER_CODE], tmp_path))


def test_a_main_function_that_cannot_be_sent_is_a_usage_error(tmp_path: Path) -> None:
    """A model function whose globals cannot be pickled (a lock) is refused in the driver, before
    any worker starts, with the function named and the way out."""
    code = textwrap.dedent("""
        import threading
        import parainfer

        LOCK = threading.Lock()

        def locked(texts):
            with LOCK:
                return [len(t) for t in texts]

        try:
            parainfer.predict(["a"], model=locked, workers=2)
        except parainfer.UsageError as e:
            print("UsageError:", e)
    """)
    proc = _python(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("UsageError: model '__main__:locked' cannot be sent to the worker processes")
    assert "lock" in proc.stdout and "define it in a .py module" in proc.stdout


def test_a_model_module_that_calls_the_api_when_imported_is_named(tmp_path: Path) -> None:
    """``model="selfcall:shout"`` from a script without the guard: each worker imports the module
    to find the function, which calls the API again; that call is refused in the worker and the
    job fails with that reason (not as a worker that kept dying while loading)."""
    (tmp_path / "selfcall.py").write_text(textwrap.dedent("""
        import parainfer

        def shout(texts):
            return [t.upper() for t in texts]

        print(parainfer.predict(["abc"], model="selfcall:shout", workers=2))
    """))
    proc = _python(["selfcall.py"], tmp_path)
    assert proc.returncode == 1
    assert re.search(r"parainfer\.errors\.JobError: worker [01]: model failed to load: UsageError: the parainfer API "
                     r"was called inside a parainfer worker process", proc.stderr), proc.stderr
    assert "`if __name__ == \"__main__\":`" in proc.stderr
    assert "times in a row" not in proc.stderr and "fewer --workers" not in proc.stderr
