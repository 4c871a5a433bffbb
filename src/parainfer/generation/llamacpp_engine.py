"""``--engine llamacpp``: GGUF models run by llama.cpp (``llama-cpp-python``'s low-level API),
behind the same engine contract as parainfer's own engine.

Only the forward pass is llama.cpp's. The rest is the own engine's, reused as is
(:class:`LlamaCppEngine` is an :class:`~parainfer.generation.LLMEngine` with another runner):
the inbox, the FCFS continuous-batching ``Scheduler`` over a ``BlockManager`` that accounts for
llama.cpp's KV cells (chunked prefill under the token budget, preemption when the cache is
full), the sampler (greedy, temperature, top-k, top-p, per-request seeds, logprobs), stop
strings, EOS and max_tokens, the incremental detokenizer and the per-step outputs.

Each step the runner writes the scheduled decode rows and prefill chunks into one
``llama_batch``, every sequence under its own ``seq_id`` of one llama.cpp context created with
``n_seq_max = max_num_seqs`` and a unified KV cache, so the sequences are batched inside
llama.cpp's ``llama_decode``; it reads the logits of the rows that sample. A finished or preempted
sequence's cells are removed (``llama_memory_seq_rm``). Not supported here: structured output
(response_format) and deterministic mode; both are refused with a one-line error.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parainfer.errors import UsageError
from parainfer.generation.engine import LLMEngine
from parainfer.generation.engine_config import EngineConfig
from parainfer.generation.engine_contract import LLAMACPP_HINT, NoGrammars
from parainfer.generation.kv_cache import BlockManager
from parainfer.generation.sampler import sample
from parainfer.generation.scheduler import ScheduledBatch, Scheduler
from parainfer.generation.sequence import Sequence

DEFAULT_MAX_MODEL_LEN = 4096  # a GGUF's training window (32k for Gemma 3) is more cache than a CPU job wants
_backend_lock = threading.Lock()
_backend_ready = False


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, its backend initialised once per process.

    Raises:
        UsageError: llama-cpp-python is not installed (the message says how to install it).
    """
    global _backend_ready
    try:
        import llama_cpp
    except ImportError:
        raise UsageError(LLAMACPP_HINT) from None
    with _backend_lock:
        if not _backend_ready:
            from llama_cpp._logger import set_verbose

            set_verbose(False)  # llama.cpp's own log: errors only
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


def repack_enabled() -> bool:
    """Whether llama.cpp may repack the weights into its CPU "extra buffer" layouts
    (``use_extra_bufts``): only with ``PARAINFER_LLAMACPP_REPACK=1``. Off by default: the
    llama-cpp-python 0.3.36 build of this project (GGML_NATIVE on an AVX-512/AMX Xeon) segfaults
    in ``llama_decode`` on Gemma 3's Q4_K weights with it on, in llama-cpp-python's own
    ``Llama.create_completion`` as well."""
    return os.environ.get("PARAINFER_LLAMACPP_REPACK", "0") == "1"


def load_model(path: str | Path, vocab_only: bool = False) -> Any:
    """Load a GGUF file with llama.cpp (``llama_cpp._internals.LlamaModel``; weight repacking as
    ``repack_enabled`` says).

    Raises:
        UsageError: not a readable .gguf file, or llama.cpp could not load it.
    """
    llama_cpp = import_llama_cpp()
    from llama_cpp._internals import LlamaModel

    path = Path(path)
    if not path.is_file() or path.suffix != ".gguf":
        raise UsageError(f"--engine llamacpp needs a .gguf model file, got {str(path)!r}")
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = vocab_only
    params.use_extra_bufts = repack_enabled()
    try:
        return LlamaModel(path_model=str(path), params=params, verbose=False)
    except ValueError as exc:
        raise UsageError(f"llama.cpp could not load {str(path)!r}: {exc}") from None


