"""``parainfer serve --executor ray --min-replicas 1 --max-replicas 2`` on the two-node cluster: the
autoscaler adds a replica actor under a stepped load and removes it (drained, then killed) when
the load goes; every request answers 200 with the right content. Each request carries 3 inputs,
so 1 client is 3 ongoing inputs (under the target of 4) and 16 clients up to 48."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path


def test_serve_on_ray_scales_1_2_1_without_a_failed_request(ray_cluster) -> None:
    port = "18614"
    server = ray_cluster.start("serve", "--task", "classify", "--model", "parainfer.testing:echo", "--port", port,
                               "--executor", "ray", "--address", ray_cluster.address, "--cpus-per-worker", "0.5",
                               "--min-replicas", "1", "--max-replicas", "2", "--target-ongoing", "4", "--upscale-delay-s", "0.5",
                               "--downscale-delay-s", "2", "--autoscale-look-back-s", "1", "--log-level", "warning")
    try:
        client = subprocess.run(["ip", "netns", "exec", ray_cluster.head_ns, sys.executable,
                                 str(Path(__file__).with_name("autoscale_client.py")), f"http://127.0.0.1:{port}"],
                                capture_output=True, text=True, env=ray_cluster.env(), timeout=300)
        assert client.returncode == 0, client.stderr[-3000:]
        result = json.loads(client.stdout.strip().splitlines()[-1])
        assert set(result["codes"]) == {"200"} and result["codes"]["200"] > 50, result["codes"]
        assert result["wrong"] == 0
        auto = result["health"]["autoscaling"]
        assert auto["scale_ups"] == 1 and auto["scale_downs"] == 1 and auto["ready"] == 1, auto
        assert any(s["ready"] == 2 for s in result["seen"]), result["seen"][-5:]
        assert auto["last_event"]["direction"] == "down" and len(result["health"]["replica_state"]) == 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
