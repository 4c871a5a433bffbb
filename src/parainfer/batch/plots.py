"""Plots of a run report: a PNG/SVG/PDF (matplotlib) for papers, an interactive HTML page (plotly).

``parainfer report REPORT.json --plot OUT.png`` draws, with matplotlib:

1. a Gantt chart: one row per worker, one bar per task (from the report's ``timeline``), so
   idle gaps and stragglers are visible;
2. records completed per second over the parallel phase, in fixed-width time bins;
3. the T_c / T_s / T_e / T_w breakdown (seconds; T_e and T_w are worker-seconds).

``--plot OUT.html`` writes the same panels, plus speedup and efficiency, as one self-contained
plotly page (plotly.js inline: opens offline) with zoom and per-task hover (``interactive``).
"""

from __future__ import annotations

import html
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


# Task states in the HTML Gantt chart and their colours: ok; failed (some of its records failed and
# went to the errors file); retried (given out again after a worker died running it).
STATES = {"ok": "#4c8bd6", "retried": "#f2a541", "failed": "#d9534f"}
# Per-task hover fields (the ``customdata`` columns of a worker's hover trace, float32: counts exact
# up to 2**24, times to about 1 ms over the first 2 hours), 36 bytes a task before base64; the bars' ends are float32
# too, the rows uint16: ~90 bytes a task in the page (13.5 MB for 100,000 tasks, plotly.js included).
HOVER_COLUMNS = ["task", "records", "tokens", "padded_tokens", "start_s", "end_s", "duration_s", "attempt",
                 "failed_records"]


def task_state(row: list[Any]) -> str:
    """The state of one ``timeline`` row: "failed" when records in it failed, "retried" when it
    ran again after a worker died (``attempt`` > 0), else "ok". Rows of reports written before
    those columns existed are "ok"."""
    if len(row) > 8 and row[8]:
        return "failed"
    if len(row) > 7 and row[7]:
        return "retried"
    return "ok"


