"""The command line: ``parainfer run | datasets | train | train-head | export-onnx | backends | report | simulate | serve | pool``.

Bad input (a missing file, an unknown option value) prints one line naming the bad value and
what is accepted, and exits with code 2; a job where some records failed exits with 1; a job
that cannot go on (the model does not load) exits with 3; a file it cannot write (a full disk)
with 4; an interrupted one with 130.
"""

from __future__ import annotations

import shutil
import sys
import types
from typing import Any, Optional

import typer

from parainfer.errors import JobError, StorageError, UsageError



# Narrower than this, rich's help panels cut long option names short (``--threads-per-wor…``).
RICH_HELP_MIN_COLUMNS = 100


def _help_markup() -> str | None:
    """Rich's panels for ``--help`` on a terminal of at least ``RICH_HELP_MIN_COLUMNS`` columns
    (``$COLUMNS`` or the terminal's width); click's plain help otherwise, and whenever stdout is a
    pipe or a file (``parainfer run --help | grep``), where rich would lay out for 80 columns and
    cut option names short. Plain help wraps the text and keeps every name whole."""
    if not sys.stdout.isatty():
        return None
    return "rich" if shutil.get_terminal_size().columns >= RICH_HELP_MIN_COLUMNS else None


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=_help_markup())
datasets_app = typer.Typer(no_args_is_help=True, help="Real datasets fetched from the package registry.",
                           rich_markup_mode=_help_markup())
app.add_typer(datasets_app, name="datasets")


