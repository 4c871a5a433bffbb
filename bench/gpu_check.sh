#!/usr/bin/env bash
# GPU check (prepared by bench/gpu_carry.sh): --device cuda batch job on 1 and 2 workers vs 8 CPU
# workers, embeddings GPU vs CPU, and the serving bench (batching on vs off) on one GPU replica.
# Writes run_*.json and serving_gpu.md under $OUT (or ./gpu-out).
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devcarry/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.is_available())"
M=.devcarry/minilm; V=.devcarry/vader.jsonl
for spec in "cuda 1" "cuda 2" "cpu 8"; do set -- $spec
  python3 -m parainfer.cli run $V -o /tmp/o_$1_$2.jsonl --task embed --model $M --device $1 --workers $2 \
    --report "$OUT/run_$1_$2.json" -q --overwrite
  python3 -c "import json; r=json.load(open('$OUT/run_$1_$2.json')); print('$1', $2, r['model']['device'], r['model']['dtype'], r['records'], 'records, parallel texts/s', round(r['parallel_throughput_records_per_s']), 'whole', round(r['throughput_records_per_s']))"
done
python3 - <<'PY'
import json, numpy as np
a = np.array([json.loads(l)["embedding"] for l in open("/tmp/o_cuda_1.jsonl")])
b = np.array([json.loads(l)["embedding"] for l in open("/tmp/o_cpu_8.jsonl")])
print("GPU vs CPU embeddings: min cosine", float((a * b).sum(1).min()), "rows", len(a), len(b))
PY
timeout 300 python3 bench/bench_serving.py --device cuda --workers 1 --model $M --texts $V --duration 8 \
  --concurrency 1,8,32,64 --rates '' 2>/dev/null | tee "$OUT/serving_gpu.md"
