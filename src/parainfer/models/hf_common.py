"""Shared loading code for Hugging Face (PyTorch) encoders: tokenizer, dtype, threads, window.

Owns: loading a local model directory offline, picking the compute dtype (with the bf16
tolerance check of ``--dtype auto``), tokenising a batch with truncation to the model window.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from parainfer.errors import UsageError
from parainfer.models.calibration import CALIBRATION_TEXTS  # noqa: F401 - re-exported
from parainfer.models.dtype import check_dtype, resolve_dtype
from parainfer.counts import MAX_CHARS_PER_TOKEN
from parainfer.counts import TokenCounts, split_by_padding, within_budget

# Fixed cost of one encoder forward call, in token-equivalents, by device type: a batch is cut
# into length groups only where the padding saved exceeds this per extra call (see
# ``split_by_padding``). CPU: all-MiniLM-L6-v2 bf16 on one core of a 2-core EPYC took 7.6 ms
# for 1x8 tokens and 15.8 ms for 1x64 (0.15 ms a token), so one call ~ 45-50 tokens. GPUs: a
# wider batch is nearly free, so never cut. A constant, not a per-run timing, so that the same
# input always gives the same batches and therefore the same output bits.
FORWARD_OVERHEAD_TOKENS = {"cpu": 48.0}

# Deterministic mode (``--deterministic``, the default): a text of n tokens is computed padded to
# ``canonical_width(n)`` (capped at the window), whatever it is batched with; rows of one width
# may share a forward pass, rows of different widths never do. Widths are multiples of 8 up to
# 64 tokens, of 16 up to 128, of 32 beyond: (up to, step) pairs, the last for any length. Padding
# per row (real / padded tokens, 2,000 texts): VADER 0.86 (a uniform step of 16: 0.74), the mixed
# corpus 0.94 (16: 0.92) with as many distinct widths (16) as a step of 16 (a step of 8: twice
# as many, so fewer rows share a pass). In batches of 32 of mixed traffic it ran at 0.99x free
# length groups (docs/benchmarks.md, "Deterministic mode").
CANONICAL_WIDTH_STEPS: tuple[tuple[int | None, int], ...] = ((64, 8), (128, 16), (None, 32))
# A uniform step instead of the schedule above (None: the schedule); for benchmarks.
CANONICAL_WIDTH_STEP: int | None = None
# Batch sizes the invariance probe checks (against each text computed alone): at the narrowest
# canonical width of the calibration texts, small, odd and up to the serve default (32); at
# each wider one, the first two (the probe must stay well under a second of a worker's load).
PROBE_BATCH_SIZES = (2, 3, 8, 17, 32)
# Mode "fixed-rows" (where equal widths alone are not enough: the library picks kernels by the
# batch's row count, as oneDNN with AMX does): every forward pass has exactly this many rows of
# one canonical width, a short pass filled with copies of its first row, so every pass of a
# width has one shape and one kernel. Cost on an AMX Xeon: docs/benchmarks.md, "Deterministic mode".
FIXED_ROWS = 8



def canonical_width(length: int, window: int | None, step: int | None = None) -> int:
    """The padded width (tokens) a text of ``length`` tokens is computed at in deterministic
    mode: ``length`` rounded up to a multiple of ``step`` (default: ``CANONICAL_WIDTH_STEP``, or
    when that is None the step ``CANONICAL_WIDTH_STEPS`` gives for ``length``), at most
    ``window`` (None: no cap).

    A function of the text alone, so the batch job and the server pad it alike."""
    length = max(length, 1)
    step = step or CANONICAL_WIDTH_STEP or next(s for upto, s in CANONICAL_WIDTH_STEPS if upto is None or length <= upto)
    width = -(-length // step) * step
    return min(width, window) if window else width


def read_window(model_dir: Path, tokenizer: Any, config: Any) -> int:
    """The model's input window in tokens.

    sentence-transformers' ``max_seq_length`` (sentence_bert_config.json) when present,
    else the smaller of the tokenizer's ``model_max_length`` and the config's
    ``max_position_embeddings``.
    """
    sbert = model_dir / "sentence_bert_config.json"
    if sbert.exists():
        value = json.loads(sbert.read_text()).get("max_seq_length")
        if value:
            return int(value)
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(limits) if limits else 512


def window_from_files(model_dir: Path) -> int:
    """The model window in tokens read from the directory's JSON files alone (no tokenizer, no
    transformers import: cheap enough for the driver). Same rule as ``read_window``, with the
    tokenizer's ``model_max_length`` taken from tokenizer_config.json."""
    def field(name: str, key: str) -> Any:
        try:
            return json.loads((model_dir / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return None

    value = field("sentence_bert_config.json", "max_seq_length")
    if value:
        return int(value)
    limits = [field("config.json", "max_position_embeddings"), field("tokenizer_config.json", "model_max_length")]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(limits) if limits else 512


def check_model_dir(path: str | os.PathLike) -> Path:
    """Raise UsageError unless ``path`` is a directory holding a Hugging Face config.json."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise UsageError(
            f"model directory {str(p)!r} has no config.json; expected a local Hugging Face model "
            "directory (sequence classification or sentence embedding)"
        )
    return p


class HFTokenizerMixin:
    """Driver-side token counting and worker-side batch tokenisation for an HF model dir.

    Subclasses set ``self.model_dir`` and ``self.max_input_tokens`` (after ``load``, or lazily).
    """

    model_dir: Path
    max_input_tokens: int | None
    _tokenizer: Any = None

    def _get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
            if self.max_input_tokens is None:
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(str(self.model_dir))
                self.max_input_tokens = read_window(self.model_dir, self._tokenizer, config)
        return self._tokenizer

    def window(self) -> int | None:
        """The model window in tokens. Driver side: read from the directory's JSON files, no
        tokenizer loaded (``window_from_files``); a loaded worker answers from its tokenizer."""
        if self.max_input_tokens is None and self._tokenizer is None:
            return window_from_files(self.model_dir)
        self._get_tokenizer()
        return self.max_input_tokens

    def max_input_chars(self) -> int | None:
        """``window x MAX_CHARS_PER_TOKEN`` characters: more of a text cannot reach the window."""
        window = self.window()
        return window * MAX_CHARS_PER_TOKEN if window else None

    def matryoshka_dimensions(self) -> bool | list[int]:
        """From config.json as vLLM reads it: ``matryoshka_dimensions`` (a list of sizes), else
        ``is_matryoshka`` (True: any size); False when neither is set or the file is unreadable."""
        try:
            config = json.loads((Path(self.model_dir) / "config.json").read_text())
        except (OSError, ValueError):
            return False
        sizes = config.get("matryoshka_dimensions") if isinstance(config, dict) else None
        if isinstance(sizes, list) and sizes and all(isinstance(n, int) and n > 0 for n in sizes):
            return sorted(sizes)
        return isinstance(config, dict) and config.get("is_matryoshka") is True

    def token_counts(self, texts: list[Any]) -> TokenCounts:
        """Exact counts of ``texts``: those the last forward passes measured when they ran this
        very list (no second tokenisation; ``padded`` is then what those passes computed, rows x
        longest summed over the length groups), else by tokenising them with truncation
        (``padded`` = B x longest)."""
        last = getattr(self, "_last_counts", None)
        if last is not None and last[0] is texts:
            return last[1]
        enc = self._get_tokenizer()(texts, truncation=True, max_length=self.max_input_tokens)
        return self._counts(texts, enc)

    @staticmethod
    def _counts(texts: list[Any], enc: Any) -> TokenCounts:
        lengths = [len(ids) for ids in enc["input_ids"]]
        truncated = [bool(e.overflowing) for e in enc.encodings] if enc.encodings else [False] * len(texts)
        return TokenCounts.from_lengths(texts, lengths, truncated)

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text including special tokens, before truncation (fast tokenizer)."""
        from transformers.utils import logging as hf_logging

        tokenizer = self._get_tokenizer()
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # counting long texts is expected: no "longer than max" warning
        try:
            enc = tokenizer(texts, add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False)
        finally:
            hf_logging.set_verbosity(level)
        return [len(ids) for ids in enc["input_ids"]]

    def _length_groups(self, texts: list[str]) -> Iterator[tuple[list[int], dict[str, Any]]]:
        """Tokenise B texts once (truncated to the window), sort them by length, cut them into
        forward passes (``_runs``) and yield (row indices into ``texts``, padded torch tensors
        [b, width of the pass]) per pass."""
        import torch

        tokenizer = self._get_tokenizer()
        enc = tokenizer(texts, truncation=True, max_length=self.max_input_tokens)
        counts = self._counts(texts, enc)
        lengths = [len(ids) for ids in enc["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        pad_values = {"input_ids": tokenizer.pad_token_id or 0, "token_type_ids": tokenizer.pad_token_type_id}
        left = tokenizer.padding_side == "left"
        runs, widths = self._runs([lengths[i] for i in order])
        fill = FIXED_ROWS if getattr(self, "numerics_mode", None) == "fixed-rows" else 0
        # Padded tokens as computed: rows x width, summed over the forward passes.
        counts.padded = sum(max(len(run), fill) * widths[run.stop - 1] for run in runs)
        self._last_counts = (texts, counts)
        for run in runs:
            rows = [order[k] for k in run]
            width = widths[run.stop - 1]
            computed = rows + [rows[0]] * (fill - len(rows))  # mode fixed-rows: copies of the first row
            batch = {}
            for name, values in enc.items():
                pad = pad_values.get(name, 0)
                padded = [[pad] * (width - len(v)) + v if left else v + [pad] * (width - len(v))
                          for v in (values[r] for r in computed)]
                batch[name] = torch.tensor(padded, dtype=torch.long)
            yield rows, batch

    def _runs(self, sorted_lengths: list[int]) -> tuple[list[range], list[int]]:
        """Cut ascending token lengths into forward passes; returns (runs, padded width per row).

        ``numerics_mode`` (set at load by ``probe_batch_invariance``) decides:
        None (not deterministic): the cheapest cut (``split_by_padding`` with this device's
        per-call overhead), each pass padded to its longest; "canonical-width": each row padded
        to ``canonical_width`` of its length, rows of equal width together; "fixed-rows": as
        canonical-width, in passes of at most ``FIXED_ROWS`` rows (``_length_groups`` fills each
        to exactly that); "per-text": every row alone at its canonical width. No pass exceeds
        ``max_batch_tokens`` (a fixed-rows pass's fill aside)."""
        mode = getattr(self, "numerics_mode", None)
        budget = getattr(self, "max_batch_tokens", None)
        if mode is None:
            overhead = FORWARD_OVERHEAD_TOKENS.get(str(getattr(self, "device", "cpu")).split(":")[0], float("inf"))
            runs = within_budget(split_by_padding(sorted_lengths, overhead), sorted_lengths, budget)
            widths = [sorted_lengths[r.stop - 1] for r in runs for _ in r]
            return runs, widths
        widths = [canonical_width(n, self.max_input_tokens) for n in sorted_lengths]
        if mode == "per-text":
            return [range(k, k + 1) for k in range(len(widths))], widths
        cuts, start = [], 0
        for k in range(1, len(widths)):
            if widths[k] != widths[k - 1] or (mode == "fixed-rows" and k - start == FIXED_ROWS):
                cuts.append(k)
                start = k
        bounds = [0, *cuts, len(widths)]
        runs = [range(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
        return within_budget(runs, widths, budget), widths

    def _forward_grouped(self, model: Any, texts: list[str], head: Callable[[Any, dict[str, Any]], Any]) -> np.ndarray:
        """Run ``head(model, batch) -> tensor [b, ...]`` over the length groups of ``texts``;
        returns a numpy array [B, ...] with rows in input order."""
        import torch

        out: np.ndarray | None = None
        for rows, batch in self._length_groups(texts):
            batch = {k: v.to(getattr(self, "device", "cpu")) for k, v in batch.items()}
            with torch.inference_mode():
                got = head(model, batch).float().cpu().numpy()[:len(rows)]  # fixed-rows: drop the fill
            if out is None:
                out = np.empty((len(texts), *got.shape[1:]), dtype=got.dtype)
            out[rows] = got
        return out if out is not None else np.empty((0,), dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        # Tokenizers and models are rebuilt in each worker by load(); ship only the settings.
        state = dict(self.__dict__)
        state["_tokenizer"] = None
        state["_model"] = None
        state.pop("_last_counts", None)
        return state


class HFModel(HFTokenizerMixin):
    """A local Hugging Face model directory run with PyTorch: settings, loading, description.

    Args:
        model_dir: local directory with config.json, tokenizer and weights.
        dtype: "auto" | "float32" | "bfloat16".
        device: "cpu" or "cuda[:i]".
        backend: "torch" (the default here), "auto" (measured: ``models.backend.decide``, run
            by the job's driver or, failing that, by ``load``), "onnx", "onnx-int8" or
            "openvino"; only predictors with ``onnx_output`` run other paths than torch.
    """

    task = "custom"
    #: The user's ``--deterministic`` (True) / ``--no-deterministic`` (False), set by the job or
    #: server setup before the predictor is shipped; ``load`` turns it into ``numerics_mode``.
    deterministic: bool = True
    numerics_mode: str | None = None
    #: What an exported ONNX graph outputs ("hidden": last_hidden_state, "logits"); None: torch only.
    onnx_output: str | None = None
    # Imported once by the local executor's forkserver, not by every worker (start-up time):
    # modeling_utils pulls in ~1,500 modules that ``from_pretrained`` would otherwise import.
    PRELOAD = ("torch", "transformers", "transformers.modeling_utils",
               "transformers.models.auto.modeling_auto", "transformers.models.auto.tokenization_auto")

    @property
    def preload_modules(self) -> tuple[str, ...]:
        """Modules for the forkserver to import (``executors.start_method``): ``PRELOAD`` plus
        this architecture's ``transformers.models.<model_type>.modeling_<model_type>`` (from
        config.json; left out when unreadable)."""
        try:
            kind = json.loads((Path(self.model_dir) / "config.json").read_text())["model_type"].replace("-", "_")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return self.PRELOAD
        return (*self.PRELOAD, f"transformers.models.{kind}.modeling_{kind}")

    def __init__(self, model_dir: str | os.PathLike, dtype: str = "auto", device: str = "cpu",
                 backend: str = "torch"):
        from parainfer.models.backend import check_backend

        self.model_dir = check_model_dir(model_dir)
        self.dtype = dtype
        self.device = device
        self.backend = check_backend(backend)
        self.backend_choice: dict[str, Any] | None = None  # set by ``backend.decide``
        self.runtime_file: str | None = None  # the ONNX file ``backend.decide`` made for the workers
        self.max_input_tokens: int | None = None
        self._model: Any = None

    def calibration_module(self, path: str, threads: int | None = None, reference: Any = None) -> Any:
        """A loaded model for ``backend.measure``: ``path`` "torch-float32", "torch-bfloat16"
        (a bf16 copy of ``reference``, the fp32 torch model), "onnx-float32", "onnx-int8" or
        "openvino-float32" (``accelerated.RuntimeModule`` with ``threads`` intra-op threads)."""
        import copy

        import torch

        if path == "torch-float32":
            return load_torch_model(self.model_dir, self._auto_cls(), "float32", self.device)[0]
        if path == "torch-bfloat16":
            return copy.deepcopy(reference).to(torch.bfloat16)
        return self._runtime_module(path, threads)

    def _runtime_name(self) -> str | None:
        from parainfer.models.backend import RUNTIME_PATHS

        return RUNTIME_PATHS.get(self.backend)

    def _auto_cls(self) -> Any:
        from transformers import AutoModel, AutoModelForSequenceClassification

        return AutoModelForSequenceClassification if self.onnx_output == "logits" else AutoModel

    def runtime_path(self, path: str) -> Path:
        """The ONNX file that runs ``path`` ("onnx-float32", "onnx-int8", "openvino-float32"):
        ``accelerated.onnx_file`` (exported and quantised on first use, then cached)."""
        from parainfer.models.accelerated import onnx_file

        return onnx_file(self.model_dir, self.onnx_output or "hidden", int8=path == "onnx-int8")

    def _runtime_module(self, path: str, threads: int | None = None) -> Any:
        from transformers import AutoConfig

        from parainfer.models.accelerated import RuntimeModule

        made = self.runtime_file
        file = Path(made) if made and Path(made).is_file() and path == self._runtime_name() else self.runtime_path(path)
        engine = "openvino" if path.startswith("openvino") else "onnxruntime"
        return RuntimeModule(file, self.onnx_output or "hidden", AutoConfig.from_pretrained(str(self.model_dir)),
                             engine, threads)

    def _load(self, auto_cls: Any, close_enough: Any, outputs: Callable[[Any, list[str]], np.ndarray]) -> None:
        """Load tokenizer and weights; for ``auto`` keep bf16 only if
        ``close_enough(fp32_model, bf16_model)`` says its outputs are within tolerance; then
        decide ``numerics_mode`` (``probe_batch_invariance`` with ``outputs(model, texts) ->
        array [B, ...]``, the predictor's forward)."""
        import time


        t = time.perf_counter()
        import torch  # noqa: F401 - timed on its own: imports are a large part of start-up
        import transformers  # noqa: F401

        phases = self.load_phases = {"imports_s": time.perf_counter() - t}
        t = time.perf_counter()
        self._get_tokenizer()
        phases["tokenizer_s"] = time.perf_counter() - t
        if self.backend == "auto":  # not decided by a driver (the Python API): decide here, once
            from parainfer.models.backend import decide

            t = time.perf_counter()
            decide(self)
            phases["backend_choice_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if self.backend not in ("torch", "auto"):
            from parainfer.models.backend import RUNTIME_PATHS

            self._model = self._runtime_module(RUNTIME_PATHS[self.backend])
            phases["weights_s"] = time.perf_counter() - t
        else:
            self._load_torch(auto_cls, close_enough, phases)
        t = time.perf_counter()
        self.batch_invariance = self.probe_batch_invariance(outputs)
        phases["invariance_probe_s"] = time.perf_counter() - t

    def _load_torch(self, auto_cls: Any, close_enough: Any, phases: dict[str, float]) -> None:
        """The torch path of ``_load``: weights, then ``--dtype auto``'s decision (cached)."""
        import time

        from parainfer.models import dtype_cache

        t = time.perf_counter()
        model, _ = load_torch_model(self.model_dir, auto_cls, self.dtype, self.device)
        self._model = model
        phases["weights_s"] = time.perf_counter() - t
        if self.dtype == "auto":
            t = time.perf_counter()
            key = dtype_cache.decision_key(self.model_dir, type(self).__name__, self.device)
            known = dtype_cache.lookup(key)
            if known is not None:  # decided by an earlier load on this machine: no calibration run
                import torch

                self._model = model.to(torch.bfloat16) if known == "bfloat16" else model
                self.dtype, self.dtype_decision = known, "cached"
            else:
                self._model, self.dtype = pick_dtype(model, "auto", close_enough, self.device)
                self.dtype_decision = "checked"
                dtype_cache.store(key, self.dtype)
            phases["dtype_check_s"] = time.perf_counter() - t

    def probe_batch_invariance(self, outputs: Callable[[Any, list[str]], np.ndarray]) -> dict[str, Any]:
        """Decide how texts are batched (``numerics_mode``) and say whether outputs are
        deterministic; run once in each worker after the model (and its dtype) is loaded.

        Not deterministic (``--no-deterministic``): free length groups, no probe. Else every
        text is computed at its ``canonical_width``, and the probe computes the calibration
        texts alone and inside batches of ``PROBE_BATCH_SIZES`` rows of the same width: if
        every row is bitwise equal to the text alone, batching across requests is kept
        (mode "canonical-width"); else every pass is filled to exactly ``FIXED_ROWS`` rows (one
        shape per width) and probed again (mode "fixed-rows"); else each text runs alone (mode
        "per-text", slower). The
        probe is a sample of shapes, not a proof: a library that picks kernels by batch size
        at sizes it did not try can still break the guarantee (docs/serving.md).

        Args:
            outputs: ``outputs(model, texts) -> array [B, ...]``, the predictor's forward.

        The decision is remembered per model, dtype, threads and machine in the dtype cache
        (``dtype_cache.lookup_entry``; ``PARAINFER_DTYPE_CACHE=0`` turns it off): later loads
        skip the probe ("decision": "cached").

        Returns:
            {"deterministic": bool, "mode": "canonical-width" | "fixed-rows" | "per-text" | "free",
            "reason": str, "decision": "checked" | "cached" (deterministic only),
            "probe_s": float}; also shown in describe() as "batch_invariance".
        """
        import time

        if not self.deterministic:
            self.numerics_mode = None
            return {"deterministic": False, "mode": "free", "probe_s": 0.0,
                    "reason": "--no-deterministic: a text's padded width and batch size follow its batch-mates, "
                              "and on some CPUs (oneDNN picks kernels by shape) so do its output bits"}
        from parainfer.models import dtype_cache

        t = time.perf_counter()
        key = self._probe_key()
        known = dtype_cache.lookup_entry(key)
        if known and known.get("mode") in ("canonical-width", "fixed-rows", "per-text") and known.get("reason"):
            self.numerics_mode = known["mode"]
            return {"deterministic": True, "mode": known["mode"], "reason": known["reason"],
                    "decision": "cached", "probe_s": round(time.perf_counter() - t, 3)}
        self.numerics_mode = "canonical-width"
        mismatch = self._first_mismatch(outputs)
        if mismatch is None:
            reason = (f"every calibration text gave the same bits alone and in batches of up to "
                      f"{max(PROBE_BATCH_SIZES)} rows at its canonical width")
        else:
            self.numerics_mode = "fixed-rows"
            second = self._first_mismatch(outputs)
            if second is None:
                reason = (f"{mismatch}; so every forward pass has exactly {FIXED_ROWS} rows of one width (copies "
                          f"of its first row fill a short one), which gave every calibration text its bits alone")
            else:
                self.numerics_mode = "per-text"
                reason = (f"{mismatch}, and in passes of {FIXED_ROWS} rows too; so each text is computed alone at "
                          "its canonical width")
        dtype_cache.store_entry(key, {"mode": self.numerics_mode, "reason": reason})
        return {"deterministic": True, "mode": self.numerics_mode, "reason": reason, "decision": "checked",
                "probe_s": round(time.perf_counter() - t, 3)}

    def _probe_key(self) -> str:
        """The probe's cache key: the dtype decision's (model files, class, device, CPU, torch)
        plus the backend, the dtype, torch's thread count and the probe's own settings."""
        import hashlib

        import torch

        from parainfer.models import dtype_cache

        base = dtype_cache.decision_key(self.model_dir, type(self).__name__, self.device)
        extra = (f"invariance|{self.backend}|{self.dtype}|{torch.get_num_threads()}|{CANONICAL_WIDTH_STEP}|"
                 f"{CANONICAL_WIDTH_STEPS}|{PROBE_BATCH_SIZES}|fixed-rows {FIXED_ROWS}")
        return hashlib.sha256(f"{base}|{extra}".encode()).hexdigest()

    def _first_mismatch(self, outputs: Callable[[Any, list[str]], np.ndarray]) -> str | None:
        """The first calibration text whose output bits differ between alone and in a batch of
        same-width rows (a sentence saying so), or None when all agree."""
        texts = list(dict.fromkeys(CALIBRATION_TEXTS))
        alone = {t: outputs(self._model, [t])[0].tobytes() for t in texts}
        by_width: dict[int, list[str]] = {}
        for text, n in zip(texts, self.token_lengths(texts)):
            by_width.setdefault(canonical_width(min(n, self.max_input_tokens or n), self.max_input_tokens), []).append(text)
        for k, (width, group) in enumerate(sorted(by_width.items())):
            for size in PROBE_BATCH_SIZES if k == 0 else PROBE_BATCH_SIZES[:2]:
                batch = (group * size)[:size]
                for text, row in zip(batch, outputs(self._model, batch)):
                    if row.tobytes() != alone[text]:
                        return (f"a calibration text at width {width} gave other bits in a batch of {size} "
                                "than alone (this CPU/library picks kernels by batch shape)")
        return None

    def describe(self) -> dict[str, Any]:
        """Class, task, model path, dtype (as resolved after load) and window."""
        out = {"class": type(self).__name__, "task": self.task, "model": str(self.model_dir),
               "dtype": self.dtype, "device": self.device, "max_input_tokens": self.max_input_tokens}
        if getattr(self, "dtype_decision", None):
            out["dtype_decision"] = self.dtype_decision  # "checked" (calibration run) or "cached"
        if getattr(self, "batch_invariance", None):
            out["batch_invariance"] = self.batch_invariance  # after load: probe_batch_invariance
        return out


def load_torch_model(model_dir: Path, auto_cls: Any, dtype: str, device: str = "cpu") -> tuple[Any, str]:
    """Load ``auto_cls.from_pretrained(model_dir)`` in eval mode; returns (model, dtype name).

    ``dtype`` is "float32", "bfloat16" or "auto"; with "auto" the model is returned in fp32
    and the caller decides after its tolerance check (see ``pick_dtype``).
    """
    import torch

    check_dtype(dtype)
    model = auto_cls.from_pretrained(str(model_dir), dtype=torch.float32).eval().to(device)
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    return model, dtype


def pick_dtype(model: Any, dtype: str, compare: Any, device: str = "cpu") -> tuple[Any, str]:
    """Resolve ``auto``: try bf16 if the hardware has it and ``compare(model_fp32, model_bf16)``
    returns True (outputs within tolerance on the calibration texts), else keep fp32.

    Returns (model, "bfloat16" | "float32").
    """
    import copy

    import torch

    if dtype != "auto":
        return model, dtype
    if resolve_dtype("auto", device) != "bfloat16":
        return model, "float32"
    candidate = copy.deepcopy(model).to(torch.bfloat16)
    if compare(model, candidate):
        return candidate, "bfloat16"
    return model, "float32"


def set_threads(num_threads: int | None) -> None:
    """Set torch intra-op threads for this process (None leaves torch's default)."""
    if num_threads:
        import torch

        torch.set_num_threads(int(num_threads))
