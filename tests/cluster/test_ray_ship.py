"""What the job needs reaches every node by itself: a ``--model module:function`` whose module
(a file of the driver's working folder, importing a package folder beside it) and a model
directory written by ``parainfer train`` exist only on the driver's disk.

The driver runs in a mount namespace of its own with a tmpfs over its working folder, so the
Ray nodes (their own mount namespaces, ``raycluster.sh``) see an empty folder there: without
shipping, the module cannot be imported and the model cannot be read on either node. Each job
runs with ``--policy static`` on one actor per node, so the second node's actor runs half the
tasks; the output must be byte-identical to a local run of the same job in the same folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.cluster.test_ray_cluster import write_input

USERMOD = """
import userpkg

def tag(texts):
    return [{"tag": userpkg.shout(t), "n": userpkg.words.count(t)} for t in texts]
"""
USERPKG = {"__init__.py": "from userpkg import words\n\ndef shout(t):\n    return t.strip().upper()[:12] + '!'\n",
           "words.py": "def count(t):\n    return len(t.split())\n"}
COMMON = ["--policy", "static", "--batch-size", "16", "--bucket-window", "64", "-q"]


def write_files(stage: Path) -> None:
    stage.mkdir()
    write_input(stage / "in.jsonl", records=600)
    (stage / "usermod.py").write_text(USERMOD)
    (stage / "userpkg").mkdir()
    for name, code in USERPKG.items():
        (stage / "userpkg" / name).write_text(code)
    words = ["good", "great", "fine", "nice", "bad", "awful", "poor", "dull"]
    rows = [{"text": f"{w} word {i}", "label": "pos" if j < 4 else "neg"} for i in range(6) for j, w in enumerate(words)]
    (stage / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_module_and_trained_model_only_on_the_driver_run_on_both_nodes(ray_cluster, tmp_path: Path) -> None:
    stage, private, seen = tmp_path / "stage", tmp_path / "private", tmp_path / "seen"
    write_files(stage)
    private.mkdir()
    seen.mkdir()
    py = sys.executable
    ray = ["--executor", "ray", "--address", ray_cluster.address, "--workers", "2", "--cpus-per-worker", "1"]
    jobs = {"mod": ["--model", "usermod:tag"], "dir": ["--task", "classify", "--model", "model"]}
    lines = [f"mount -t tmpfs tmpfs {private}", f"cp -r {stage}/. {private}/", f"rm -rf {stage}", f"cd {private}",
             f"{py} -m parainfer.cli train labelled.jsonl --output model --validation 0.25 >/dev/null"]
    for name, model in jobs.items():
        args = " ".join(["in.jsonl", *model, *COMMON])
        lines += [f"{py} -m parainfer.cli run {args} -o {name}.local.jsonl --workers 2",
                  f"{py} -m parainfer.cli run {args} -o {name}.ray.jsonl --report {name}.r.json {' '.join(ray)}"]
    lines.append(f"cp *.jsonl *.r.json {seen}/")
    script = "set -e\n" + "\n".join(lines)
    cmd = ["ip", "netns", "exec", ray_cluster.head_ns, "unshare", "--mount", "--propagation", "private",
           "sh", "-c", script]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ray_cluster.env(), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(private.iterdir())  # the nodes (and this process) never saw the driver's files
    head_ip, node_ip = ray_cluster.node_ips
    for name in jobs:
        assert (seen / f"{name}.ray.jsonl").read_bytes() == (seen / f"{name}.local.jsonl").read_bytes(), name
        rep = json.loads((seen / f"{name}.r.json").read_text())
        ex = rep["executor"]
        assert rep["records"] == 600 and rep["failed_records"] == 0
        on_node2 = [w for w, node in enumerate(ex["worker_nodes"]) if node == node_ip]
        assert on_node2 and rep["per_worker"][on_node2[0]]["records"] > 0, ex  # node 2 did tasks
        shipped = ex["shipped"]
        if name == "mod":
            assert sorted(Path(m).name for m in shipped["modules"]) == ["usermod.py", "userpkg"], shipped
            assert shipped["paths"] == [] and shipped["fetched"] == {}
        else:
            assert shipped["modules"] == [] and [p["path"] for p in shipped["paths"]] == [f"{private}/model/model.skops"]
            assert shipped["paths"][0]["shipped"] and sorted(shipped["fetched"]) == sorted([head_ip, node_ip]), shipped
    rows = [json.loads(line) for line in (seen / "mod.ray.jsonl").read_text().splitlines()]
    assert rows[0]["tag"] == "WORD!" and rows[1]["n"] == 1 + 37 % 40
    print(textwrap.shorten(proc.stderr, 500))