class LlamaCppTokenizer:
    """A GGUF file's own tokenizer (llama.cpp's), with the Hugging Face calls parainfer makes.

    Raw text is tokenized as ``Llama.create_completion`` does: special tokens parsed, BOS added
    when the GGUF says so (``tokenizer.ggml.add_bos_token``; ``add_special_tokens`` is accepted
    and ignored, since a Gemma prompt without its BOS is not a prompt the model knows). Chat
    messages go through the GGUF's ``tokenizer.chat_template`` (jinja2, as llama-cpp-python and
    transformers render it).

    Args:
        model: a ``LlamaModel`` (``load_model``; ``vocab_only=True`` is enough).
    """

    def __init__(self, model: Any) -> None:
        import llama_cpp

        self.model = model
        self._vocab = model.vocab
        self.eos_token_id = int(model.token_eos())
        self.bos_token_id = int(model.token_bos())
        self._add_bos = bool(model.add_bos_token())
        self.eog_ids = {t for t in range(model.n_vocab()) if llama_cpp.llama_vocab_is_eog(self._vocab, t)}
        self.chat_template = model.metadata().get("tokenizer.chat_template")

    def __len__(self) -> int:
        return int(self.model.n_vocab())

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (BOS first when the model wants one)."""
        return list(self.model.tokenize(text.encode("utf-8"), self._add_bos, True))

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text)}

    def decode(self, ids: list[int], skip_special_tokens: bool = False, **_: Any) -> str:
        """Text of ``ids``; an incomplete UTF-8 character at the end reads as U+FFFD."""
        return self.model.detokenize([int(t) for t in ids], special=not skip_special_tokens).decode(
            "utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = True, tools: list[dict[str, Any]] | None = None) -> list[int] | str:
        """The GGUF's chat template over ``messages`` (jinja2, as llama-cpp-python renders it,
        ``tools`` passed to it); for a GGUF without one, llama.cpp's built-in template of its
        architecture family (``gemma`` for gemma3; it has no tool syntax, so ``tools`` are not
        rendered there). Returns token ids (``tokenize``) or the text.

        Raises:
            UsageError: no template in the GGUF and none built into llama.cpp for its architecture.
        """
        if self.chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            fmt = Jinja2ChatFormatter(self.chat_template, eos_token=self.decode([self.eos_token_id], False),
                                      bos_token=self.decode([self.bos_token_id], False),
                                      add_generation_prompt=add_generation_prompt)
            text, add_bos = fmt(messages=messages, tools=tools).prompt, False  # the template writes the BOS
        else:
            text, add_bos = self._builtin_chat(messages, add_generation_prompt), self._add_bos
        if not tokenize:
            return text
        return list(self.model.tokenize(text.encode("utf-8"), add_bos, True))

    def _builtin_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        import llama_cpp

        arch = self.model.metadata().get("general.architecture", "")
        family = arch.rstrip("0123456789")
        chat = (llama_cpp.llama_chat_message * len(messages))()
        keep = []
        for i, m in enumerate(messages):
            keep += [str(m["role"]).encode("utf-8"), str(m["content"]).encode("utf-8")]
            chat[i].role, chat[i].content = keep[-2], keep[-1]
        for name in dict.fromkeys((arch, family)):
            size = 4096 + sum(len(k) for k in keep) * 2
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(messages), add_generation_prompt, buf, size)
            if n > size:
                buf = ctypes.create_string_buffer(n + 1)
                n = llama_cpp.llama_chat_apply_template(name.encode(), chat, len(messages), add_generation_prompt,
                                                        buf, n + 1)
            if n >= 0:
                return buf.raw[:n].decode("utf-8")
        raise UsageError(f"this GGUF file has no tokenizer.chat_template and llama.cpp has no built-in template "
                         f"for architecture {arch!r}; send raw prompts (--no-chat, /v1/completions)")


class LlamaCppRunner:
    """Runs a ``ScheduledBatch`` through one llama.cpp context and samples (``ModelRunner``'s role).

    Args:
        model: the loaded ``LlamaModel``.
        n_ctx: KV cells of the context (shared by all sequences: a unified cache).
        max_num_seqs: sequences at once (``n_seq_max``).
        max_num_batched_tokens: the most tokens of one step (``n_batch``).
        threads: llama.cpp threads (None: ``torch.get_num_threads()``, which a worker sets to its share).
    """

    def __init__(self, model: Any, n_ctx: int, max_num_seqs: int, max_num_batched_tokens: int,
                 threads: int | None) -> None:
        llama_cpp = import_llama_cpp()
        from llama_cpp._internals import LlamaContext

        self.lib = llama_cpp
        if max_num_seqs > llama_cpp.llama_max_parallel_sequences():
            raise UsageError(f"max_num_seqs {max_num_seqs} exceeds llama.cpp's limit of "
                             f"{llama_cpp.llama_max_parallel_sequences()} parallel sequences")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = max_num_batched_tokens
        params.n_ubatch = min(512, max_num_batched_tokens)
        params.n_seq_max = max_num_seqs
        params.kv_unified = True  # one pool of cells, as the BlockManager counts them
        params.swa_full = True  # sliding-window layers keep every cell: a shared pool never runs short
        params.n_threads = params.n_threads_batch = threads or torch.get_num_threads()
        params.no_perf = True
        self.ctx = LlamaContext(model=model, params=params, verbose=False)
        self.n_vocab = int(model.n_vocab())
        self.n_batch = max_num_batched_tokens
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._free_ids = list(range(max_num_seqs - 1, -1, -1))
        self._seq_ids: dict[int, tuple[Sequence, int]] = {}  # id(seq) -> (seq, its llama.cpp seq_id)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> list[int | Exception]:
        """Decode the batch (decode rows, then prefill chunks) and sample the ``batch.sampled`` rows.

        Raises:
            RuntimeError: ``llama_decode`` failed (the engine loop then fails its requests).
        """
        self._release(batch)
        b, n = self.batch, 0
        for seq in batch.decode:
            n = self._put(n, seq.last_token_id, seq.num_tokens - 1, self._seq_id(seq), True)
        for seq, (first, last) in zip(batch.prefill, batch.chunks):
            sid, ids = self._seq_id(seq), seq.token_ids
            for p in range(first, last):
                n = self._put(n, ids[p], p, sid, p == last - 1 and last == seq.num_tokens)
        b.n_tokens = n
        rc = self.lib.llama_decode(self.ctx.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} for a batch of {n} tokens")
        rows = len(batch.sampled)
        ptr = self.lib.llama_get_logits(self.ctx.ctx)
        logits = np.ctypeslib.as_array(ptr, shape=(rows, self.n_vocab))
        return sample(torch.from_numpy(logits.copy()), batch.sampled)

    def close(self) -> None:
        """Free the batch and the context."""
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        self.ctx.close()

    def _put(self, n: int, token: int, pos: int, sid: int, logits: bool) -> int:
        b = self.batch
        b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = token, pos, 1, logits
        b.seq_id[n][0] = sid
        return n + 1

    def _seq_id(self, seq: Sequence) -> int:
        entry = self._seq_ids.get(id(seq))
        if entry is None:
            entry = self._seq_ids[id(seq)] = (seq, self._free_ids.pop())
        return entry[1]

    def _release(self, batch: ScheduledBatch) -> None:
        """Remove the cells of sequences that ended or were preempted since the last step (their
        seq_id is free again), and of a prefill that starts over at position 0."""
        restart = {id(s) for s, (first, _) in zip(batch.prefill, batch.chunks) if first == 0}
        mem = self.ctx.memory
        for key, (seq, sid) in list(self._seq_ids.items()):
            if seq.is_finished or seq.num_computed_tokens == 0 or key in restart:
                self.lib.llama_memory_seq_rm(mem, sid, -1, -1)
                del self._seq_ids[key]
                self._free_ids.append(sid)


class LlamaCppEngine(LLMEngine):
    """``LLMEngine``'s scheduling, sampling and outputs over llama.cpp's forward (module docstring).

    Args:
        model: a .gguf file.
        config: engine settings; keyword arguments override its fields. Used: ``max_num_seqs``,
            ``max_num_batched_tokens``, ``max_model_len`` (default min(training window,
            DEFAULT_MAX_MODEL_LEN)), ``block_size``, ``num_blocks``/``kv_cache_gb`` (the cells of
            the shared KV cache, f16), ``threads``. ``dtype`` is the GGUF's own (reported as
            "gguf"); ``enable_prefix_caching`` is off (llama.cpp sequences share no cells).

    Raises:
        UsageError: llama-cpp-python missing, not a .gguf file, ``deterministic`` asked for.
    """

    name = "llamacpp"

    def __init__(self, model: str | Path, config: EngineConfig | None = None, **overrides: Any) -> None:
        cfg = (config or EngineConfig()).replace(**overrides)
        if cfg.deterministic:
            raise UsageError("--deterministic is not supported by --engine llamacpp; accepted: --engine parainfer")
        self._llama_model = load_model(model)
        m = self._llama_model
        self.tokenizer = LlamaCppTokenizer(m)
        window = int(m.n_ctx_train()) or DEFAULT_MAX_MODEL_LEN
        self.max_model_len = min(cfg.max_model_len or DEFAULT_MAX_MODEL_LEN, window)
        cfg = cfg.replace(enable_prefix_caching=False).with_num_blocks(_kv_bytes_per_token(m), self.max_model_len)
        self.config = cfg
        n_ctx = cfg.num_blocks * cfg.block_size
        self.runner = LlamaCppRunner(m, n_ctx, cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.threads)
        self.block_manager = BlockManager(cfg.num_blocks, cfg.block_size, False)
        self.scheduler = Scheduler(self.block_manager, cfg.max_num_seqs, cfg.max_num_batched_tokens)
        self.batch_invariance = {"deterministic": False, "mode": "llamacpp",
                                 "reason": "llama.cpp's kernels are not checked for batch invariance"}
        self.eos_token_ids = set(self.tokenizer.eog_ids)
        self.grammars = NoGrammars(self.tokenizer, len(self.tokenizer), self.eos_token_ids, self.name)
        self._init_queues()

    def close(self) -> None:
        """Free llama.cpp's context and model."""
        self.runner.close()
        self._llama_model.close()


def _kv_bytes_per_token(model: Any) -> int:
    """KV-cache bytes of one token in llama.cpp's default f16 cache: 2 (K and V) x layers x
    kv heads x head size x 2 bytes; head size from ``<arch>.attention.key_length``, else
    n_embd / n_head."""
    import llama_cpp

    meta = model.metadata()
    arch = meta.get("general.architecture", "")
    n_head = llama_cpp.llama_model_n_head(model.model) or 1
    head_dim = int(meta.get(f"{arch}.attention.key_length") or llama_cpp.llama_model_n_embd(model.model) // n_head)
    kv_heads = llama_cpp.llama_model_n_head_kv(model.model) or n_head
    return 2 * llama_cpp.llama_model_n_layer(model.model) * kv_heads * head_dim * 2
