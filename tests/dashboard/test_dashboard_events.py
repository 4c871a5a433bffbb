"""The dashboards' event streams without a browser: rate, keys, bad addresses; the quantile maths."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from live_helpers import JobProcess, running_server, wait_for
from parainfer.dashboard import parse_address
from parainfer.errors import UsageError
from parainfer.serving.dashboard import histogram_quantile

KEY = "events-test-key"


def read_events(url: str, count: int, headers: dict[str, str]) -> tuple[list[dict], float]:
    """The first ``count`` payloads of the stream at ``url`` and the seconds they took."""
    got: list[dict] = []
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        t0 = time.monotonic()
        for line in response.iter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len(got) == count:
                    break
    return got, time.monotonic() - t0


def test_job_events_need_the_key_and_come_at_least_once_a_second(tmp_path):
    job = JobProcess(tmp_path, records=1000, ms_per_token=0.4, env={"PARAINFER_API_KEY": KEY})
    try:
        events = job.base + "/dashboard/api/events"
        assert httpx.get(events).status_code == 401
        assert httpx.get(events, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(job.base + "/dashboard/api/state?token=wrong").status_code == 401
        assert httpx.get(job.url).status_code == 200  # the page holds no data
        rebound = httpx.get(job.base + f"/dashboard/api/state?token={KEY}", headers={"Host": "evil.example:80"})
        assert rebound.status_code == 403  # a loopback dashboard answers only to a loopback Host
        got, seconds = read_events(events, 6, {"Authorization": f"Bearer {KEY}"})
        assert seconds <= 5 * 1.0 + 0.5, f"6 events took {seconds:.1f} s"  # 5 gaps at >= 1 event/s
        assert all(p["kind"] == "job" for p in got) and [p["t"] for p in got] == sorted(p["t"] for p in got)
        errors = job.base + f"/dashboard/api/errors?token={KEY}&row="
        row = wait_for(lambda: httpx.get(errors + "1").json().get("id") == 100 and httpx.get(errors + "1").json(), 30,
                       "the first poison record in the errors file")
        assert "poison record" in row["reason"] and row["row"] == 1
        missing = httpx.get(errors + "99")
        assert missing.status_code == 404 and "row '99' is not in the errors file" in missing.json()["error"]
        state = httpx.get(job.base + f"/dashboard/api/state?token={KEY}").json()
        assert state["t"] > got[-1]["t"]
        report = job.finish()
        assert report["records"] == 1000 and report["failed_records"] == 2  # POISON's first two
    finally:
        job.kill()


def test_serve_events_need_the_key_and_come_at_least_once_a_second(tmp_path):
    with running_server(task="classify", model="parainfer.testing:echo", workers=1, api_key=KEY,
                        data_dir=str(tmp_path / "data")) as url:
        assert httpx.get(url + "/dashboard/api/events").status_code == 401
        assert httpx.get(url + "/dashboard/api/state").status_code == 401
        assert httpx.get(url + "/dashboard").status_code == 200
        for _ in range(3):
            httpx.post(url + "/v1/classify", json={"input": ["a", "bb"]}, headers={"Authorization": f"Bearer {KEY}"})
        got, seconds = read_events(url + "/dashboard/api/events", 5, {"Authorization": f"Bearer {KEY}"})
        assert seconds <= 4 * 1.0 + 0.5, f"5 events took {seconds:.1f} s"
        cards = {c["id"]: c["value"] for c in got[-1]["cards"]}
        assert cards["requests"] == 3 and cards["mean_batch"] == 2.0


def test_histogram_quantile_interpolates_inside_the_bucket():
    buckets = [(0.1, 2.0), (0.5, 6.0), (1.0, 10.0), (float("inf"), 10.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (5 - 2) / 4)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 2.0)]) == 1.0  # in +Inf: the highest bound
    assert histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None


@pytest.mark.parametrize("bad", ["", "host:", "99999", "local:port", ":-1"])
def test_a_bad_dashboard_address_names_the_value_and_the_form(bad):
    with pytest.raises(UsageError, match=r"expected \[HOST:\]PORT"):
        parse_address(bad)
    assert parse_address("8765") == ("127.0.0.1", 8765) and parse_address("0.0.0.0:0") == ("0.0.0.0", 0)


def test_sharded_job_stream_shows_shards_as_bars_and_ends_on_the_report(tmp_path):
    job = JobProcess(tmp_path, 1000, 0.2, "--shard-mode", "on",
                     env={"PARAINFER_MIN_SHARD_BYTES": "20000"})
    try:
        payloads: list[dict] = []
        with httpx.stream("GET", job.base + "/dashboard/api/events", timeout=60) as response:
            for line in response.iter_lines():  # the stream ends after the final payload
                if line.startswith("data: "):
                    payloads.append(json.loads(line[6:]))
        report = job.finish()
        assert report["data_path"] == "sharded" and len(report["timeline"]) > 3
        final = payloads[-1]
        assert final["finished"] and not any(p["finished"] for p in payloads[:-1])
        cards = {c["id"]: c["value"] for c in final["cards"]}
        assert cards["done"] == report["records"] == 1000 and cards["failed"] == report["failed_records"] == 2
        bars = [row for p in payloads for row in p.get("gantt", {}).get("rows", [])]  # none before the driver starts
        assert len(bars) == len(report["timeline"]) and all(row[3].startswith("shard ") for row in bars)
        assert sorted(b[1] for b in bars) == sorted(round(r[2], 6) for r in report["timeline"])
    finally:
        job.kill()


def test_run_refuses_a_bad_dashboard_address_before_it_starts(tmp_path):
    import os
    import subprocess
    import sys

    from live_helpers import ROOT, write_input

    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-m", "parainfer.cli", "run", str(write_input(tmp_path / "in.jsonl", 5)),
                           "-o", str(out), "--model", "parainfer.testing:echo", "--dashboard", "localhost:http"],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--dashboard 'localhost:http': expected [HOST:]PORT" in done.stderr
    assert not out.exists()
