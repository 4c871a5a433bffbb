"""``--task generate``: text generation with a continuous-batching engine.

Each worker holds one engine built by ``generation.engines.build_engine`` (``--engine``: the own
``generation.LLMEngine``, llama.cpp for a .gguf file, or vLLM); a task's prompts are added to it at once and
decoded together, sequences leaving the batch as they finish. The default model is
SmolLM2-135M-Instruct (``generation.ensure_smollm2``); any local Hugging Face causal-LM
directory or GGUF file of an architecture the engine runs works too (``generation.resolve_model``:
a GGUF is dequantised once into a cached directory). A prompt gets the chat template as one user message
(``chat=True``) or is fed as is (``chat=False``); a chat conversation (OpenAI-style messages)
always gets the template. A prompt that does not fit the context window with ``max_tokens``
fails alone (quarantined with both numbers).
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError
from parainfer.models.base import Predictor, RecordFailure

GENERATION_OPTIONS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "chat", "max_num_seqs",
                      "response_format", "logprobs", "prefix_cache", "engine")


class GeneratePredictor(Predictor):
    """Generates a completion per text.

    Args:
        model_dir: local causal-LM directory or .gguf file; None = SmolLM2-135M-Instruct.
        dtype: "auto" (= float32, exact against Hugging Face), "float32" or "bfloat16".
        max_tokens: most new tokens per record.
        temperature, top_p, top_k: sampling (temperature 0 = greedy).
        seed: with sampling, record r uses seed + crc32(its text), so a record's output does not
            depend on which batch or worker it ran in.
        stop: strings that end a completion.
        chat: apply the chat template (prompt as one user message).
        max_num_seqs: most sequences decoding together in the engine.
        response_format: OpenAI's ``{"type": "json_object"}`` or ``{"type": "json_schema",
            "json_schema": {"schema": {...}}}`` (``--json-schema FILE``): every output is JSON
            valid for the schema (unless cut by max_tokens: finish_reason "length").
        logprobs: None, or k in 0..20 (``--logprobs K``): add the output columns ``logprobs``
            and ``cumulative_logprob``.
        prefix_cache: automatic prefix caching in the engine (prompts sharing a prefix, such as
            the chat template's system prompt, reuse its keys/values; outputs are the same).
        engine: ``--engine``: "parainfer" | "llamacpp" (``model_dir`` a .gguf file) | "vllm" |
            "auto", resolved here, in the driver (``generation.engines.resolve_engine``); the
            run report's predictor says which ran.

    Output per record: ``generated_text``, ``prompt_tokens``, ``completion_tokens``,
    ``finish_reason`` ("stop" | "length"); with ``logprobs``: ``logprobs``, a list with one
    ``{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}`` per generated token
    (natural logs of the model's raw distribution), and ``cumulative_logprob``, their sum.
    """

    task = "generate"

    def __init__(self, model_dir: str | os.PathLike | None = None, dtype: str = "auto", device: str = "cpu",
                 max_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                 seed: int | None = None, stop: list[str] | None = None, chat: bool = True,
                 max_num_seqs: int = 64, response_format: dict | None = None, logprobs: int | None = None,
                 prefix_cache: bool = True, engine: str = "auto"):
        if device != "cpu":
            raise UsageError(f"--task generate runs on the CPU only for now; got device {device!r}")
        if max_tokens < 1:
            raise UsageError(f"max_tokens must be >= 1, got {max_tokens}")
        self.model_dir = Path(model_dir) if model_dir else None
        self.model_name = str(model_dir) if model_dir else "smollm2-135m-instruct"
        self.dtype = "float32" if dtype == "auto" else dtype
        self.options = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "top_k": top_k,
                        "seed": seed, "stop": list(stop or []), "chat": chat, "max_num_seqs": max_num_seqs,
                        "response_format": response_format, "logprobs": logprobs, "prefix_cache": prefix_cache}
        from parainfer.generation.engines import resolve_engine

        self.engine_name = resolve_engine(engine, model_dir, device)
        self.max_input_tokens: int | None = None
        self._tokenizer: Any = None
        self._engine: Any = None
        self._check_options()

    @property
    def engine(self) -> Any:
        """The loaded engine, a ``generation.engine_contract.GenerationEngine`` (None before ``load()``): the OpenAI batch runner admits
        requests against it as the server does."""
        return self._engine

    def _check_options(self) -> None:
        """Bad sampling options are a usage error at start (exit 2), not one error per record:
        SamplingParams' checks, and max_tokens against the model's context window."""
        from parainfer.generation.sampling_params import SamplingParams

        from parainfer.generation.grammar import check_schema

        o = self.options
        SamplingParams(max_tokens=o["max_tokens"], temperature=o["temperature"], top_p=o["top_p"], top_k=o["top_k"],
                       response_format=o["response_format"], logprobs=o["logprobs"])
        check_schema(o["response_format"])  # a schema xgrammar cannot compile: exit 2 before any model loads
        config = self._resolve_dir() / "config.json"
        window = json.loads(config.read_text()).get("max_position_embeddings") if config.is_file() else None
        if window and o["max_tokens"] >= window:
            raise UsageError(f"--max-tokens {o['max_tokens']} does not fit the context window of {self.model_name} "
                             f"({window} tokens, prompt included); accepted: 1 to {window - 1}")

    def _resolve_dir(self) -> Path:
        """What the engine loads: the model directory; for the own engine (and vLLM) the built-in
        model for None and a .gguf file's dequantised directory; llama.cpp reads the file.

        Raises:
            UsageError: llama.cpp without a model file (it has no built-in model)."""
        if self.engine_name == "llamacpp":
            from parainfer.generation.engines import llamacpp_model

            return Path(llamacpp_model(self.model_dir))
        from parainfer.generation.model_store import is_gguf_path

        if self.model_dir is None or is_gguf_path(self.model_dir):
            from parainfer.generation import resolve_model

            self.model_dir = resolve_model(self.model_dir)
        return self.model_dir

    def _get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from parainfer.generation.engines import load_tokenizer

            path = self._resolve_dir()
            self._tokenizer = load_tokenizer(self.engine_name, path)
            if (path / "config.json").is_file():
                from transformers import AutoConfig

                self.max_input_tokens = int(AutoConfig.from_pretrained(str(path)).max_position_embeddings)
        return self._tokenizer

    def window(self) -> int | None:
        """None: prompts are never truncated; one that does not fit the context window with
        max_tokens fails alone (see ``predict``)."""
        return None

    def _prompt_ids(self, texts: list[str | list[dict[str, str]]]) -> list[list[int]]:
        """Token ids of each prompt: a string (chat template around it as one user message when
        ``chat``, else as is) or a list of chat messages (chat template over the conversation)."""
        tok = self._get_tokenizer()
        out = []
        for text in texts:
            if isinstance(text, list) or self.options["chat"]:
                messages = text if isinstance(text, list) else [{"role": "user", "content": text}]
                ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
            else:
                out.append(list(tok(text, add_special_tokens=False)["input_ids"]))
        return out

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Estimated cost per record: prompt tokens + max_tokens (what the engine computes at most)."""
        return [len(ids) + self.options["max_tokens"] for ids in self._prompt_ids(texts)]

    def load(self) -> None:
        from parainfer.generation.engines import build_engine

        self._get_tokenizer()
        self._engine = build_engine(self.engine_name, self._resolve_dir(), dtype=self.dtype,
                                    max_num_seqs=self.options["max_num_seqs"],
                                    enable_prefix_caching=self.options["prefix_cache"])
        self._stats_seen = dict(self._engine.stats)

    def _params(self, text: str | list[dict[str, str]]) -> Any:
        from parainfer.generation import SamplingParams

        o = self.options
        key = text if isinstance(text, str) else json.dumps(text, sort_keys=True, ensure_ascii=False)
        seed = None if o["seed"] is None else (int(o["seed"]) + zlib.crc32(key.encode("utf-8"))) % (2 ** 63)
        return SamplingParams(max_tokens=o["max_tokens"], temperature=o["temperature"], top_p=o["top_p"],
                              top_k=o["top_k"], seed=seed, stop=list(o["stop"]),
                              response_format=o["response_format"], logprobs=o["logprobs"])

    def predict(self, texts: list[str]) -> list[dict[str, Any] | RecordFailure]:
        """Generate for B prompts together; returns B output dicts (or RecordFailure for a prompt
        that does not fit the context window)."""
        prompts = self._prompt_ids(texts)
        outputs: list[dict[str, Any] | RecordFailure | None] = [None] * len(texts)
        runnable = []
        for i, ids in enumerate(prompts):
            try:
                self._engine.check_fits(len(ids), self.options["max_tokens"])
                runnable.append(i)
            except UsageError as e:
                outputs[i] = RecordFailure(str(e))
        results = self._engine.generate([prompts[i] for i in runnable], [self._params(texts[i]) for i in runnable])
        for i, res in zip(runnable, results):
            outputs[i] = {"generated_text": res.text, "prompt_tokens": res.prompt_tokens,
                          "completion_tokens": res.completion_tokens, "finish_reason": res.finish_reason}
            if res.logprobs is not None:
                outputs[i].update(logprob_columns(self._tokenizer, res.logprobs))
        return outputs  # type: ignore[return-value]

    def token_counts(self, texts: list[Any]) -> Any:
        """The base counts plus the engine's prefill figures since the last call (the task just
        run): prompt tokens computed, and looked up / found in the prefix cache."""
        counts = super().token_counts(texts)
        if self._engine is not None:
            now, seen = self._engine.stats, self._stats_seen
            delta = lambda key: now.get(key, 0) - seen.get(key, 0)  # noqa: E731
            counts.prefill_computed = delta("prefill_tokens")
            counts.prefix_cache_queries = delta("prefix_cache_queried_tokens")
            counts.prefix_cache_hits = delta("prefix_cache_hit_tokens")
            self._stats_seen = dict(now)
        return counts

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None, "_engine": None}

    def describe(self) -> dict[str, Any]:
        return {"class": "GeneratePredictor", "task": self.task,
                "model": self.model_name, "engine": self.engine_name,
                "dtype": self.dtype, **self.options}


def logprob_columns(tokenizer: Any, entries: list[Any]) -> dict[str, Any]:
    """The ``logprobs`` and ``cumulative_logprob`` output columns of one record (see GeneratePredictor)."""
    def text(token_id: int) -> str:
        return tokenizer.decode([token_id])
    rows = [{"token": text(e.token_id), "logprob": e.logprob,
             "top_logprobs": [{"token": text(t), "logprob": lp} for t, lp in e.top]} for e in entries]
    return {"logprobs": rows, "cumulative_logprob": float(sum(e.logprob for e in entries))}
