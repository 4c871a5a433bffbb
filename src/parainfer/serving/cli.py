"""``parainfer serve``: the command (registered in parainfer.cli) and ``run_server``.

Uvicorn handles SIGTERM/SIGINT: it stops accepting connections, lets in-flight requests finish
(up to ``--graceful-timeout-s``), then runs the app's lifespan shutdown, which stops the workers.
"""

from __future__ import annotations

from typing import Optional

import typer

from parainfer.serving.config import ServeConfig


def run_server(config: ServeConfig, log_level: str = "info", graceful_timeout_s: float | None = 30.0) -> None:
    """Build the app and serve it until SIGTERM/SIGINT (blocking).

    Raises:
        UsageError: ``--executor ray`` names a Ray head that does not answer or refuses this
            driver's token (checked before the server starts, so it is one line and exit 2, not
            a failed startup inside uvicorn).
    """
    import os

    import uvicorn

    from parainfer.serving.app import create_app

    from parainfer.serving.http.protocol import uvicorn_settings

    address = config.address or os.environ.get("RAY_ADDRESS")
    if config.executor == "ray" and address:
        from parainfer.executors.ray_cluster import check_head

        check_head(address)
    app = create_app(config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=graceful_timeout_s, **uvicorn_settings())


def serve_command(
    task: str = typer.Option("embed", help="classify | embed | generate | translate"),
    model: Optional[str] = typer.Option(None, help="built-in name, local HF directory, or module:function "
                                        "(generate: local HF Llama-family directory; default SmolLM2-135M-Instruct)"),
    served_model_name: Optional[list[str]] = typer.Option(
        None, "--served-model-name", metavar="NAME", help="a name requests may give as `model` (repeat the "
        "option for aliases; the first is the one responses report); unset: any name is accepted (one model is "
        "served) and the model's own name reported"),
    workers: Optional[int] = typer.Option(None, help="worker processes, one model replica each; default 2 "
                                          "(generate: 1 = the engine in the server process; N > 1 = N engine "
                                          "replicas in workers, routed by outstanding tokens)"),
    min_replicas: Optional[int] = typer.Option(None, help="autoscaling: fewest replicas (default 1; needs "
                                               "--max-replicas)"),
    max_replicas: Optional[int] = typer.Option(None, help="autoscaling: most replicas; the server adds replicas "
                                               "while the work per replica stays above --target-ongoing and removes "
                                               "them (drained first) when it stays below (instead of --workers)"),
    target_ongoing: float = typer.Option(2.0, help="autoscaling: inputs (generate: sequences) waiting or running "
                                         "per replica to aim for (Ray Serve's target_ongoing_requests)"),
    upscale_delay_s: float = typer.Option(30.0, help="autoscaling: seconds more replicas must be wanted before "
                                          "one is added"),
    downscale_delay_s: float = typer.Option(600.0, help="autoscaling: seconds fewer replicas must be wanted "
                                            "before one is removed"),
    autoscale_look_back_s: float = typer.Option(30.0, help="autoscaling: seconds over which the work is averaged"),
    host: str = typer.Option("127.0.0.1", help="interface to bind (loopback by default)"),
    port: int = typer.Option(8000, help="TCP port"),
    max_batch_size: int = typer.Option(32, help="most inputs per model batch (1 = batching off)"),
    max_wait_ms: float = typer.Option(5.0, help="longest a free replica waits for a batch to fill"),
    max_queue: int = typer.Option(1024, help="most inputs waiting (generate: sequences in the engine); "
                                  "requests beyond get 429"),
    request_timeout_s: float = typer.Option(30.0, help="requests not answered by then get 504 "
                                            "(generate: non-streaming only)"),
    api_key: Optional[str] = typer.Option(None, envvar="PARAINFER_API_KEY",
                                          help="require 'Authorization: Bearer KEY' on /v1 routes; prefer the "
                                          "PARAINFER_API_KEY environment variable (a flag shows in the process list)"),
    api_keys: str | None = typer.Option(None, "--api-keys", help="file of API keys, one 'KEY [NAME]' a line "
                                        "('#' starts a comment line); every key is accepted and owns its own "
                                        "files and batches (with --api-key too: both)"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 (generate: auto = float32)"),
    backend: str = typer.Option("auto", help="embed/classify: auto (the fastest accurate path, measured once per "
                                "model and machine and cached) | torch | onnx | onnx-int8 | openvino"),
    recalibrate: bool = typer.Option(False, help="--backend auto: measure the paths again (docs/models.md)"),
    device: str = typer.Option("cpu", help="cpu | cuda (replicas spread over the GPUs) | cuda:N | auto"),
    max_inputs_per_request: int = typer.Option(2048, help="more inputs in one request get 413"),
    max_body_bytes: int = typer.Option(8 << 20, help="larger request bodies get 413"),
    threads_per_worker: Optional[int] = typer.Option(None, help="threads per worker (default cores / workers; "
                                                     "generate: the engine's torch threads)"),
    max_num_seqs: int = typer.Option(64, help="generate: most sequences in the engine's running batch"),
    prefix_cache: bool = typer.Option(True, "--prefix-cache/--no-prefix-cache",
                                      help="generate: share the KV cache of common prompt prefixes (automatic "
                                      "prefix caching; outputs are the same either way)"),
    engine: str = typer.Option("auto", help="generate: parainfer (own engine) | llamacpp (a .gguf file through "
                               "llama.cpp) | vllm (GPU) | auto (llamacpp for .gguf when installed, else parainfer; "
                               "vllm on a GPU when installed)"),
    group_by_length: bool = typer.Option(True, help="sort waiting inputs by length before batching"),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic",
                                                 help="a text's output bits (embed/classify) and a greedy "
                                                 "request's tokens (generate) do not depend on what they are "
                                                 "batched with; embed/classify equal `parainfer run`'s "
                                                 "(default: on, except for generate, where it turns the prefix "
                                                 "cache off; docs/serving.md, 'Deterministic outputs')"),
    data_dir: Optional[str] = typer.Option(None, help="files and batch state (default: user data dir/parainfer/serve)"),
    max_file_mb: float = typer.Option(200.0, help="larger uploads to /v1/files get 413"),
    max_batch_lines: int = typer.Option(50_000, help="batch input files with more requests get 400"),
    batch_concurrency: int = typer.Option(4, help="most batch requests running at once per replica (only while "
                                          "no online request is in flight)"),
    log_level: str = typer.Option("info", help="uvicorn log level"),
    executor: str = typer.Option("local", help="local (worker processes) | ray (replicas as Ray actors; "
                                 "generate: every engine replica an actor)"),
    address: Optional[str] = typer.Option(None, help="ray: cluster HOST:PORT (default: RAY_ADDRESS, else a "
                                          "local Ray started for the server)"),
    cpus_per_worker: float = typer.Option(1.0, help="ray: CPUs each replica actor asks for"),
    gpus_per_worker: float = typer.Option(0.0, help="ray: GPUs each replica actor asks for"),
    trust: bool = typer.Option(False, help="load a model directory's skops file even if it holds types skops "
                               "does not trust by default (only for files from a trusted source)"),
    max_batch_tokens: Optional[int] = typer.Option(8192, help="embed/classify: most padded tokens (inputs x "
                                                   "longest) per model batch; long inputs go a few to a batch, "
                                                   "short ones many (0 = no budget)"),
    max_queue_age_ms: float = typer.Option(500.0, help="embed/classify: an input queued this long goes in the "
                                           "next batch whatever its length, oldest first (0 = no limit)"),
    grammar_compile_timeout_s: float = typer.Option(10.0, help="generate: a request whose JSON schema has not "
                                                    "compiled by then gets 408 (the others are not delayed)"),
    grammar_cache_mb: float = typer.Option(128.0, help="generate: memory for compiled grammars (LRU)"),
    grammar_compile_threads: int = typer.Option(2, help="generate: JSON schemas compiled at once"),
    grammar_compile_niceness: int = typer.Option(10, help="generate: how much a compile lowers its thread's CPU "
                                                 "priority once it has used 0.5 s of CPU time (0-19; 0 = never)"),
    max_schema_bytes: int = typer.Option(256 * 1024, help="generate: a larger JSON schema gets 413"),
    max_schema_depth: int = typer.Option(64, help="generate: a JSON schema nested deeper gets 400"),
    max_schema_nodes: int = typer.Option(20_000, help="generate: a JSON schema of more values gets 400"),
    max_schema_enum_values: int = typer.Option(1_000, help="generate: more enum values in a schema get 400"),
    max_schema_properties: int = typer.Option(1_000, help="generate: more properties in a schema get 400"),
    max_schema_string_chars: int = typer.Option(120_000, help="generate: more characters of names and "
                                                "enum/const strings in a schema get 400"),
) -> None:
    """Serve the model over HTTP: OpenAI-compatible /v1/embeddings, /v1/classify, /v1/completions,
    /v1/chat/completions (--task generate), /v1/translations (--task translate), /v1/files and
    /v1/batches (OpenAI batch jobs), /health, /metrics."""
    from parainfer.executors import check_executor

    check_executor(executor)
    config = ServeConfig(task=task, model=model, served_model_names=served_model_name or None, workers=workers,
                         min_replicas=min_replicas, max_replicas=max_replicas, target_ongoing=target_ongoing,
                         upscale_delay_s=upscale_delay_s, downscale_delay_s=downscale_delay_s,
                         autoscale_look_back_s=autoscale_look_back_s,
                         host=host, port=port,
                         max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
                         request_timeout_s=request_timeout_s, api_key=api_key, api_keys_file=api_keys,
                         dtype=dtype, backend=backend, recalibrate=recalibrate, device=device,
                         max_inputs_per_request=max_inputs_per_request, max_body_bytes=max_body_bytes,
                         threads_per_worker=threads_per_worker, group_by_length=group_by_length, deterministic=deterministic,
                         max_num_seqs=max_num_seqs, prefix_cache=prefix_cache, engine=engine, executor=executor, address=address,
                         cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                         data_dir=data_dir, max_file_mb=max_file_mb,
                         max_batch_lines=max_batch_lines, batch_concurrency=batch_concurrency, trust=trust,
                         max_batch_tokens=max_batch_tokens or None,
                         max_queue_age_ms=max_queue_age_ms or None,
                         grammar_compile_timeout_s=grammar_compile_timeout_s, grammar_cache_mb=grammar_cache_mb,
                         grammar_compile_threads=grammar_compile_threads,
                         grammar_compile_niceness=grammar_compile_niceness, max_schema_bytes=max_schema_bytes,
                         max_schema_depth=max_schema_depth, max_schema_nodes=max_schema_nodes,
                         max_schema_enum_values=max_schema_enum_values, max_schema_properties=max_schema_properties,
                         max_schema_string_chars=max_schema_string_chars)
    run_server(config, log_level=log_level)
