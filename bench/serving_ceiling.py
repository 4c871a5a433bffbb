"""The offline ceiling for ``bench_serving.py``: ``parainfer run`` on the same texts with the same
replicas and dtype; its parallel phase (workers loaded, every task running) in texts/s is what
serving those texts one request at a time could reach at best.

    python bench/serving_ceiling.py --texts $(parainfer datasets fetch mixed) --workers 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def offline_ceiling(texts_path: str, task: str, workers: int, dtype: str, model: str | None = None) -> dict:
    """Run ``parainfer run`` on ``texts_path``; returns {"texts_per_s" (parallel phase), "wall_s",
    "records", "padding_efficiency", "command"} from its run report.

    Raises:
        subprocess.CalledProcessError: the run failed (its output says why).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out, rep = Path(tmp) / "out.jsonl", Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "parainfer.cli", "run", texts_path, "--task", task, "--output", str(out),
               "--workers", str(workers), "--dtype", dtype, "--report", str(rep), "--quiet"]
        cmd += ["--model", model] if model else []
        subprocess.run(cmd, check=True)
        report = json.loads(rep.read_text())
    return {"texts_per_s": report["parallel_throughput_records_per_s"], "wall_s": report.get("wall_s"),
            "records": report.get("records"), "padding_efficiency": report.get("padding_efficiency"),
            "command": " ".join(["parainfer"] + cmd[3:]).replace(str(out), "OUT").replace(str(rep), "REPORT")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", required=True)
    parser.add_argument("--task", default="embed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--model", default=None)
    a = parser.parse_args()
    print(json.dumps(offline_ceiling(a.texts, a.task, a.workers, a.dtype, a.model), indent=1))