@app.command()
def run(
    input: str = typer.Argument(..., metavar="INPUT", help="input .jsonl .csv .parquet .txt, or - for JSONL on stdin"),
    output: str = typer.Option(..., "--output", "-o", metavar="PATH", help="output .jsonl .csv .parquet, - for stdout, or DIR/ to keep "
                                                          "sharded mode's parts in a folder (docs/sharded.md)"),
    task: str = typer.Option("classify", help="classify | embed | generate | translate"),
    model: Optional[str] = typer.Option(None, help="built-in name, local HF directory, or module:function"),
    workers: str = typer.Option("0", metavar="N|MIN:MAX|auto", help="worker processes N (0 or auto = one per core; with --device cuda one per "
                                "GPU; translate: one worker with a thread per core), or MIN:MAX: elastic on "
                                "--executor ray (start with room for MIN, grow to MAX as nodes join, retire "
                                "workers of drained nodes; auto there = 1:one per core); local processes start MAX"),
    batch_size: str = typer.Option("64", help="most records per task, or 'auto' to tune it from measured throughput"),
    max_batch_tokens: int = typer.Option(8192, help="most padded tokens (batch x longest) per task"),
    bucket_window: int = typer.Option(2048, help="records sorted by length together (1 = no bucketing)"),
    policy: str = typer.Option("dynamic", help="scheduling policy: static | dynamic | lpt | steal"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 (float32/bfloat16 with --backend auto: "
                              "torch in that dtype)"),
    backend: str = typer.Option("auto", help="embed/classify: auto (the fastest accurate path, measured once per "
                                "model and machine and cached) | torch | onnx | onnx-int8 | openvino"),
    recalibrate: bool = typer.Option(False, help="--backend auto: measure the paths again (docs/models.md)"),
    device: str = typer.Option("cpu", help="cpu | cuda (replicas spread over the GPUs) | cuda:N | auto"),
    threads_per_worker: Optional[int] = typer.Option(None, help="threads per worker (default cores / workers)"),
    text_column: str = typer.Option("text", help="column holding the text"),
    id_column: str = typer.Option("id", help="column holding the record id"),
    report: Optional[str] = typer.Option(None, metavar="PATH", help="write the JSON run report here"),
    errors: Optional[str] = typer.Option(None, metavar="PATH", help="errors file (default: next to the output)"),
    max_retries: int = typer.Option(3, help="retries of a task whose worker died (or timed out)"),
    task_timeout: Optional[float] = typer.Option(None, help="seconds a task (one batch; sharded mode: each batch "
                                                           "of a shard) may run before its worker is killed and the "
                                                           "task retried (default: no limit)"),
    overwrite: bool = typer.Option(False, help="start over even if OUTPUT has a checkpoint of another job"),
    checkpoint_every: float = typer.Option(2.0, help="seconds between checkpoint commits"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar or summary"),
    max_tokens: int = typer.Option(128, help="generate: most new tokens per record"),
    temperature: float = typer.Option(0.0, help="generate: sampling temperature (0 = greedy)"),
    top_p: float = typer.Option(1.0, help="generate: nucleus sampling mass"),
    top_k: int = typer.Option(0, help="generate: keep the k most likely tokens (0 = all)"),
    seed: Optional[int] = typer.Option(None, help="generate: sampling seed (per record: seed + hash of its text)"),
    stop: Optional[list[str]] = typer.Option(None, help="generate: stop string (repeatable)"),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="generate: apply the chat template to each prompt"),
    json_schema: Optional[str] = typer.Option(None, metavar="PATH", help="generate: JSON schema file; every output is JSON valid "
                                              "for it (token masks, xgrammar)"),
    logprobs: Optional[int] = typer.Option(None, help="generate: add logprobs / cumulative_logprob columns with "
                                           "this many top tokens per position (0..20)"),
    prefix_cache: bool = typer.Option(True, "--prefix-cache/--no-prefix-cache",
                                      help="generate: share the KV cache of common prompt prefixes (automatic "
                                      "prefix caching; outputs are the same either way)"),
    engine: str = typer.Option("auto", help="generate: parainfer (own engine) | llamacpp (a .gguf file through "
                               "llama.cpp) | vllm (GPU) | auto (llamacpp for .gguf when installed, else parainfer)"),
    source_lang: str = typer.Option("en", help="translate: language of the input texts (en | pt)"),
    target_lang: str = typer.Option("pt", help="translate: language to translate into (pt | en)"),
    executor: str = typer.Option("local", help="local (worker processes) | ray (actors on a Ray cluster)"),
    address: Optional[str] = typer.Option(None, help="ray: cluster HOST:PORT (default: RAY_ADDRESS, else a "
                                                     "local Ray started for the job)"),
    cpus_per_worker: float = typer.Option(1.0, help="ray: CPUs each worker actor asks for"),
    gpus_per_worker: float = typer.Option(0.0, help="ray: GPUs each worker actor asks for"),
    input_format: str = typer.Option("auto", "--format", help="auto | records | openai-batch (an OpenAI batch "
                                     "file: one result line per request; auto recognises it by its first line)"),
    trust: bool = typer.Option(False, help="load a model directory's skops file even if it holds types skops "
                               "does not trust by default (only for files from a trusted source)"),
    shard_mode: str = typer.Option("auto", help="auto | on | off: workers read shards of the input file themselves "
                                   "(auto: splittable inputs of 64 MiB and more; docs/sharded.md)"),
    deterministic: bool = typer.Option(True, "--deterministic/--no-deterministic",
                                       help="embed/classify: compute each text at a padded width of its own "
                                       "(its length rounded up to a multiple of 8, 16 or 32), so its output bits never depend on "
                                       "the records batched with it (equal to `serve`'s; docs/serving.md)"),
    dashboard: Optional[str] = typer.Option(None, metavar="[HOST:]PORT", help="serve a live dashboard of the job "
                                            "at http://HOST:PORT/dashboard (HOST default 127.0.0.1; with "
                                            "PARAINFER_API_KEY set it needs that key; docs/dashboard.md)"),
    pool: Optional[str] = typer.Option(None, metavar="NAME", help="run on the warm workers of pool NAME "
                                       "(`parainfer pool up`; docs/pools.md) instead of starting workers"),
) -> None:
    """Run a batch job: every input record's result, in input order, computed by N workers."""
    options = dict(locals())
    pool_name = options.pop("pool")
    config = _job_config(**options)
    from parainfer.batch.job import Job
    from parainfer.batch.recovery import Interrupted

    try:
        if pool_name is not None:
            from parainfer.batch.pools import run_on_pool

            result = run_on_pool(config, pool_name)
        else:
            result = Job(config).run()
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        raise typer.Exit(130) from None
    raise typer.Exit(_tell_result(result, output, quiet))


def _job_config(*, task: str, batch_size: str, checkpoint_every: float, max_tokens: int, temperature: float,
                top_p: float, top_k: int, seed: Optional[int], stop: Optional[list[str]], chat: bool,
                json_schema: Optional[str], logprobs: Optional[int], prefix_cache: bool, engine: str, source_lang: str,
                target_lang: str, **same: Any) -> Any:
    """The ``JobConfig`` of ``parainfer run``'s options (its parameters, by name): the generate and
    translate options grouped, ``same``: the options that are JobConfig fields of the same name.
    Raises UsageError for a bad --batch-size or --json-schema file, pydantic's error for a bad field."""
    from parainfer.config import JobConfig
    from parainfer.dashboard import parse_address

    if same.get("dashboard") is not None:  # a bad address is refused before any model is built
        parse_address(same["dashboard"])
    same["workers"], same["min_workers"] = parse_workers(same["workers"])
    return JobConfig(task=task, batch_size=_batch_size(batch_size),
                     generation=dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                     seed=seed, stop=list(stop or []), chat=chat,
                                     prefix_cache=prefix_cache, engine=engine, **_structured_options(json_schema, logprobs))
                     if task == "generate" else {},
                     checkpoint_every_s=checkpoint_every,
                     translation=dict(source_lang=source_lang, target_lang=target_lang) if task == "translate" else {},
                     **same)


