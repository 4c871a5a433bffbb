"""docs/grafana/parainfer-serve.json against real servers: every metric its PromQL names is one
that `serve`'s /metrics exports (a classify server and a two-replica generate server, after a
few requests), every label it groups or filters by is one of that metric's labels, and the file
has the shape Grafana imports (a ``${DS_PROMETHEUS}`` data-source input, panels with targets)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import running_server

BOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "parainfer-serve.json"
SCRAPE = BOARD.with_name("prometheus.yml")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
GRAFANA_LABELS = {"le", "job", "instance"}  # le: histogram buckets; job, instance: added by Prometheus


def exported(url: str) -> dict[str, tuple[str, set[str]]]:
    """/metrics parsed: {sample name: (its family's type, the label names of its samples)}."""
    text = httpx.get(url + "/metrics", timeout=30).text
    out: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, (family.type, set()))[1].update(sample.labels)
    return out


def expressions(board: dict) -> list[str]:
    """Every PromQL expression of the board: panel targets and template-variable queries."""
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        exprs.append(re.fullmatch(r"label_values\((.*), *\w+\)", query).group(1))
    return exprs


def references(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names it filters or groups by) for each selector in ``expr``."""
    bare = re.sub(r'"[^"]*"', '""', expr)  # label values (regexes included) are not names
    grouped = {g.strip() for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", bare)
               for g in clause.split(",") if g.strip()}
    out = []
    for name, matchers in re.findall(r"\b(parainfer_\w+)(?:\{([^}]*)\})?", bare):
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)) | grouped
        out.append((name, labels))
    return out


@pytest.fixture(scope="module")
def metrics() -> dict[str, tuple[str, set[str]]]:
    """The union of /metrics of a classify server and of a two-replica generate server, after a
    few requests each (answers 200, 413, 404) so labelled series exist."""
    seen: dict[str, tuple[str, set[str]]] = {}
    with running_server(task="classify", model="parainfer.testing:echo", workers=1) as url:
        for body in ({"input": ["a", "abc", "ab"]}, {"input": "one text"}, {"input": ["a"] * 3000}):
            httpx.post(url + "/v1/classify", json=body, timeout=30)
        assert httpx.get(url + "/nowhere").status_code == 404
        seen.update(exported(url))
    with running_server(wait_ready=False, task="generate", workers=2, max_num_seqs=4, threads_per_worker=1,
                        request_timeout_s=300) as url:
        deadline = time.monotonic() + 300
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < deadline, "replicas did not load"
            time.sleep(0.1)
        for prompt in ("The capital of France is", "Once upon a time"):
            r = httpx.post(url + "/v1/completions", json={"model": "m", "prompt": prompt, "max_tokens": 3,
                                                         "temperature": 0}, timeout=300)
            assert r.status_code == 200, r.text
        for name, (kind, labels) in exported(url).items():
            seen.setdefault(name, (kind, set()))[1].update(labels)
    return seen


def test_every_metric_and_label_the_board_uses_is_exported(metrics: dict[str, tuple[str, set[str]]]) -> None:
    board = json.loads(BOARD.read_text())
    checked = set()
    for expr in expressions(board):
        refs = references(expr)
        assert refs, f"no parainfer metric in {expr!r}"
        for name, labels in refs:
            assert name in metrics, f"{name!r} (in {expr!r}) is not in /metrics; exported: {sorted(metrics)}"
            kind, exported_labels = metrics[name]
            if name.endswith(HISTOGRAM_SUFFIXES):  # a histogram's series: its family must be one
                assert kind == "histogram", (name, kind)
                assert name.rsplit("_", 1)[0] + "_bucket" in metrics
            else:
                assert kind in ("counter", "gauge"), f"{name!r} is a {kind}; query its _bucket/_sum/_count"
            if "histogram_quantile(" in expr and name.endswith("_bucket"):
                assert re.search(r"by \((le\b|[^)]*\ble\b)", expr), f"quantile without le in {expr!r}"
            missing = labels - exported_labels - GRAFANA_LABELS
            assert not missing, f"{expr!r} uses labels {missing} that {name!r} lacks ({exported_labels})"
            checked.add(name)
    # The board covers what the issue asks: HTTP, latency, batching, replicas, generation, cache.
    for name in ("parainfer_http_requests_total", "parainfer_http_request_duration_seconds_bucket",
                 "parainfer_queue_depth", "parainfer_batch_size_bucket", "parainfer_batch_tokens_total",
                 "parainfer_replicas_ready", "parainfer_replica_busy_seconds_total",
                 "parainfer_replica_restarts_total", "parainfer_generation_replica_requests_total",
                 "parainfer_generated_tokens_total", "parainfer_time_to_first_token_seconds_bucket",
                 "parainfer_inter_token_latency_seconds_bucket", "parainfer_prefix_cache_hits_total",
                 "parainfer_prefix_cache_queries_total", "parainfer_generation_sequences_total"):
        assert name in checked, name


def test_board_is_an_importable_grafana_dashboard() -> None:
    board = json.loads(BOARD.read_text())
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert board["__inputs"][0]["type"] == "datasource" and board["__inputs"][0]["pluginId"] == "prometheus"
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"] and board["id"] is None
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert len(graphs) >= 15 and {p["type"] for p in graphs} <= {"timeseries", "stat"}
    for p in graphs:
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"] and all(t["datasource"] == p["datasource"] and t["expr"] for t in p["targets"])
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        grid = p["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, p["title"]
    cells = set()  # no two panels share a grid cell
    for p in board["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']!r} overlaps another panel"
        cells |= mine
    for var in board["templating"]["list"]:
        assert var["datasource"]["uid"] == "${DS_PROMETHEUS}"
    import yaml  # PyYAML, a dependency of transformers

    job = yaml.safe_load(SCRAPE.read_text())["scrape_configs"][0]
    assert job["job_name"] == "parainfer" and job["metrics_path"] == "/metrics"
    assert all(re.fullmatch(r"[\w.-]+:\d+", t) for c in job["static_configs"] for t in c["targets"])
