"""The Python API with a cheap callable model: order, tables, errors policy, pool reuse, files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import parainfer
from parainfer import RecordsFailed, UsageError

ECHO = "parainfer.testing:echo"


@pytest.fixture(scope="module")
def pool():
    with parainfer.Pool(model=ECHO, workers=2, batch_size=8, bucket_window=64) as p:
        yield p


def varied_texts(n: int) -> list[str]:
    return ["word " * (1 + (i * 37) % 50) + str(i) for i in range(n)]


def test_results_in_input_order_across_many_tasks(pool) -> None:
    texts = varied_texts(600)  # 75+ batches, bucketed by length: they finish out of order
    out = pool.predict(texts)
    assert out == [{"length": len(t)} for t in texts]
    report = pool.last_report
    assert report["records"] == 600 and report["batches"] >= 75  # a task may join several batches
    assert sum(w["tasks"] for w in report["per_worker"]) == report["tasks"]


def test_pool_keeps_workers_between_calls(pool) -> None:
    pool.predict(["warm up"])
    pids = [pool._workers.executor.pid(w) for w in range(2)]
    out = pool.predict(["again", "and again"])
    assert out == [{"length": 5}, {"length": 9}]
    assert [pool._workers.executor.pid(w) for w in range(2)] == pids
    assert all(w["load_s"] == 0.0 for w in pool.last_report["per_worker"])  # nothing loaded this call


def test_wait_ready_then_every_worker_gets_tasks() -> None:
    with parainfer.Pool(model=ECHO, workers=2, batch_size=4) as pool:
        pool.wait_ready()
        assert pool._workers.ready == {0, 1}
        pool.predict(varied_texts(200))
        assert all(w["tasks"] > 0 for w in pool.last_report["per_worker"])  # both ready at the first dispatch


def test_errors_raise_after_the_rest_is_done(pool) -> None:
    texts = ["fine", "", "also fine", None, 42]
    with pytest.raises(RecordsFailed) as info:
        pool.predict(texts)
    err = info.value
    assert [i for i, _ in err.failures] == [1, 3, 4]
    assert "empty text" in err.failures[0][1] and "null text" in err.failures[1][1]
    assert "non-string text" in err.failures[2][1] and "int 42" in err.failures[2][1]
    assert "3 of 5 records failed" in str(err) and "[1] empty text" in str(err)
    assert [r["length"] for r in err.results] == [4, None, 9, None, None]


def test_errors_return_as_rows(pool) -> None:
    out = pool.predict(["fine", "   ", "ok"], errors="return")
    assert out[0] == {"length": 4, "error": None} and out[2] == {"length": 2, "error": None}
    assert out[1]["length"] is None and out[1]["error"].startswith("empty text")


def test_model_failure_is_a_failed_record(monkeypatch) -> None:
    monkeypatch.setenv("PARAINFER_TEST_MARKER", "@@bad@@")
    out = parainfer.predict(["a", "x @@bad@@", "bc"], model="parainfer.testing:raise_on_marker", workers=1,
                            errors="return")
    assert [r["length"] for r in out] == [1, None, 2]
    assert "poison record" in out[1]["error"]


def test_dataframe_gets_result_columns(pool) -> None:
    df = pd.DataFrame({"review": ["good", "", "bad!"], "length": [0, 1, 2]}, index=[10, 20, 30])
    out = pool.predict(df, text_column="review", errors="return")
    assert list(out.columns) == ["review", "input_length", "length", "error"]
    assert list(out.index) == [10, 20, 30]
    assert out["input_length"].tolist() == [0, 1, 2]  # the user's column is kept, renamed
    assert out.loc[10, "length"] == 4 and out.loc[30, "length"] == 4 and pd.isna(out.loc[20, "length"])
    assert "empty text in column 'review'" in out.loc[20, "error"] and out.loc[10, "error"] is None
    assert list(df.columns) == ["review", "length"]  # the input is not changed


def test_arrow_table_gets_result_columns(pool) -> None:
    table = pa.table({"text": ["a", "bb", "ccc"], "k": [1, 2, 3]})
    out = pool.predict(table)
    assert isinstance(out, pa.Table)
    assert out.column_names == ["text", "k", "length"]
    assert out.column("length").to_pylist() == [1, 2, 3]


@pytest.mark.parametrize("call, message", [
    (lambda: parainfer.predict("one text", model=ECHO), "wrap one text in a list"),
    (lambda: parainfer.predict({"text": []}, model=ECHO), "expected a list of texts, a pandas DataFrame"),
    (lambda: parainfer.predict(pd.DataFrame({"t": ["x"]}), model=ECHO), "no text column 'text'; columns found: 't'"),
    (lambda: parainfer.predict(["x"], model=ECHO, errors="ignore"), "errors='ignore'; accepted: 'raise', 'return'"),
    (lambda: parainfer.predict(["x"], model=ECHO, batch_sise=4), "unknown option 'batch_sise'; accepted: "),
    (lambda: parainfer.predict(["x"], model=ECHO, workers=-1), "option workers=-1"),
    (lambda: parainfer.predict(["x"], model=ECHO, max_tokens=4), "apply to task='generate' only"),
    (lambda: parainfer.predict(["x"], model=lambda t: t), "cannot be imported by the worker processes"),
    (lambda: parainfer.predict(["x"], task="summarise"), "unknown task 'summarise'"),
    (lambda: parainfer.Pool(model=ECHO, input="a.jsonl"), "Pool takes no 'input' option"),
])
def test_bad_arguments_are_usage_errors(call, message: str) -> None:
    with pytest.raises(UsageError, match=None) as info:
        call()
    assert message in str(info.value)
    assert isinstance(info.value, parainfer.ParainferError)


def test_closed_pool_refuses_work() -> None:
    pool = parainfer.Pool(model=ECHO, workers=1)
    pool.close()
    pool.close()  # twice is fine
    with pytest.raises(UsageError, match="this Pool is closed"):
        pool.predict(["x"])


def test_run_on_files_returns_the_report(tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.csv"
    src.write_text("".join(json.dumps({"id": f"r{i}", "body": t}) + "\n" for i, t in enumerate(varied_texts(50))))
    report = parainfer.run(src, str(out), model=ECHO, workers=2, text_column="body", batch_size=4)  # a Path or a str
    assert report["records"] == 50 and report["failed_records"] == 0 and report["workers"] == 2
    assert report["tasks"] >= 13 and report["errors_file"] is None
    rows = pd.read_csv(out)
    assert rows["id"].tolist() == [f"r{i}" for i in range(50)]
    assert rows["length"].tolist() == [len(t) for t in varied_texts(50)]
    with pytest.raises(UsageError, match="does not exist"):
        parainfer.run(str(tmp_path / "missing.jsonl"), str(out), model=ECHO)


def test_run_given_data_in_memory_points_to_predict(tmp_path: Path) -> None:
    """A DataFrame given to run (which reads files) is named by its type and size, never by its
    repr (hundreds of lines), and the message says which call takes data in memory."""
    df = pd.DataFrame({"text": [f"review {i}" for i in range(500)], "stars": range(500)})
    out = tmp_path / "o.jsonl"
    with pytest.raises(UsageError) as info:
        parainfer.run(df, str(out), model=ECHO)
    assert str(info.value) == ("parainfer.run takes a file path as input, got a pandas DataFrame of 500 rows x 2 "
                               "columns: for data in memory call parainfer.predict(data, ...), which returns the results")
    with pytest.raises(UsageError, match=r"as output, got a list of 1 item: give the path of the file to write"):
        parainfer.run(str(tmp_path / "in.jsonl"), ["o.jsonl"], model=ECHO)
    with pytest.raises(UsageError) as info:
        parainfer.predict(["x"], model=ECHO, batch_size=df)  # any option: the value's type and size, not its repr
    assert str(info.value).startswith("option batch_size") and "a pandas DataFrame of 500 rows x 2 columns" in str(info.value)
    assert "review 499" not in str(info.value) and not out.exists()


def test_script_with_main_guard_and_its_own_function(tmp_path: Path) -> None:
    """A user's script: the model is a function of the script itself, the call under the guard."""
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent("""
        import parainfer

        def shout(texts):
            return [{"upper": t.upper()} for t in texts]

        if __name__ == "__main__":
            print(parainfer.predict(["abc", "de"], model=shout, workers=2))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[{'upper': 'ABC'}, {'upper': 'DE'}]"
