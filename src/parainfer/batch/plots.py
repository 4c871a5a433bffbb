"""Plots of a run report (matplotlib): per-worker timeline, throughput over time, time breakdown.

``parainfer report REPORT.json --plot OUT.png`` (or ``.html``, a page with the figure and the
summary table embedded) draws:

1. a Gantt chart: one row per worker, one bar per task (from the report's ``timeline``), so
   idle gaps and stragglers are visible;
2. records completed per second over the parallel phase, in fixed-width time bins;
3. the T_c / T_s / T_e / T_w breakdown (seconds; T_e and T_w are worker-seconds).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError
from parainfer.batch.report import summary_lines


def _throughput(timeline: list[list[Any]], end_s: float, bins: int = 40) -> tuple[list[float], list[float]]:
    """Records finished per second in ``bins`` equal time bins over [0, end_s]."""
    width = max(end_s, 1e-9) / bins
    counts = [0.0] * bins
    for _task, _worker, _start, end, records, *_ in timeline:
        counts[min(bins - 1, int(end / width))] += records
    return [width * (i + 0.5) for i in range(bins)], [c / width for c in counts]


def worker_labels(report: dict[str, Any]) -> list[str]:
    """One y-axis label per worker: "worker W", plus "@ NODE" where the report names the node it
    last ran on (``executor.worker_nodes``; reports from several nodes, e.g. ``--executor ray``)."""
    nodes = (report.get("executor") or {}).get("worker_nodes") or []
    several = len({n for n in nodes if n}) > 1 or (report.get("executor") or {}).get("name") == "ray"
    return [f"worker {w}" + (f" @ {nodes[w]}" if several and w < len(nodes) and nodes[w] else "")
            for w in range(report["workers"])]


def draw(report: dict[str, Any]) -> Any:
    """Build the figure (a matplotlib Figure with three panels) for a report dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report.get("timeline") or []
    workers = report["workers"]
    fig, (gantt, rate, parts) = plt.subplots(3, 1, figsize=(11, 4 + 0.35 * workers + 5),
                                             gridspec_kw={"height_ratios": [1 + 0.25 * workers, 1.4, 1]})
    colors = plt.get_cmap("tab20").colors
    for task, worker, start, end, *_ in timeline:
        gantt.barh(worker, end - start, left=start, height=0.7, color=colors[task % len(colors)], linewidth=0)
    gantt.set_yticks(range(workers), worker_labels(report))
    gantt.invert_yaxis()
    gantt.set_xlabel("seconds since first dispatch")
    gantt.set_title(f"Tasks per worker ({report.get('policy', '?')} policy, imbalance "
                    f"{report.get('imbalance', 0):.2f}); white = idle")
    end_s = max([t[3] for t in timeline], default=report.get("t_parallel_s", 1.0))
    xs, ys = _throughput(timeline, end_s)
    rate.plot(xs, ys, drawstyle="steps-mid")
    rate.set_xlabel("seconds since first dispatch")
    rate.set_ylabel("records/s")
    rate.set_title("Throughput over time")
    names = ["T_c create", "T_s schedule", "T_e execute", "T_w wait"]
    values = [report["t_create_s"], report["t_schedule_s"], report["t_execute_s"], report["t_wait_s"]]
    parts.barh(names, values, color=["#6a9fd8", "#f2a541", "#5bb381", "#c9c9c9"])
    parts.invert_yaxis()
    parts.set_xlabel("seconds (T_e and T_w in worker-seconds)")
    parts.set_title(f"Where the time went: wall {report['wall_s']:.2f} s, speedup {report['speedup']:.2f}, "
                    f"efficiency {report['efficiency']:.2f}")
    fig.tight_layout()
    return fig


def save_plot(report: dict[str, Any], out: str | Path) -> Path:
    """Write the figure to ``out``: .png, .svg or .pdf as an image; .html as a page.

    Raises UsageError for any other extension.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf", ".html"):
        raise UsageError(f"plot file {str(out)!r} has unknown extension {suffix!r}; accepted: .png .svg .pdf .html")
    if not out.parent.is_dir():
        raise UsageError(f"plot folder {str(out.parent)!r} does not exist; create it or choose another path")
    fig = draw(report)
    if suffix != ".html":
        fig.savefig(out, dpi=110)
        return out
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    image = base64.b64encode(buf.getvalue()).decode("ascii")
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in report.items() if not isinstance(v, (list, dict)))
    summary = "<br>".join(html.escape(line) for line in summary_lines(report))
    out.write_text(f"<!doctype html><meta charset='utf-8'><title>parainfer run report</title>"
                   f"<h1>parainfer run report</h1><p>{summary}</p><img src='data:image/png;base64,{image}'>"
                   f"<table border=1 cellpadding=3>{rows}</table>", encoding="utf-8")
    return out