def parse_workers(value: str) -> tuple[int, int | None]:
    """``--workers``: "N" -> (N, None); "auto" -> (0, 1): the default count, elastic from 1 on
    Ray; "MIN:MAX" -> (MAX, MIN).

    Raises:
        UsageError: anything else, or not 1 <= MIN <= MAX.
    """
    text = value.strip().lower()
    if text == "auto":
        return 0, 1
    low, sep, high = text.partition(":")
    try:
        numbers = (int(low), int(high)) if sep else (int(low),)
    except ValueError:
        numbers = ()
    if not numbers or any(n < 0 for n in numbers) or (sep and not 1 <= numbers[0] <= numbers[1]):
        raise UsageError(f"--workers {value!r}: expected a count N (0 = one per core), auto, or MIN:MAX with "
                         "1 <= MIN <= MAX (elastic workers on --executor ray)")
    return (numbers[1], numbers[0]) if sep else (numbers[0], None)


def _tell_result(result: dict[str, Any], output: str, quiet: bool) -> int:
    """Print a finished job's outcome on stderr (already complete; else, unless ``quiet``, the
    summary and the failed records); returns the exit code: 1 when records failed, else 0."""
    from parainfer.batch.job import print_summary

    failed = result["failed_records"] + result.get("resumed_failed_records", 0)
    if result.get("already_complete"):
        print(f"{output} is already complete ({result['resumed_records']:,} input records, checkpoint "
              f"{result['checkpoint']}); nothing to do (--overwrite to run again)", file=sys.stderr)
    elif not quiet:
        print_summary(result, sys.stderr)
        if failed:
            print(f"{failed} record{'' if failed == 1 else 's'} failed; see {result['errors_file']}", file=sys.stderr)
    return 1 if failed else 0


def _structured_options(json_schema: str | None, logprobs: int | None) -> dict:
    """generate: ``response_format`` from --json-schema FILE and ``logprobs``, when given."""
    from parainfer.generation.grammar import load_schema_file

    out: dict = {}
    if json_schema is not None:
        out["response_format"] = load_schema_file(json_schema)
    if logprobs is not None:
        out["logprobs"] = logprobs
    return out


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--batch-size {value!r} is not a number; accepted: a positive integer or 'auto'") from None


@datasets_app.command("fetch")
def datasets_fetch(
    name: str = typer.Argument(..., help="dataset name (see `parainfer datasets list`)"),
    out: Optional[str] = typer.Option(None, help="write here instead of the user cache dir"),
    refresh: bool = typer.Option(False, help="fetch again even if cached"),
) -> None:
    """Fetch a dataset as JSONL (id, text, label) and print its path."""
    from parainfer.platform import datasets

    print(datasets.fetch(name, out=out, refresh=refresh))


@datasets_app.command("list")
def datasets_list() -> None:
    """List the datasets that can be fetched."""
    from parainfer.platform import datasets

    for name, desc in datasets.DATASETS.items():
        print(f"{name}\t{desc}")