def interactive(report: dict[str, Any]) -> Any:
    """Build the interactive figure (a ``plotly.graph_objects.Figure``) for a report dict.

    Panels: the per-worker Gantt chart (one row per worker, bars coloured by ``task_state``,
    drawn as WebGL line segments so 100,000 tasks stay fluid), throughput (records/s over time),
    the T_c / T_s / T_e / T_w breakdown, and speedup and efficiency against the ideal. The Gantt
    chart has one line trace per task state present (``name`` the state; x: start, end, NaN per
    task; y: the worker) and one hover trace (``name`` "tasks": invisible markers at the tasks'
    midpoints, y the worker, ``customdata`` rows the ``HOVER_COLUMNS`` of each task, in timeline
    order; the hover names the worker by its row's label, "worker W[ @ NODE]").
    """
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    timeline = report.get("timeline") or []
    workers = report["workers"]
    labels = worker_labels(report)
    fig = make_subplots(rows=3, cols=2, specs=[[{"colspan": 2}, None], [{"colspan": 2}, None], [{}, {}]],
                        row_heights=[0.25 + 0.02 * min(workers, 40), 0.2, 0.2], vertical_spacing=0.12,
                        subplot_titles=[f"Tasks per worker ({report.get('policy', '?')} policy, imbalance "
                                        f"{report.get('imbalance', 0):.2f}); drag to zoom, hover a task",
                                        "Throughput over time", "Where the time went (seconds)",
                                        f"Speedup and efficiency on {workers} workers"])
    # Few traces whatever the size (plotly's per-trace cost is what grows with 1,000 workers): one
    # of line segments per task state, and one of hover points for all tasks.
    row_type = np.uint16 if workers < 2**16 else np.uint32  # each point's worker: its row
    data = np.array([[r[0], r[4], r[5], r[6], r[2], r[3], r[3] - r[2], r[7] if len(r) > 7 else 0,
                      r[8] if len(r) > 8 else 0] for r in timeline], dtype=np.float64).reshape(-1, len(HOVER_COLUMNS))
    rows = np.array([r[1] for r in timeline], dtype=row_type)
    states = np.array([task_state(r) for r in timeline])
    for state, color in STATES.items():
        pick = states == state
        if not pick.any():
            continue
        xs = np.full((int(pick.sum()), 3), np.nan, dtype=np.float32)  # start, end, gap: a segment per task
        xs[:, 0], xs[:, 1] = data[pick, 4], data[pick, 5]
        fig.add_trace(go.Scattergl(x=xs.ravel(), y=np.repeat(rows[pick], 3), mode="lines", name=state,
                                   line={"color": color, "width": 12 if workers <= 16 else 6},
                                   legendgroup=state, hoverinfo="skip"), row=1, col=1)
    if len(data):
        # %{y} shows the row's tick label: "worker W", or "worker W @ NODE" on several nodes.
        fig.add_trace(go.Scattergl(
            x=((data[:, 4] + data[:, 5]) / 2).astype(np.float32), y=rows, mode="markers", name="tasks",
            marker={"size": 6, "opacity": 0}, showlegend=False, customdata=data.astype(np.float32),
            hovertemplate=("<b>%{y}</b><br>task %{customdata[0]:d} "
                           "(attempt %{customdata[7]:d})<br>records %{customdata[1]:d}, failed %{customdata[8]:d}"
                           "<br>tokens %{customdata[2]:d} real, %{customdata[3]:d} padded<br>start "
                           "%{customdata[4]:.3f} s, end %{customdata[5]:.3f} s<br>duration %{customdata[6]:.3f} s"
                           "<extra></extra>")), row=1, col=1)
    fig.update_yaxes(tickvals=list(range(workers)), ticktext=labels, autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text="seconds since first dispatch", row=1, col=1)
    end_s = max([t[3] for t in timeline], default=report.get("t_parallel_s", 1.0))
    xs, ys = _throughput(timeline, end_s, bins=100)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"shape": "hvh", "color": "#555555"}, name="records/s", showlegend=False,
                             hovertemplate="%{x:.2f} s: %{y:,.1f} records/s<extra></extra>"), row=2, col=1)
    fig.update_xaxes(title_text="seconds since first dispatch", matches="x", row=2, col=1)
    fig.update_yaxes(title_text="records/s", row=2, col=1)
    names = ["T_c create", "T_s schedule", "T_e execute", "T_w wait"]
    values = [report["t_create_s"], report["t_schedule_s"], report["t_execute_s"], report["t_wait_s"]]
    fig.add_trace(go.Bar(x=values, y=names, orientation="h", marker_color=["#6a9fd8", "#f2a541", "#5bb381", "#c9c9c9"],
                         showlegend=False, hovertemplate="%{y}: %{x:.3f} s<extra></extra>"), row=3, col=1)
    fig.update_yaxes(autorange="reversed", row=3, col=1)
    fig.update_xaxes(title_text="seconds (T_e and T_w in worker-seconds)", row=3, col=1)
    fig.add_trace(go.Bar(x=["speedup", "ideal (N)"], y=[report["speedup"], workers], marker_color=["#5bb381", "#c9c9c9"],
                         showlegend=False, hovertemplate="%{x}: %{y:.2f}<extra></extra>"), row=3, col=2)
    fig.add_annotation(text=f"efficiency {report['efficiency']:.2f}", xref="x4 domain", yref="y4 domain",
                       x=0.98, y=0.98, showarrow=False)
    summary = "<br>".join(html.escape(line) for line in summary_lines(report)[:3])
    fig.update_layout(title={"text": f"parainfer run report<br><sup>{summary}</sup>", "x": 0.01, "y": 0.985, "yanchor": "top"},
                      height=700 + 20 * min(workers, 40), margin={"t": 140}, legend={"title": "task state"},
                      hovermode="closest", template="plotly_white")
    return fig


def save_plot(report: dict[str, Any], out: str | Path) -> Path:
    """Write the figure to ``out``: .png, .svg or .pdf as a matplotlib image; .html as an
    interactive plotly page (``interactive``: plotly.js inline, no external script, so it opens
    offline) with the summary lines and the report's scalar fields below it.

    Raises UsageError for any other extension, or when the folder of ``out`` does not exist.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf", ".html"):
        raise UsageError(f"plot file {str(out)!r} has unknown extension {suffix!r}; accepted: .png .svg .pdf .html")
    if not out.parent.is_dir():
        raise UsageError(f"plot folder {str(out.parent)!r} does not exist; create it or choose another path")
    if suffix != ".html":
        draw(report).savefig(out, dpi=110)
        return out
    figure = interactive(report).to_html(include_plotlyjs=True, full_html=False, div_id="parainfer-report",
                                         config={"displaylogo": False, "scrollZoom": True})
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in report.items() if not isinstance(v, (list, dict)))
    summary = html.escape("\n".join(summary_lines(report)))
    out.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>parainfer run report</title></head>"
                   f"<body>{figure}<pre>{summary}</pre><table border=1 cellpadding=3>{rows}</table></body></html>",
                   encoding="utf-8")
    return out
