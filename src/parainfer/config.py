"""Validated settings of a batch job (pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from parainfer.platform.devices import Device


class JobConfig(BaseModel):
    """Everything ``parainfer run`` needs. Field docs are the CLI help.

    Raises pydantic.ValidationError (shown as a one-line usage error) on a bad value.
    """

    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="input file (.jsonl .csv .parquet .txt) or - for JSONL on stdin")
    output: str = Field(description="output file (.jsonl .csv .parquet), - for JSONL on stdout, or a folder "
                        "(DIR/: sharded mode keeps its parts there; docs/sharded.md)")
    task: str = "classify"
    model: str | None = None
    dtype: str = "auto"
    backend: str = Field(default="auto", description="auto | torch | onnx | onnx-int8 | openvino: the numeric "
                         "path of an embed/classify model (auto: measured once per model and machine, cached)")
    recalibrate: bool = Field(default=False, description="--backend auto: measure again even if a decision is cached")
    device: Device = Field(default="cpu", description="cpu | cuda | cuda:N | auto (see parainfer.platform.devices)")
    workers: int = Field(default=0, ge=0, description="worker processes; 0 = one per core (cuda: one per GPU)")
    min_workers: int | None = Field(default=None, ge=1, description="elastic workers (--workers MIN:MAX or auto): "
                                    "on Ray the job starts with room for MIN and grows to ``workers`` as room "
                                    "appears; local processes start all ``workers`` at once (docs/cluster.md)")
    threads_per_worker: int | None = Field(default=None, ge=1)
    batch_size: int | Literal["auto"] = Field(default=64, description="most records per task, or auto")
    max_auto_batch_size: int = Field(default=256, ge=1, description="largest size --batch-size auto tries")
    max_batch_tokens: int | None = Field(default=8192, ge=1, description="most padded tokens per task")
    bucket_window: int = Field(default=2048, ge=1, description="records sorted by length together; 1 = off")
    policy: str = "dynamic"
    text_column: str = "text"
    id_column: str = "id"
    report: str | None = None
    errors: str | None = None
    quiet: bool = False
    prefetch: int = Field(default=1, ge=1, description="tasks queued per worker ahead of the running one")
    max_buffered_records: int | None = Field(default=None, ge=1, description="reorder buffer bound")
    max_retries: int = Field(default=3, ge=0, description="times a task is given out again after its worker died")
    task_timeout: float | None = Field(default=None, gt=0, description="seconds a task may run before its worker "
                                                                       "is killed and the task retried")
    overwrite: bool = Field(default=False, description="start over even if the output has another job's checkpoint")
    checkpoint_every_s: float = Field(default=2.0, ge=0, description="seconds between checkpoint commits")
    memory_budget_bytes: int | None = Field(default=None, ge=1, description="memory the worker replicas may use "
                                            "(default: 80% of the available memory); fewer workers start if N do not fit")
    stall_warning_s: float = Field(default=300.0, gt=0, description="without task_timeout: warn on stderr when no "
                                                                    "task has finished for this long")
    executor: str = Field(default="local", description="local (processes) | ray (actors on a Ray cluster)")
    address: str | None = Field(default=None, description="ray: cluster address HOST:PORT (default RAY_ADDRESS, "
                                                          "else a local Ray started for the job)")
    cpus_per_worker: float = Field(default=1.0, gt=0, description="ray: CPUs each worker actor asks for")
    gpus_per_worker: float = Field(default=0.0, ge=0, description="ray: GPUs each worker actor asks for")
    trust: bool = Field(default=False, description="load model files holding types skops does not trust by default")
    deterministic: bool = Field(default=True, description="embed/classify: canonical padded widths, so a text's "
                                "output bits do not depend on its batch-mates (docs/serving.md, 'Deterministic "
                                "outputs')")
    dashboard: str | None = Field(default=None, description="[HOST:]PORT: serve a live dashboard of the job there "
                                  "(loopback by default; PARAINFER_API_KEY, when set, is its key; docs/dashboard.md)")
    @model_validator(mode="after")
    def _elastic(self) -> "JobConfig":
        if self.min_workers is not None and self.workers and self.min_workers > self.workers:
            raise ValueError(f"--workers {self.min_workers}:{self.workers}: MIN:MAX needs MIN <= MAX")
        elastic = self.min_workers is not None and (not self.workers or self.min_workers < self.workers)
        if elastic and self.executor == "ray" and self.policy == "static":
            raise ValueError("--policy static gives every worker its share of the tasks up front, so a worker that "
                             "starts late or retires would hold tasks nobody runs; elastic --workers MIN:MAX (or "
                             "auto) on Ray needs --policy dynamic, lpt or steal")
        return self

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("batch size must be >= 1 or 'auto'")
        return value

    generation: dict = Field(default_factory=dict, description="sampling options for --task generate")
    translation: dict = Field(default_factory=dict, description="--task translate: source_lang, target_lang")
    shard_mode: str = Field(default="auto", description="auto | on | off: hand workers shards of the input file "
                            "instead of records (auto: inputs of 64 MiB and more; see docs/sharded.md)")
    input_format: str = Field(default="auto", description="auto | records | openai-batch (auto: an OpenAI batch "
                              "file is recognised by its first line)")