@app.command("train-head")
def train_head(
    dataset: str = typer.Option("vader", help="dataset to train on"),
    out: str = typer.Option(..., "--output", "-o", "--out",
                            help="where to write the head (.safetensors); the built-in head is never replaced"),
    seed: int = typer.Option(0, help="split seed"),
    workers: int = typer.Option(0, help="worker processes for embedding"),
) -> None:
    """Train a sentiment head (encoder + logistic regression) and save it to --output."""
    from pathlib import Path

    from parainfer.training import default_head as th

    target = Path(out)
    if not target.parent.is_dir():
        raise UsageError(f"--output folder {str(target.parent)!r} does not exist; create it or choose another path")
    head = th.train(dataset, target, seed=seed, workers=workers)
    print(f"held-out accuracy {head['accuracy']:.4f} on {head['n_test']} texts "
          f"(trained on {head['n_train']}); saved {target}")


@app.command("train")
def train_command(
    input: str = typer.Argument(..., help="labelled .jsonl .csv or .parquet file"),
    output: str = typer.Option(..., "--output", "-o", help="model directory to create (run --model DIR reads it)"),
    backend: str = typer.Option("sklearn", help="sklearn (TF-IDF + logistic regression) | head (built-in encoder + "
                                "logistic regression) | keras (Embedding -> LSTM -> softmax)"),
    label_column: str = typer.Option("label", help="column holding the label: 2 classes or more, 2 rows or more of "
                                     "each; labels keep their JSON type (1 stays an integer)"),
    text_column: str = typer.Option("text", help="column holding the text"),
    validation: float = typer.Option(0.2, help="fraction held out for validation (stratified)"),
    seed: int = typer.Option(0, help="split and training seed"),
    errors: Optional[str] = typer.Option(None, help="bad rows go here (default MODEL_DIR/train.errors.jsonl)"),
    epochs: Optional[int] = typer.Option(None, help="keras: training epochs (default 4)"),
    workers: int = typer.Option(0, help="head: worker processes that embed the texts (0 = one per core)"),
    C: Optional[float] = typer.Option(None, "--C", help="sklearn, head: inverse regularisation strength (larger "
                                      "fits the training data closer; default sklearn svc 0.5, sgd and lbfgs 4, "
                                      "head 1)"),
    class_weight: str = typer.Option("none", help="sklearn, head: none | balanced (weight rows by the inverse "
                                     "of their class's frequency)"),
    max_features: int = typer.Option(200_000, help="sklearn: most word n-grams and most character n-grams kept "
                                     "(each; the most frequent)"),
    solver: str = typer.Option("svc", help="sklearn: svc (linear SVM + calibrated probabilities, fast) | sgd "
                               "(logistic regression by SGD) | lbfgs (multinomial logistic regression, slow with "
                               "many classes)"),
    jobs: int = typer.Option(0, help="sklearn: processes for the vectorizers and the classifier (0 = every core)"),
    overwrite: bool = typer.Option(False, help="replace a model already in the output directory"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines on stderr"),
) -> None:
    """Train a text classifier on a labelled file; print and save validation metrics.

    Progress lines go to stderr. Exits 1 when bad rows were left out (the model is saved; they
    are in the errors file), like ``run`` when records failed; 2 for bad input or options."""
    import time

    from parainfer.training.metrics import metrics_lines
    from parainfer.training.train import train

    options: dict[str, Any] = {"epochs": epochs} if epochs is not None and backend == "keras" else {}
    if backend == "head":
        options.update(workers=workers, class_weight=class_weight, **({"C": C} if C is not None else {}))
    if backend == "sklearn":
        options.update(C=C, class_weight=class_weight, max_features=max_features, solver=solver, n_jobs=jobs)
    t0 = time.perf_counter()

    def progress(line: str) -> None:
        print(f"[train {time.perf_counter() - t0:6.1f} s] {line}", file=sys.stderr, flush=True)

    result = train(input, output, backend=backend, label_column=label_column, text_column=text_column,
                   validation=validation, seed=seed, errors=errors, overwrite=overwrite,
                   progress=None if quiet else progress, **options)
    for line in metrics_lines(result):
        print(line)
    print(f"trained {backend} on {result['n_train']:,} texts in {result['seconds']:.1f} s; model saved in {output}"
          + (f"; training curve {result['curve']}" if result["curve"] else ""))
    if result["bad_rows"]:
        print(f"{result['bad_rows']} bad row{'' if result['bad_rows'] == 1 else 's'} left out; see "
              f"{result['errors_file']}", file=sys.stderr)
        raise typer.Exit(1)


@app.command("export-onnx")
def export_onnx_command(
    output: str = typer.Option(..., "--output", "-o", help="model directory to create (run --model DIR reads it)"),
    head: Optional[str] = typer.Option(None, help="also export a classifier head: builtin (VADER), a .safetensors "
                                       "head, or a `train --backend head` directory; without it: an embed model"),
    encoder: str = typer.Option("fp32", help="fp32 (exported from the built-in encoder) | int8 (the packaged "
                                "int8 all-MiniLM-L6-v2 ONNX)"),
) -> None:
    """Write the built-in encoder (and a head) as ONNX for ONNX Runtime (run/serve --model DIR)."""
    from parainfer.models.onnx_export import export_onnx

    manifest = export_onnx(output, head=head, encoder=encoder)
    how = manifest["preprocessing"].get("encoder_exporter", "")
    print(f"wrote {output} ({manifest['task']} model, encoder {encoder}: {how})")


@app.command("backends")
def backends_command(
    task: str = typer.Option("embed", help="embed | classify"),
    model: Optional[str] = typer.Option(None, help="built-in name or local Hugging Face directory"),
    threads: int = typer.Option(1, help="intra-op threads while measuring (a worker's share)"),
) -> None:
    """Measure every numeric path of an embed/classify model on this machine (texts/s and
    accuracy against torch float32), print them and cache the pick that `--backend auto` uses."""
    from parainfer.models.backend import decide, summary
    from parainfer.models.registry import build_predictor

    if task not in ("embed", "classify"):
        raise UsageError(f"--task {task!r}; accepted: embed, classify")
    predictor = build_predictor(task, model, backend="auto")
    choice = decide(predictor, recalibrate=True, threads=threads)
    if choice is None:
        raise UsageError(f"model {model!r} has one path only (not a Hugging Face embed/classify model)")
    print(f"{'path':18} {'texts/s':>8}  accuracy vs torch float32")
    for c in choice["candidates"]:
        if "skipped" in c:
            print(f"{c['path']:18} {'-':>8}  skipped: {c['skipped']}")
            continue
        acc = ", ".join(f"{k} {c[k]}" for k in ("mean_cosine", "min_cosine", "label_agreement") if k in c)
        print(f"{c['path']:18} {c['texts_per_s']:8.1f}  {acc}{'' if c['accepted'] else '  (rejected)'}")
    print(summary(choice).split(";")[0] + " - cached for --backend auto")


@app.command("report")
def report_command(
    report: str = typer.Argument(..., help="a report written by `parainfer run --report`"),
    plot: Optional[str] = typer.Option(None, help="draw the timeline and breakdown: .png/.svg/.pdf (static) or .html (interactive, offline)"),
) -> None:
    """Print a run report's summary; with --plot, draw its per-worker timeline and time breakdown."""
    from parainfer.batch.report import load_report, summary_lines

    data = load_report(report)
    for line in summary_lines(data):
        print(line)
    if plot:
        from parainfer.batch.plots import save_plot

        print(f"plot written to {save_plot(data, plot)}")


@app.command("simulate")
def simulate_command(
    workers: str = typer.Option("1,2,4,8,16,32,64,128,256,512,1024", help="comma-separated worker counts"),
    policy: str = typer.Option("dynamic", help="policy, or a comma-separated list of policies"),
    cost_from: str = typer.Option(..., help="a measured report (`parainfer run --report`) to fit costs from"),
    records: Optional[int] = typer.Option(None, help="records in the simulated job (default: as measured)"),
    speed_sigma: float = typer.Option(0.0, help="worker speed spread: speed = exp(sigma * N(0,1))"),
    slowdown: float = typer.Option(1.0, help="make the last worker this many times slower"),
    dispatch_latency_ms: float = typer.Option(0.2, help="one-way driver-to-worker latency"),
    out: Optional[str] = typer.Option(None, help="also save the rows as JSON here"),
    seed: int = typer.Option(0, help="random seed"),
    worker_speedup: float = typer.Option(1.0, help="workers this many times faster per task than measured "
                                                   "(the driver's cost unchanged): 50 ~ a GPU-like profile"),
    data_path: str = typer.Option("records", help="records | sharded: the data path to simulate (sharded: "
                                  "factoring shards, the driver paid per shard; see docs/sharded.md)"),
    shard_driver_ms: Optional[float] = typer.Option(None, help="sharded: driver ms per shard (default: from a "
                                                    "sharded report, else 0.5)"),
    shard_dispatch_share: Optional[float] = typer.Option(None, help="sharded: share of the driver's per-shard "
                                                         "cost spent handing a shard out (default: from a "
                                                         "sharded report, else 0.5)"),
    churn: Optional[str] = typer.Option(None, help="record mode with nodes joining, lost and preempted while the job "
                                        "runs: joins=R,losses=R,preemptions=R per hour[,notice=S][,load=S][,max=N]"),
) -> None:
    """Predict T_N, speedup, efficiency and imbalance at many worker counts (discrete-event)."""
    import json

    from parainfer.simulate import records as sim
    from parainfer.scheduling import make_policy

    try:
        counts = [int(x) for x in workers.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--workers {workers!r} must be comma-separated integers, e.g. 1,2,4") from None
    if not counts or min(counts) < 1:
        raise UsageError(f"--workers {workers!r} must list worker counts >= 1")
    policies = [p.strip() for p in policy.split(",")]
    for name in policies:
        make_policy(name, 1)  # validates the name
    workload = sim.Workload.from_report(cost_from)
    if worker_speedup != 1.0:
        workload = workload.faster(worker_speedup)
    if churn is not None and data_path != "records":
        raise UsageError(f"--churn models record mode only; got --data-path {data_path}")
    if data_path == "sharded":
        from parainfer.simulate.shards import sharded_rows

        if shard_dispatch_share is not None and not 0 <= shard_dispatch_share <= 1:
            raise UsageError(f"--shard-dispatch-share {shard_dispatch_share} must be between 0 and 1")

        rows = sharded_rows(cost_from, workload, counts, records, speed_sigma, slowdown, seed,
                            None if shard_driver_ms is None else shard_driver_ms / 1e3, shard_dispatch_share)
        policies = ["factoring"]
        print(f"sharded: driver {rows[0]['shard_driver_s'] * 1e3:.3f} ms per shard ({rows[0]['dispatch_share']:.0%} "
              f"handing out); worker {rows[0]['record_s'] * 1e3:.4f} ms per record; smallest shard "
              f"{', '.join(str(r['smallest_shard']) for r in rows)} records")
    elif data_path != "records":
        raise UsageError(f"--data-path {data_path!r} is not one of records, sharded")
    elif churn is not None:
        from parainfer.simulate.churn import Churn, churn_table, simulate_churn

        model = Churn.parse(churn)
        rows = [simulate_churn(workload, n, model, p, records=records, dispatch_latency_s=dispatch_latency_ms / 1e3,
                               seed=seed) for p in policies for n in counts]
    else:
        rows = [sim.simulate(workload, n, p, records=records, speed_sigma=speed_sigma, slowdown=slowdown,
                             dispatch_latency_s=dispatch_latency_ms / 1e3, seed=seed)
                for p in policies for n in counts]
    print(f"fitted task cost: {workload.overhead_s * 1e3:.3f} ms + {workload.s_per_token * 1e6:.3f} ms per 1k "
          f"padded tokens; driver {workload.driver_s * 1e3:.3f} ms per task (serial)")
    if churn is not None:
        print(churn_table(rows))
    else:
        print(sim.table(rows))
    for name in policies:
        print(f"{name}: Amdahl serial fraction {sim.amdahl_fraction([r for r in rows if r['policy'] == name]):.5f}")
    if out:
        with open(out, "w") as f:
            json.dump({"workload": {"overhead_s": workload.overhead_s, "s_per_token": workload.s_per_token,
                                    "driver_s": workload.driver_s}, "rows": rows}, f, indent=1)


pool_app = typer.Typer(no_args_is_help=True, help="Warm worker pools: workers with the model loaded, kept "
                       "between jobs (`run --pool NAME`; docs/pools.md).", rich_markup_mode=_help_markup())
app.add_typer(pool_app, name="pool")


@pool_app.command("up")
def pool_up(
    name: str = typer.Argument(..., help="the pool's name (letters, digits, _ . -)"),
    task: str = typer.Option("embed", help="classify | embed | generate | translate"),
    model: Optional[str] = typer.Option(None, help="built-in name, local HF directory, or module:function"),
    workers: int = typer.Option(1, help="worker processes N >= 1"),
    executor: str = typer.Option("local", help="local (worker processes; the only one pools support yet)"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 (as run's)"),
    backend: str = typer.Option("auto", help="as run's --backend"),
    device: str = typer.Option("cpu", help="as run's --device"),
    threads_per_worker: Optional[int] = typer.Option(None, help="threads per worker (default cores / workers)"),
) -> None:
    """Start pool NAME in the background: N workers with the model loaded, until `pool down NAME`."""
    from parainfer.batch.pools import pool_up as up
    from parainfer.config import JobConfig

    if executor != "local":
        raise UsageError(f"pool up --executor {executor!r}: pools run local workers only (accepted: local)")
    if workers < 1:
        raise UsageError(f"--workers {workers}: a pool needs N >= 1 workers")
    config = JobConfig(input="-", output="-", task=task, model=model, workers=workers, dtype=dtype, backend=backend,
                       device=device, threads_per_worker=threads_per_worker, quiet=True)
    state = up(name, config)
    print(f"pool {name} up: {state['workers']} workers of {state['task']} {state['model']} (pid {state['pid']})")


@pool_app.command("down")
def pool_down(name: str = typer.Argument(..., help="the pool's name")) -> None:
    """Stop pool NAME (its workers end with it)."""
    from parainfer.batch.pools import pool_down as down

    print(down(name))


@pool_app.command("ls")
def pool_ls() -> None:
    """List the pools: name, task, model, workers, pid, uptime, status."""
    from parainfer.batch.pools import pool_list

    print(f"{'NAME':<16} {'TASK':<9} {'MODEL':<28} {'WORKERS':>7} {'PID':>8} {'UPTIME':>9}  STATUS")
    for p in pool_list():
        uptime = f"{p['uptime_s']:.0f}s" if p["uptime_s"] is not None else "-"
        print(f"{p['name']:<16} {p['task']:<9} {p['model']:<28} {p['workers']:>7} {p['pid'] or '-':>8} "
              f"{uptime:>9}  {p['status']}")


from parainfer.serving.cli import serve_command  # noqa: E402

app.command("serve")(serve_command)

# What click prints for a value's type; typer's own display (``<str>``, ``<int>``) says less.
METAVARS = {str: "TEXT", int: "INTEGER", float: "FLOAT"}


def name_metavars(*typer_apps: typer.Typer) -> None:
    """Give each option of the commands of ``typer_apps`` the metavar click prints for its type
    (``--workers INTEGER``, ``--task TEXT``; repeatable ``list[str]`` options: TEXT) and each
    argument its name in capitals (``INPUT``), unless it declares its own (``metavar="PATH"``).
    Flags have none. Called once, when the commands are all registered."""
    import inspect
    import typing

    from typer.models import ArgumentInfo, ParameterInfo

    for typer_app in typer_apps:
        for command in typer_app.registered_commands:
            hints = typing.get_type_hints(command.callback)
            for name, parameter in inspect.signature(command.callback).parameters.items():
                info = parameter.default
                if not isinstance(info, ParameterInfo) or info.metavar is not None:
                    continue
                kind = hints.get(name)
                while typing.get_args(kind) and typing.get_origin(kind) in (typing.Union, list, types.UnionType):
                    kind = next(a for a in typing.get_args(kind) if a is not type(None))  # Optional[X], list[X]
                if isinstance(info, ArgumentInfo):
                    info.metavar = name.upper()
                elif kind in METAVARS:
                    info.metavar = METAVARS[kind]


name_metavars(app, datasets_app, pool_app)


def main() -> None:
    """Console entry point: usage errors become one line on stderr and exit code 2."""
    import pydantic

    try:
        code = app(standalone_mode=False)  # click returns the code of a typer.Exit here
        sys.exit(code if isinstance(code, int) else 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(4)
    except OSError as e:  # a file that could not be opened or written outside a job's loop
        where = f" {e.filename!r}" if e.filename else ""
        print(f"error: cannot use{where}: {e.strerror or e}", file=sys.stderr)
        sys.exit(4)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, UsageError):  # raised by one of our validators: its message says it all
            print(f"error: {cause}", file=sys.stderr)
        else:
            print(f"error: {'.'.join(map(str, first['loc']))}: {first['msg']} (got {first.get('input')!r})",
                  file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        # Click usage errors (missing option, bad type, unknown option) in standalone_mode=False.
        # Typer may ship its own copy of click, so recognise them by shape, not by class.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
