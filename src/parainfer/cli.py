"""The command line: ``parainfer run | datasets | train-head | report | simulate | serve``.

Bad input (a missing file, an unknown option value) prints one line naming the bad value and
what is accepted, and exits with code 2; a job where some records failed exits with 1.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from parainfer.errors import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
datasets_app = typer.Typer(no_args_is_help=True, help="Real datasets fetched from the package registry.")
app.add_typer(datasets_app, name="datasets")


@app.command()
def run(
    input: str = typer.Argument(..., help="input .jsonl .csv .parquet .txt, or - for JSONL on stdin"),
    output: str = typer.Option(..., "--output", "-o", help="output .jsonl .csv .parquet, or - for stdout"),
    task: str = typer.Option("classify", help="classify | embed | generate"),
    model: Optional[str] = typer.Option(None, help="built-in name, local HF directory, or module:function"),
    workers: int = typer.Option(0, help="worker processes (0 = one per core)"),
    batch_size: int = typer.Option(64, help="most records per task"),
    max_batch_tokens: int = typer.Option(8192, help="most padded tokens (batch x longest) per task"),
    bucket_window: int = typer.Option(2048, help="records sorted by length together (1 = no bucketing)"),
    policy: str = typer.Option("dynamic", help="scheduling policy"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16"),
    threads_per_worker: Optional[int] = typer.Option(None, help="threads per worker (default cores / workers)"),
    text_column: str = typer.Option("text", help="column holding the text"),
    id_column: str = typer.Option("id", help="column holding the record id"),
    report: Optional[str] = typer.Option(None, help="write the JSON run report here"),
    errors: Optional[str] = typer.Option(None, help="errors file (default: next to the output)"),
    max_retries: int = typer.Option(3, help="retries of a task whose worker died"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar or summary"),
) -> None:
    """Run a batch job: every input record's result, in input order, computed by N workers."""
    from parainfer.config import JobConfig
    from parainfer.engine import Job, print_summary

    config = JobConfig(input=input, output=output, task=task, model=model, workers=workers,
                       batch_size=batch_size, max_batch_tokens=max_batch_tokens, bucket_window=bucket_window,
                       policy=policy, dtype=dtype, threads_per_worker=threads_per_worker,
                       text_column=text_column, id_column=id_column, report=report, errors=errors,
                       max_retries=max_retries, quiet=quiet)
    result = Job(config).run()
    if not quiet:
        print_summary(result, sys.stderr)
        if result["failed_records"]:
            print(f"{result['failed_records']} records failed; see {result['errors_file']}", file=sys.stderr)
    raise typer.Exit(1 if result["failed_records"] else 0)


@datasets_app.command("fetch")
def datasets_fetch(
    name: str = typer.Argument(..., help="dataset name (see `parainfer datasets list`)"),
    out: Optional[str] = typer.Option(None, help="write here instead of the user cache dir"),
    refresh: bool = typer.Option(False, help="fetch again even if cached"),
) -> None:
    """Fetch a dataset as JSONL (id, text, label) and print its path."""
    from parainfer import datasets

    print(datasets.fetch(name, out=out, refresh=refresh))


@datasets_app.command("list")
def datasets_list() -> None:
    """List the datasets that can be fetched."""
    from parainfer import datasets

    for name, desc in datasets.DATASETS.items():
        print(f"{name}\t{desc}")


@app.command("train-head")
def train_head(
    dataset: str = typer.Option("vader", help="dataset to train on"),
    out: Optional[str] = typer.Option(None, help="where to write the head (default: the built-in head)"),
    seed: int = typer.Option(0, help="split seed"),
    workers: int = typer.Option(0, help="worker processes for embedding"),
) -> None:
    """Train the default sentiment head (encoder + logistic regression) and save it."""
    from parainfer import train_head as th

    head = th.train(dataset, out or th.DEFAULT_HEAD, seed=seed, workers=workers)
    print(f"held-out accuracy {head['accuracy']:.4f} on {head['n_test']} texts "
          f"(trained on {head['n_train']}); saved {out or th.DEFAULT_HEAD}")


def main() -> None:
    """Console entry point: usage errors become one line on stderr and exit code 2."""
    import pydantic

    try:
        code = app(standalone_mode=False)  # click returns the code of a typer.Exit here
        sys.exit(code if isinstance(code, int) else 0)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        print(f"error: {'.'.join(map(str, first['loc']))}: {first['msg']} (got {first.get('input')!r})",
              file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors in standalone_mode=False
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
