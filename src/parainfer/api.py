"""The Python API: ``run`` for files, ``predict`` and ``Pool`` for data in memory (see docs/api.md).

Everything goes through the job the command line uses (``batch.job.Job``), with the same
validated options (``config.JobConfig``): ``run`` is ``parainfer run`` as a function; a
``Pool`` starts N workers once (``batch.setup.start_workers``) and runs each ``predict`` call as a
job over in-memory records (``io.memory``) on those workers; ``predict`` is a one-call pool.
Workers are processes that never import the caller's main module, so the API works the same from
a script (with or without ``if __name__ == "__main__":``), ``python -c``, stdin and a notebook; a
model function defined there is sent to the workers by value (``models.python_callable``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import weakref
from typing import Any, Callable

import pydantic

from parainfer.config import JobConfig
from parainfer.errors import RecordsFailed, UsageError
from parainfer.executors.start_method import PROCESS_NAME_PREFIX
from parainfer.io.memory import MEMORY, MemoryStore, memory_source
from parainfer.io.tables import describe

ERROR_POLICIES = ("raise", "return")
GENERATION_OPTIONS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "chat", "response_format",
                      "logprobs", "prefix_cache", "engine")
_INDEX, _TEXT = "__parainfer_index__", "__parainfer_text__"  # internal row keys of in-memory jobs


def run(input: str, output: str, task: str = "classify", model: str | Callable | None = None, workers: int = 0,
        progress: bool = False, **options: Any) -> dict[str, Any]:
    """Run a batch job on a file, like ``parainfer run INPUT -o OUTPUT``.

    Args:
        input: a .jsonl/.csv/.parquet/.txt file. output: a .jsonl/.csv/.parquet file (each a
            str or an ``os.PathLike``; data in memory goes to ``predict``).
        task: "classify" | "embed" | "generate". model: as ``--model`` (None = the built-in
            model of the task), or a function defined at the top level of a module or of the
            main script or notebook.
        workers: worker processes (0 = one per core).
        progress: show the progress bar (off by default in the API).
        options: any other ``parainfer run`` option by its field name (batch_size, policy,
            dtype, device, text_column, id_column, report, errors (the errors-file path),
            max_retries, task_timeout, overwrite, ...; for task="generate" also max_tokens,
            temperature, top_p, top_k, seed, stop, chat).

    Returns:
        The run report (dict; see docs/timing.md): records, failed_records, errors_file, wall_s,
        the timing model (t_create_s, t_schedule_s, t_execute_s, t_wait_s, speedup ...).
        Failed records are in the errors file, as with the CLI; nothing is raised for them.

    Raises:
        UsageError: a bad option value, input file or model; an input or output that is not a
            path (a DataFrame, a list: the message names its type and size and points to
            ``predict``). JobError: the model cannot run.
    """
    from parainfer.batch.job import Job

    _check_not_bootstrapping()
    input, output = _file_argument("input", input), _file_argument("output", output)
    config = job_config(input, output, task, model, workers, progress, options)
    return Job(config).run()


def predict(data: Any, task: str = "classify", model: str | Callable | None = None, workers: int = 0,
            text_column: str = "text", errors: str = "raise", progress: bool = False, **options: Any) -> Any:
    """Run the model on data in memory, on N workers, and return the results in input order.

    Starts the workers, runs one job and stops them; to keep the model loaded between calls
    use ``Pool``. Arguments are those of ``Pool`` and ``Pool.predict``.

    Returns:
        For a list of texts, a list of result dicts (``{"label": ..., "score": ...}`` for
        classify, ``{"embedding": array}`` for embed, ...). For a pandas DataFrame or a pyarrow
        Table, the same kind of table with the result columns added (see ``Pool.predict``).
    """
    from parainfer.io.tables import texts_of

    _check_errors_policy(errors)
    texts_of(data, text_column)  # bad data is reported before any worker starts
    with Pool(task=task, model=model, workers=workers, **options) as pool:
        return pool.predict(data, text_column=text_column, errors=errors, progress=progress)


class Pool:
    """N workers, each holding one replica of the model, kept loaded between ``predict`` calls.

    Use as a context manager (``with parainfer.Pool(...) as pool:``) or call ``close()``.
    The workers start loading at once; the first ``predict`` waits for the first of them.

    Args:
        task, model, workers: as in ``run``.
        options: other job options (batch_size, policy, dtype, device, threads_per_worker,
            max_retries, task_timeout, ...; generation options for task="generate").

    Attributes:
        num_workers: N. last_report: the run report (dict) of the last ``predict`` call.

    Raises:
        UsageError: a bad option or model (before any worker starts).
    """

    def __init__(self, task: str = "classify", model: str | Callable | None = None, workers: int = 0,
                 **options: Any):
        from parainfer.batch.setup import build_job_predictor, start_workers, worker_count

        _check_not_bootstrapping()
        for key in ("input", "output", "quiet"):
            if key in options:
                raise UsageError(f"Pool takes no {key!r} option (use parainfer.run for files; progress= on predict)")
        config = job_config(MEMORY, MEMORY, task, model, workers, False, options)
        predictor = build_job_predictor(config)
        n = worker_count(config, predictor)
        predictor.max_batch_tokens = config.max_batch_tokens  # workers hold it exactly
        predictor.deterministic = config.deterministic  # canonical widths (models.hf_common)
        self._predictor = predictor
        self._workers = start_workers(predictor, n, config.threads_per_worker, config)
        n = self._workers.num_workers  # fewer when N replicas do not fit in memory
        self._config = config.model_copy(update={"workers": n, "id_column": _INDEX, "text_column": _TEXT})
        self.num_workers = n
        self.last_report: dict[str, Any] | None = None
        self._finalizer = weakref.finalize(self, self._workers.shutdown)

    def predict(self, data: Any, text_column: str = "text", errors: str = "raise", progress: bool = False) -> Any:
        """Run the model on ``data`` with this pool's workers; results in input order.

        Args:
            data: a list of texts, a pandas DataFrame or a pyarrow Table.
            text_column: the table column holding the texts (tables only).
            errors: "raise": when records fail (an empty or non-string text, a model error),
                raise one ``RecordsFailed`` listing them (index, reason) after all the other
                records are done (its ``.results`` holds what "return" would have returned);
                "return": return the failures as rows, with None results and the reason in an
                ``error`` column (None for records that succeeded).
            progress: show a progress bar (on a terminal).

        Returns:
            A list of texts gives a list of dicts, one per text (with "return", each also has
            an "error" key). A DataFrame or Table gives a copy with the result columns appended
            (an input column named like a result column is kept as ``input_<name>``, as in
            output files).

        Raises:
            UsageError: bad ``data``, ``text_column`` or ``errors``. RecordsFailed: see errors.
            JobError: the model cannot run (the pool is closed then).
        """
        from parainfer.io.tables import attach_results, texts_of

        _check_errors_policy(errors)
        if not self._finalizer.alive or self._workers.broken:
            raise UsageError("this Pool is closed (close() was called, or a job on it was interrupted); "
                             "create a new one")
        texts = texts_of(data, text_column)
        results, failures = self._run(texts, progress)
        where = f" in column {text_column!r}" if not isinstance(data, (list, tuple)) else ""
        failures = [(i, reason.replace(f" in column {_TEXT!r}", where)) for i, reason in failures]
        out = attach_results(data, results, failures, with_errors=errors == "return")
        if failures and errors == "raise":
            raise RecordsFailed(failures, len(texts), attach_results(data, results, failures, with_errors=True))
        return out

    def _run(self, texts: list[Any], progress: bool) -> tuple[list[dict[str, Any] | None], list[tuple[int, str]]]:
        """One job over ``texts``: (result dict or None per text, sorted (index, reason) failures)."""
        from parainfer.batch.job import Job

        store = MemoryStore()
        config = self._config.model_copy(update={"quiet": not progress})
        job = Job(config, self._predictor, source=memory_source(texts, _TEXT, _INDEX), store=store)
        try:
            self.last_report = job.run(self._workers)
        finally:
            if self._workers.broken:
                self.close()
        results: list[dict[str, Any] | None] = [None] * len(texts)
        for row in store.sink.rows:
            results[row[_INDEX]] = {k: v for k, v in row.items() if k not in (_INDEX, _TEXT)}
        failures = sorted((e.seq, e.reason) for e in store.errors.errors)
        return results, failures

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until every worker has loaded its model replica (then a ``predict`` times
        compute only). Raises JobError when the model cannot load (the pool is closed then)."""
        from parainfer.batch.job import wait_ready
        from parainfer.errors import JobError

        try:
            wait_ready(self._workers, timeout_s)
        except JobError:
            self.close()
            raise

    def close(self) -> None:
        """Stop the workers. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def job_config(input: str, output: str, task: str, model: str | Callable | None, workers: int, progress: bool,
               options: dict[str, Any]) -> JobConfig:
    """The validated JobConfig of an API call; raises UsageError naming the bad option and value."""
    options = dict(options)
    gen = {k: options.pop(k) for k in GENERATION_OPTIONS if k in options}
    if gen and task != "generate":
        raise UsageError(f"option(s) {', '.join(gen)} apply to task='generate' only (task is {task!r})")
    if task == "generate":
        gen = {"max_tokens": 128, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": None, "stop": [],
               "chat": True, **options.pop("generation", {}), **gen}  # the CLI's defaults
    try:
        return JobConfig(input=input, output=output, task=task, model=model_spec(model), workers=workers,
                         quiet=not progress, generation=gen, **options)
    except pydantic.ValidationError as e:
        raise _usage_error(e) from None


def model_spec(model: str | Callable | None) -> str | None:
    """``model`` as a ``--model`` string: a function becomes "module:qualified_name" (a function
    of the main script or notebook: "__main__:name", sent to the workers by value).

    Raises UsageError for a function that cannot be named so: a lambda or a nested function.
    """
    if model is None or isinstance(model, str):
        return model
    if not callable(model):
        raise UsageError(f"model={_short(model)} is a {type(model).__name__}; expected a name, a path, "
                         "'module:function' or a function")
    module, name = getattr(model, "__module__", None), getattr(model, "__qualname__", "")
    if not module or not name or "<" in name:
        raise UsageError(f"model function {name or _short(model)} cannot be imported by the worker processes (a "
                         "lambda or a nested function); define it with def at the top level of your script, "
                         "notebook or a .py module")
    return f"{module}:{name}"


def _usage_error(e: pydantic.ValidationError) -> UsageError:
    first = e.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, UsageError):  # raised by one of our validators: its message says it all
        return cause
    name = ".".join(map(str, first["loc"]))
    if first["type"] == "extra_forbidden":
        accepted = [f for f in JobConfig.model_fields if f not in ("input", "output", "quiet", "generation")]
        return UsageError(f"unknown option {name!r}; accepted: {', '.join(accepted + list(GENERATION_OPTIONS))}")
    return UsageError(f"option {name}={_short(first.get('input'))}: {first['msg']}")


def _file_argument(name: str, value: Any) -> str:
    """``run``'s ``input``/``output`` as a str; raises UsageError for anything but a path."""
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    hint = ("for data in memory call parainfer.predict(data, ...), which returns the results" if name == "input"
            else "give the path of the file to write; parainfer.predict(data, ...) returns the results instead")
    raise UsageError(f"parainfer.run takes a file path as {name}, got {describe(value)}: {hint}")


def _short(value: Any) -> str:
    """``repr(value)`` when it is one short line, else its type and size (a DataFrame's repr is
    many lines and can be huge)."""
    text = repr(value)
    return text if len(text) <= 80 and "\n" not in text else describe(value)


def _check_errors_policy(errors: str) -> None:
    if errors not in ERROR_POLICIES:
        raise UsageError(f"errors={errors!r}; accepted: {', '.join(map(repr, ERROR_POLICIES))}")


def _check_not_bootstrapping() -> None:
    """Raise a clear UsageError when called inside one of parainfer's own worker processes (by a
    model function, or by a module the worker imports for ``module:function`` that calls the API
    when imported): a worker does not start workers."""
    if mp.parent_process() is not None and mp.current_process().name.startswith(PROCESS_NAME_PREFIX):
        raise UsageError("the parainfer API was called inside a parainfer worker process (by the model function, "
                         "or by a module the worker imported for it): if that module calls the API when imported, "
                         "put the call under `if __name__ == \"__main__\":`, or pass the function itself as model=")
