"""Validated settings of one ``parainfer serve`` process (pydantic).

Every field is also a ``parainfer serve`` option (``max_batch_size`` is ``--max-batch-size``).
Raises pydantic.ValidationError naming the field on a bad value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from parainfer.openai.requests import ModelNames
from parainfer.platform.devices import Device

if TYPE_CHECKING:
    from parainfer.generation.grammar import GrammarSettings


class ServeConfig(BaseModel):
    """Everything the HTTP server needs; defaults are the CLI defaults."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["classify", "embed", "generate", "translate"] = "embed"
    model: str | None = Field(default=None, description="built-in name, local HF directory, or module:function "
                              "(generate: a local HF Llama-family directory; default SmolLM2-135M-Instruct)")
    served_model_names: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, min_length=1, description="names requests may give as `model` (the first is the one "
        "responses report); unset: any name is accepted and the model's own name reported")
    workers: int | None = Field(default=None, ge=1,
                         description="worker processes, one model replica each; default 2 (generate: 1, the "
                         "engine in the server process; N > 1 runs N engine replicas in workers)")
    min_replicas: int | None = Field(default=None, description="autoscaling: fewest replicas (default 1; needs "
                                     "max_replicas); unset with max_replicas unset: workers, fixed")
    max_replicas: int | None = Field(default=None, description="autoscaling: most replicas; set: the server adds "
                                     "and removes replicas by load (``serving.autoscale``) and ``workers`` is it")
    target_ongoing: float = Field(default=2.0, gt=0, description="autoscaling: inputs (generate: sequences) waiting "
                                  "or running per replica the autoscaler aims for")
    upscale_delay_s: float = Field(default=30.0, ge=0, description="autoscaling: how long more replicas must be "
                                   "wanted before one is added")
    downscale_delay_s: float = Field(default=600.0, ge=0, description="autoscaling: how long fewer replicas must "
                                     "be wanted before one is removed")
    autoscale_look_back_s: float = Field(default=30.0, gt=0, description="autoscaling: the ongoing work is "
                                         "averaged over this many seconds")
    host: str = Field(default="127.0.0.1", description="interface to bind; loopback unless told otherwise")
    port: int = Field(default=8000, ge=0, le=65535)
    max_batch_size: int = Field(default=32, ge=1, description="most inputs per model batch")
    max_wait_ms: float = Field(default=5.0, ge=0, description="longest a free replica waits to fill a batch")
    max_queue: int = Field(default=1024, ge=1, description="most inputs waiting for a replica (generate: most "
                           "sequences in the engine, running + waiting); more get 429")
    max_inputs_per_request: int = Field(default=2048, ge=1, description="more inputs in one request get 413")
    max_body_bytes: int = Field(default=8 << 20, ge=1024, description="larger request bodies get 413")
    request_timeout_s: float = Field(default=30.0, gt=0, description="a request still waiting after this gets 504 "
                                     "(generate: non-streaming requests only)")
    api_key: str | None = Field(default=None, description="when set, /v1 routes need Authorization: Bearer KEY "
                                "(one key; with api_keys_file, one more)")
    api_keys_file: str | None = Field(default=None, description="a file of API keys, one 'KEY [NAME]' a line "
                                      "(# comments); each key owns its own files and batches")
    dtype: str = Field(default="auto", description="auto | float32 | bfloat16 (generate: auto = float32)")
    backend: str = Field(default="auto", description="embed/classify: auto | torch | onnx | onnx-int8 | openvino "
                         "(auto: measured once per model and machine, cached; models.backend)")
    recalibrate: bool = Field(default=False, description="--backend auto: measure again even if cached")
    device: Device = Field(default="cpu", description="cpu | cuda | cuda:N | auto; cuda spreads replicas over the GPUs")
    threads_per_worker: int | None = Field(default=None, ge=1, description="default: cores // workers "
                                           "(generate: the engine's torch threads; default torch's)")
    group_by_length: bool = Field(default=True, description="sort waiting inputs by length before cutting batches")
    max_in_flight_per_replica: int = Field(default=1, ge=1, description="batches queued on one replica at once")
    retries: int = Field(default=1, ge=0, description="times a batch is run again after its replica died")
    max_num_seqs: int = Field(default=64, ge=1, description="generate: most sequences in the engine's running batch")
    prefix_cache: bool = Field(default=True, description="generate: automatic prefix caching in the engine "
                               "(--no-prefix-cache turns it off)")
    engine: str = Field(default="auto", description="generate: parainfer | llamacpp | vllm | auto "
                        "(generation.engines; docs/generation.md, 'Engines')")
    executor: Literal["local", "ray"] = Field(default="local", description="replicas as local processes or "
                                              "ray actors (generate: ray runs every engine as an actor)")
    address: str | None = Field(default=None, description="ray: cluster HOST:PORT (default RAY_ADDRESS, else local)")
    cpus_per_worker: float = Field(default=1.0, gt=0, description="ray: CPUs each replica actor asks for")
    gpus_per_worker: float = Field(default=0.0, ge=0, description="ray: GPUs each replica actor asks for")
    # ---- OpenAI Files and Batches (/v1/files, /v1/batches; see docs/batch.md) ----
    data_dir: str | None = Field(default=None, description="where files and batch state are kept (default: the "
                                 "user data dir, parainfer/serve)")
    max_file_mb: float = Field(default=200.0, gt=0, description="larger uploads to /v1/files get 413")
    max_batch_lines: int = Field(default=50_000, ge=1, description="a batch input file with more requests gets 400")
    batch_concurrency: int = Field(default=4, ge=1, description="most batch requests running at once per replica "
                                   "(x workers in all); they start only while no online request is in flight")
    trust: bool = Field(default=False, description="load model files holding types skops does not trust by default")
    deterministic: bool | None = Field(default=None, description="embed/classify: a text's output bits do not "
                                       "depend on the requests batched with it, and equal a batch job's (`run`); "
                                       "generate: greedy tokens do not depend on the running batch, prefix cache "
                                       "off (docs/serving.md, 'Deterministic outputs'); unset: on, except for "
                                       "generate")
    # ---- token budget of embed/classify batches (see embed/batcher.py) ----
    max_batch_tokens: int | None = Field(default=8192, ge=1, description="most padded tokens (inputs x longest) "
                                         "per model batch; None: no budget")
    max_queue_age_ms: float | None = Field(default=500.0, gt=0, description="an input queued this long goes in "
                                           "the next batch whatever its length (oldest first); None: no limit")
    # ---- generate: structured output (response_format; see docs/serving.md, "Structured output: limits") ----
    grammar_compile_timeout_s: float = Field(default=10.0, gt=0, description="a request whose JSON schema has not "
                                             "compiled by then gets 408 (the others are not delayed)")
    grammar_cache_mb: float = Field(default=128.0, ge=0, description="memory for compiled grammars (least "
                                    "recently used go first)")
    grammar_compile_threads: int = Field(default=2, ge=1, description="JSON schemas compiled at once")
    grammar_compile_niceness: int = Field(default=10, ge=0, le=19, description="how much a compile lowers its "
                                          "thread's CPU priority once it has used 0.5 s of CPU time (0: never)")
    max_schema_bytes: int = Field(default=256 * 1024, ge=1, description="a larger JSON schema (as compact "
                                  "JSON text) gets 413")
    max_schema_depth: int = Field(default=64, ge=1, description="a JSON schema nested deeper (objects and arrays "
                                  "inside one another) gets 400")
    max_schema_nodes: int = Field(default=20_000, ge=1, description="a JSON schema of more values gets 400")
    max_schema_enum_values: int = Field(default=1_000, ge=1, description="a JSON schema with more enum values "
                                        "in all gets 400")
    max_schema_properties: int = Field(default=1_000, ge=1, description="a JSON schema with more properties in "
                                       "all gets 400")
    max_schema_string_chars: int = Field(default=120_000, ge=1, description="a JSON schema with more characters "
                                         "of property names, $defs names and enum/const strings gets 400")

    @model_validator(mode="after")
    def _default_workers(self) -> ServeConfig:
        """``workers`` left unset (None): 1 for generate (one engine in the server process), else 2;
        an int afterwards. ``deterministic`` left unset: True, except for generate. Then the replica range: with ``max_replicas`` set (autoscaling),
        ``workers`` becomes it (the replica slots) and ``min_replicas`` defaults to 1; without it,
        ``min_replicas = max_replicas = workers`` (a fixed count).

        Raises:
            UsageError: (wrapped by pydantic) ``min_replicas`` or ``max_replicas`` below 1, min above
                max, ``min_replicas`` without ``max_replicas``, or ``workers`` given with them.
        """
        from parainfer.errors import UsageError

        from parainfer.generation.engines import check_engine, resolve_engine

        self.engine = resolve_engine(self.engine, self.model, self.device) if self.task == "generate" else \
            check_engine(self.engine)
        if self.deterministic is None:  # generate: it would cost the prefix cache, so it is asked for
            self.deterministic = self.task != "generate"

        for name in ("min_replicas", "max_replicas"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1 (a server keeps at least one replica; "
                                 f"scaling to zero is not supported), got {value}")
        if self.max_replicas is None:
            if self.min_replicas is not None:
                raise UsageError(f"--min-replicas {self.min_replicas} needs --max-replicas (autoscaling between "
                                 "the two); for a fixed count use --workers N")
            if self.workers is None:
                self.workers = 1 if self.task == "generate" else 2
            self.min_replicas = self.max_replicas = self.workers
            return self
        if self.workers is not None and self.workers != self.max_replicas:
            raise UsageError(f"--workers {self.workers} is a fixed replica count; with --min-replicas/--max-replicas "
                             "leave it out")
        self.min_replicas = 1 if self.min_replicas is None else self.min_replicas
        if self.min_replicas > self.max_replicas:
            raise UsageError(f"--min-replicas {self.min_replicas} is above --max-replicas {self.max_replicas}; "
                             "accepted: 1 <= min <= max")
        self.workers = self.max_replicas
        return self

    @property
    def autoscaling(self) -> bool:
        """True when the replica count may change (``min_replicas < max_replicas``)."""
        return (self.min_replicas or 0) < (self.max_replicas or 0)

    def autoscale_policy(self) -> Any:
        """The ``serving.autoscale.AutoscalePolicy`` of these settings (min and max replicas,
        target ongoing work per replica, delays, look-back)."""
        from parainfer.serving.autoscale import AutoscalePolicy

        return AutoscalePolicy(min_replicas=self.min_replicas, max_replicas=self.max_replicas,
                               target_ongoing=self.target_ongoing, upscale_delay_s=self.upscale_delay_s,
                               downscale_delay_s=self.downscale_delay_s, look_back_s=self.autoscale_look_back_s)

    def model_names(self) -> ModelNames:
        """The names requests may give as ``model`` and the rule for them (``openai.requests.ModelNames``)."""
        return ModelNames.of(self.task, self.model, self.served_model_names)

    def grammar_settings(self) -> GrammarSettings:
        """The engine's structured-output settings from the ``grammar_*`` and ``max_schema_*`` fields."""
        from parainfer.generation.grammar import GrammarSettings, SchemaLimits

        limits = SchemaLimits(max_bytes=self.max_schema_bytes, max_depth=self.max_schema_depth,
                              max_nodes=self.max_schema_nodes, max_enum_values=self.max_schema_enum_values,
                              max_properties=self.max_schema_properties,
                              max_string_chars=self.max_schema_string_chars)
        return GrammarSettings(compile_timeout_s=self.grammar_compile_timeout_s,
                               cache_bytes=int(self.grammar_cache_mb * 2**20),
                               compile_threads=self.grammar_compile_threads,
                               compile_niceness=self.grammar_compile_niceness, limits=limits)

    def served_model_name(self) -> str:
        """The id reported in responses and first in /v1/models ("all-MiniLM-L6-v2" for the default
        embedder, or the first --served-model-name)."""
        return self.model_names().reported
