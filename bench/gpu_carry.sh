#!/usr/bin/env bash
# Build .devcarry/ (git-ignored) for a GPU check on a machine that has torch + transformers but
# no network: wheels of the serving stack for Python 3.12, a bf16 copy of the default encoder
# (45 MB, under a 64 MiB transfer limit) and a VADER sample. Run from the repo root, in the venv.
#   bash bench/gpu_carry.sh && (ship .devcarry/ and run: bash bench/gpu_check.sh)
set -euo pipefail
grep -qx "/.devcarry/" .git/info/exclude 2>/dev/null || echo "/.devcarry/" >> .git/info/exclude
mkdir -p .devcarry/whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .devcarry/whl \
  fastapi starlette pydantic pydantic_core annotated-types typing-inspection typing_extensions \
  uvicorn orjson httptools platformdirs filelock
python - <<'PY'
import shutil, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
from parainfer.models.hf_embed import default_embed_model_dir
src, dst = default_embed_model_dir(), Path(".devcarry/minilm")
dst.mkdir(parents=True, exist_ok=True)
for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
          "sentence_bert_config.json", "modules.json"]:
    shutil.copy(src / f, dst / f)
shutil.copytree(src / "1_Pooling", dst / "1_Pooling", dirs_exist_ok=True)
weights = load_file(src / "model.safetensors")
save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, dst / "model.safetensors",
          metadata={"format": "pt"})
PY
head -n 15000 "$(parainfer datasets fetch vader)" > .devcarry/vader.jsonl
du -sh .devcarry
