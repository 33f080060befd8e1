"""One self-contained HTML page per run: data, anomalies, metrics, plots, edge export; and one per fleet.

Everything is inlined (CSS, SVG charts, a few lines of JS), so the file opens
from disk in any browser with no server and no internet. TFDV's interactive
Facets view loads its code from the internet, so the statistics here are drawn
from the same DatasetFeatureStatistics protos as static tables and histograms.
"""

from __future__ import annotations

import datetime
import glob
import html
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from contract.files import write_text
from pipeline.metadata import iso, node_name, open_metadata
from contract import tasks
from reports.summary import RunSummary, read_anomalies, read_run

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2329;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:18px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.85}main{padding:12px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:16px 0;padding:4px 18px 14px}
h2{font-size:16px;cursor:pointer;user-select:none}h2::before{content:'\\25BE  '}
section.closed h2::before{content:'\\25B8  '}section.closed>.body{display:none}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border-bottom:1px solid #e6e9ed;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f5;cursor:pointer}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.bad{color:#c62828;font-weight:600}.muted{color:#68707a}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;color:#fff}
.badge.ok{background:#1a7f37}.badge.bad{background:#c62828}.badge.muted{background:#8a939d}
.charts{display:flex;flex-wrap:wrap;gap:24px}figure{margin:0}figcaption{font-size:12px;color:#68707a}
svg text{font:11px system-ui,sans-serif;fill:#444}.scroll{overflow-x:auto}
"""

# Collapsible sections and click-to-sort tables; no external code.
_JS = """
document.querySelectorAll('section > h2').forEach(function (h) {
  h.addEventListener('click', function () { h.parentElement.classList.toggle('closed'); });
});
document.querySelectorAll('table.sortable th').forEach(function (th, index) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var column = Array.prototype.indexOf.call(th.parentElement.children, th);
    var rows = Array.prototype.slice.call(body.rows);
    var descending = th.dataset.order !== 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.v || a.cells[column].textContent;
      var y = b.cells[column].dataset.v || b.cells[column].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return descending ? -c : c;
    });
    th.dataset.order = descending ? 'desc' : 'asc';
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_PALETTE = ("#1f77b4", "#e4572e", "#2a9d8f", "#8e44ad")


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits: int = 4) -> str:
    if value is None or value != value:
        return "-"
    if isinstance(value, float) and not value.is_integer() and abs(value) < 1000:
        return f"{value:.{digits}f}"
    return f"{int(value):,}" if abs(value) >= 1000 else f"{value:g}"


def _table(headers: Sequence[str], rows: Iterable[Sequence], numeric: Sequence[int] = (), cls: str = "sortable") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            raw = cell if isinstance(cell, str) and cell.startswith("<") else _e(cell)
            cells.append(f'<td class="num">{raw}</td>' if i in numeric else f"<td>{raw}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2><div class="body">{body}</div></section>'


# --- charts (inline SVG) ------------------------------------------------------------------------------------------

def line_chart(series: Dict[str, List[Tuple[float, float]]], x_label: str, y_label: str, diagonal: bool = True,
               size: int = 300) -> str:
    """A square [0,1]x[0,1] chart: ROC curves, calibration (reliability) curves."""
    pad = 36
    inner = size - 2 * pad

    def xy(x, y):
        return pad + x * inner, size - pad - y * inner

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img">',
             f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="#fff" stroke="#ccd"/>']
    for t in (0, 0.25, 0.5, 0.75, 1):
        gx, gy = xy(t, t)
        parts.append(f'<text x="{gx:.0f}" y="{size - pad + 14}" text-anchor="middle">{t:g}</text>')
        parts.append(f'<text x="{pad - 6}" y="{gy + 4:.0f}" text-anchor="end">{t:g}</text>')
    if diagonal:
        (x0, y0), (x1, y1) = xy(0, 0), xy(1, 1)
        parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#bbb" stroke-dasharray="4 4"/>')
    for i, (name, points) in enumerate(series.items()):
        color = _PALETTE[i % len(_PALETTE)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{px:.1f},{py:.1f}" for j, (px, py) in
                        enumerate(xy(x, y) for x, y in points))
        parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"><title>{_e(name)}</title></path>')
        parts.append(f'<text x="{pad + 8}" y="{pad + 16 + 14 * i}" style="fill:{color}">{_e(name)}</text>')
    parts.append(f'<text x="{size / 2}" y="{size - 4}" text-anchor="middle">{_e(x_label)}</text>')
    parts.append(f'<text x="12" y="{size / 2}" text-anchor="middle" transform="rotate(-90 12 {size / 2})">'
                 f'{_e(y_label)}</text></svg>')
    return "".join(parts)


def histogram_svg(series: Dict[str, List[Tuple[str, float]]], width: int = 160, height: int = 44) -> str:
    """Small grouped bars of bucket shares (each series normalised to 1) for comparing splits."""
    series = {name: values for name, values in series.items() if values}
    if not series:
        return ""
    buckets = max(len(v) for v in series.values())
    if buckets == 0:
        return ""
    group = width / buckets
    bar = max(group / (len(series) + 0.5), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    for s, (name, values) in enumerate(series.items()):
        total = sum(v for _, v in values) or 1.0
        peak = max(v / total for _, v in values) or 1.0
        for b, (label, value) in enumerate(values):
            h = (value / total) / peak * (height - 4)
            x = b * group + s * bar
            parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar * 0.9:.1f}" height="{h:.1f}" '
                         f'fill="{_PALETTE[s % len(_PALETTE)]}"><title>{_e(name)} {_e(label)}: '
                         f'{value / total:.1%}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def time_chart(series: Dict[str, List[Tuple[float, float]]], y_label: str, bound: Optional[float] = None,
               higher_is_better: bool = False, width: int = 540, plot_height: int = 170) -> str:
    """Values over time (x: epoch seconds, shown as UTC), one line per series, with a dashed `bound`; a point
    on the wrong side of the bound is a red dot, so a breach is seen at a glance. The legend is under the
    plot, three names a row."""
    points = [(x, y) for values in series.values() for x, y in values]
    if not points:
        return ""
    left, right, top = 52, 12, 10
    legend_rows = (len(series) + 2) // 3
    height = top + plot_height + 22 + 15 * legend_rows
    xs, ys = [x for x, _ in points], [y for _, y in points] + ([bound] if bound is not None else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(min(ys), 0.0), max(ys)
    y1 = y1 + (y1 - y0) * 0.08 or 1.0
    span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    # Windows shorter than an hour apart are told apart by their seconds.
    clock = "%Y-%m-%d %H:%M" if span_x >= 3600 or x1 == x0 else "%H:%M:%S"

    def when(x) -> str:
        return datetime.datetime.fromtimestamp(x, datetime.timezone.utc).strftime(clock)

    def xy(x, y):
        return (left + (x - x0) / span_x * (width - left - right) if x1 > x0 else (left + width - right) / 2,
                top + plot_height - (y - y0) / span_y * plot_height)

    def breach(y):
        return bound is not None and (y < bound if higher_is_better else y > bound)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{plot_height}" fill="#fff" '
             'stroke="#ccd"/>']
    for fraction in (0, 0.5, 1):
        value = y0 + fraction * (y1 - y0)
        _, gy = xy(x0, value)
        parts.append(f'<text x="{left - 6}" y="{gy + 4:.0f}" text-anchor="end">{value:.3g}</text>')
    for x, anchor in ((x0, "start"), (x1, "end")) if x1 > x0 else ((x0, "middle"),):
        gx, _ = xy(x, y0)
        parts.append(f'<text x="{gx:.0f}" y="{top + plot_height + 14}" text-anchor="{anchor}">{_e(when(x))} UTC'
                     '</text>')
    if bound is not None:
        _, by = xy(x0, bound)
        parts.append(f'<line x1="{left}" y1="{by:.1f}" x2="{width - right}" y2="{by:.1f}" stroke="#c62828" '
                     f'stroke-dasharray="5 4"><title>bound {bound:g}</title></line>')
    for i, (name, values) in enumerate(series.items()):
        color = _PALETTE[i % len(_PALETTE)]
        coordinates = [xy(x, y) for x, y in values]
        path = " ".join(f"{'M' if j == 0 else 'L'}{px:.1f},{py:.1f}" for j, (px, py) in enumerate(coordinates))
        parts.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"><title>{_e(name)}</title>'
                     '</path>')
        for (x, y), (px, py) in zip(values, coordinates):
            fill = "#c62828" if breach(y) else color
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{4 if breach(y) else 2.5}" fill="{fill}">'
                         f'<title>{_e(name)} {_e(when(x))} UTC: {_num(y, 4)}</title></circle>')
        parts.append(f'<text x="{left + 160 * (i % 3)}" y="{top + plot_height + 32 + 15 * (i // 3)}" '
                     f'style="fill:{color}">&#9632; {_e(name)}</text>')
    parts.append(f'<text x="12" y="{top + plot_height / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_height / 2})">{_e(y_label)}</text></svg>')
    return "".join(parts)


# --- data ---------------------------------------------------------------------------------------------------------

def load_split_statistics(statistics_uri: str) -> Dict[str, object]:
    """Split name -> DatasetFeatureStatistics from a StatisticsGen artifact."""
    import tensorflow_data_validation as tfdv

    found = {}
    for path in glob.glob(os.path.join(statistics_uri, "Split-*", "FeatureStats.pb")):
        split = os.path.basename(os.path.dirname(path))[len("Split-"):]
        found[split] = tfdv.load_stats_binary(path).datasets[0]
    # Training data first: it is what the other splits are compared with.
    return dict(sorted(found.items(), key=lambda item: (item[0] != "train", item[0])))


def _feature_rows(splits: Dict[str, object]) -> Tuple[List[list], List[list]]:
    """Numeric and categorical feature rows; the first split's figures, histograms of every split."""
    by_feature: Dict[str, Dict[str, object]] = {}
    for split, dataset in splits.items():
        for feature in dataset.features:
            by_feature.setdefault(".".join(feature.path.step) or feature.name, {})[split] = (feature, dataset)
    numeric, categorical = [], []
    for name, per_split in sorted(by_feature.items()):
        first, dataset = next(iter(per_split.values()))
        kind = first.WhichOneof("stats")
        if kind == "num_stats":
            common = first.num_stats.common_stats
        elif kind == "string_stats":
            common = first.string_stats.common_stats
        else:
            continue
        total = dataset.num_examples or 1
        missing = 1 - common.num_non_missing / total
        missing_cell = f'<span class="{"bad" if missing > 0.5 else ""}">{missing:.1%}</span>'
        if kind == "num_stats":
            s = first.num_stats
            hist = {split: [(f"[{b.low_value:g}, {b.high_value:g})", b.sample_count)
                            for b in f.num_stats.histograms[0].buckets] if f.num_stats.histograms else []
                    for split, (f, _) in per_split.items()}
            numeric.append([name, _num(common.num_non_missing), missing_cell, _num(s.mean), _num(s.std_dev),
                            _num(s.num_zeros), _num(s.min), _num(s.median), _num(s.max), histogram_svg(hist)])
        else:
            s = first.string_stats
            top = ", ".join(f"{v.value} ({int(v.frequency)})" for v in s.top_values[:5])
            hist = {split: [(v.value, v.frequency) for v in f.string_stats.top_values[:10]]
                    for split, (f, _) in per_split.items()}
            categorical.append([name, _num(common.num_non_missing), missing_cell, _num(s.unique), top,
                                histogram_svg(hist)])
    return numeric, categorical


def data_section(statistics_uri: str) -> str:
    splits = load_split_statistics(statistics_uri)
    if not splits:
        return "<p class='muted'>No statistics were computed in this run.</p>"
    legend = " ".join(f'<span style="color:{_PALETTE[i]}">&#9632; {_e(s)} ({_num(d.num_examples)} examples)</span>'
                      for i, (s, d) in enumerate(splits.items()))
    numeric, categorical = _feature_rows(splits)
    first = next(iter(splits))
    return (f"<p>Statistics by TFDV over every split. Figures are from <b>{_e(first)}</b>; histograms compare the "
            f"splits: {legend}. Source: <code>{_e(statistics_uri)}</code></p>"
            "<h3>Numeric features</h3>" +
            _table(["feature", "count", "missing", "mean", "std dev", "zeros", "min", "median", "max", "histogram"],
                   numeric, numeric=range(1, 9)) +
            "<h3>Categorical features</h3>" +
            _table(["feature", "count", "missing", "unique", "top values", "top-10 shares"], categorical,
                   numeric=(1, 3)))


def anomalies_section(summary: RunSummary) -> str:
    validator = summary.component("ExampleValidator")
    if not validator or not validator.outputs.get("anomalies"):
        return "<p class='muted'>ExampleValidator did not run.</p>"
    found = read_anomalies(validator.outputs["anomalies"][0])
    if not found:
        return "<p class='ok'>No anomalies: every split matches the schema.</p>"
    rows = []
    for split, lines in found.items():
        for line in lines:
            feature, _, description = line.partition(": ")
            rows.append([split, feature, description])
    return "<p>ExampleValidator compared every split with the schema.</p>" + _table(
        ["split", "feature", "anomaly"], rows)


def validation_section(summary: RunSummary) -> str:
    """The anomaly gate's verdict, findings, and skew/drift distances against the schema's thresholds."""
    reports = []
    gate = summary.component("AnomalyGate")
    for uri in (gate.outputs.get("report", []) if gate else []):
        reports.extend(glob.glob(os.path.join(uri, "report.json")))
    if not reports:
        return ""
    with open(reports[0], encoding="utf-8") as f:
        report = json.load(f)
    findings = report.get("findings", [])
    failing = [x for x in findings if x.get("status") == "fails"]
    verdict = ('<span class="badge bad">failed</span>' if failing else '<span class="badge ok">passed</span>')
    parts = [f"<p>{verdict} &nbsp;{_e(report.get('title', 'Anomaly gate'))}</p>"]
    if findings:
        parts.append(_table(["data", "feature", "anomaly", "severity", "status", "description", "examples"],
                            [[x.get("dataset"), x.get("feature"), x.get("anomaly"), x.get("severity"),
                              x.get("status"), x.get("description"), ", ".join(x.get("values") or [])]
                             for x in findings]))
    for kind in ("skew", "drift"):
        rows = [[d.get("feature"), d.get("measure"), _num(d.get("value")), _num(d.get("threshold")),
                 '<span class="bad">over</span>' if d.get("value", 0) > d.get("threshold", 0)
                 else '<span class="ok">ok</span>']
                for d in report.get("distances", []) if d.get("kind") == kind]
        title = f"<h3>{kind.title()}: {_e(report.get('comparisons', {}).get(kind, ''))}</h3>"
        if rows:
            parts.append(title + _table(["feature", "measure", "distance", "threshold", ""], rows, numeric=(2, 3)))
    parts.extend(f"<p class='muted'>{_e(note)}</p>" for note in report.get("notes", []))
    return "".join(parts)


# --- model --------------------------------------------------------------------------------------------------------

def _plot_series(evaluation_uri: str) -> Tuple[Dict[str, list], Dict[str, list]]:
    """ROC points and 10-bin calibration per model (candidate, baseline) on the overall slice."""
    import tensorflow_model_analysis as tfma

    roc, calibration = {}, {}
    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue
        for kv in plots.plot_keys_and_values:
            model = kv.key.model_name or "candidate"
            matrices = kv.value.confusion_matrix_at_thresholds.matrices
            if matrices:
                points = sorted({(m.false_positive_rate, m.recall) for m in matrices})
                roc[model] = [(0.0, 0.0)] + points + [(1.0, 1.0)]
            buckets = kv.value.calibration_histogram_buckets.buckets
            if buckets:
                bins = [[0.0, 0.0, 0.0] for _ in range(10)]  # weight, label sum, prediction sum
                for b in buckets:
                    if not b.num_weighted_examples.value:
                        continue
                    i = min(max(int(b.lower_threshold_inclusive * 10), 0), 9)
                    bins[i][0] += b.num_weighted_examples.value
                    bins[i][1] += b.total_weighted_label.value
                    bins[i][2] += b.total_weighted_refined_prediction.value
                calibration[model] = [(p / w, y / w) for w, y, p in bins if w]
    return roc, calibration


def _thresholds(config, with_baseline: bool) -> Dict[str, str]:
    """Metric -> the blessing thresholds it carries (`Task.blessings`, what the Evaluator gates)."""
    found: Dict[str, List[str]] = {}
    for rule, text in config.features.task_type.blessing_texts(config.evaluator, with_baseline):
        found.setdefault(rule.key, []).append(text)
    return {key: ", ".join(texts) for key, texts in found.items()}


def _class_tables(summary: RunSummary, class_names: List[str]) -> str:
    """Multiclass: recall per class and the confusion matrix (rows: actual class, columns: predicted)."""
    names = list(class_names) or [str(i) for i in range(len(summary.confusion_matrix))]
    parts = []
    recall = [[name, _num(summary.candidate_metrics.get(f"recall/class_{i}")),
               _num(sum(summary.confusion_matrix[i])) if i < len(summary.confusion_matrix) else "-"]
              for i, name in enumerate(names)]
    parts += ["<h3>Recall per class</h3>", _table(["class", "recall", "examples"], recall, numeric=(1, 2))]
    if summary.confusion_matrix:
        rows = [[f"<b>{_e(name)}</b>"] + [_num(v) for v in row] for name, row in zip(names, summary.confusion_matrix)]
        parts += ["<h3>Confusion matrix (rows: actual class, columns: predicted class; overall slice)</h3>",
                  _table(["actual \\ predicted"] + names, rows, numeric=range(1, len(names) + 1), cls="")]
    return "".join(parts)


def model_section(summary: RunSummary, config) -> str:
    if not summary.candidate_metrics:
        return "<p class='muted'>The model was not evaluated in this run.</p>"
    task = tasks.of_metrics(summary.candidate_metrics)
    names = [m.key for m in task.report_metrics if m.key in summary.candidate_metrics]
    thresholds = _thresholds(config, bool(summary.baseline_metrics))
    rows = [[n, _num(summary.candidate_metrics.get(n)), _num(summary.baseline_metrics.get(n)),
             thresholds.get(n, "reported")] for n in names]
    if summary.blessed:
        verdict = '<span class="badge ok">blessed</span>'
    elif summary.blessed is False:
        verdict = '<span class="badge bad">not blessed</span> ' + "; ".join(_e(r) for r in summary.blessing_reasons)
    else:
        verdict = '<span class="badge muted">no blessing</span>'
    parts = [f"<p>{verdict} &nbsp; {_e(task.name)} model; candidate <code>{_e(summary.candidate_model)}</code>; baseline "
             f"<code>{_e(summary.baseline_model or 'none (first blessed model)')}</code></p>",
             "<h3>Overall (blessing thresholds)</h3>",
             _table(["metric", "candidate", "baseline", "threshold"], rows, numeric=(1, 2))]
    if task.per_class_scores:
        parts.append(_class_tables(summary, config.features.class_names))

    def slice_order(item):
        feature, _, value = item[0].partition("=")
        return (feature, 0, float(value), "") if value.lstrip("-").replace(".", "", 1).isdigit() else (feature, 1, 0, value)

    columns = [(m.key, m.label) for m in task.report_metrics[:2]]
    slice_rows = [[name.partition("=")[0], name.partition("=")[2], _num(m.get("example_count"))] +
                  [_num(m.get(key)) for key, _ in columns]
                  for name, m in sorted(summary.slice_metrics.items(), key=slice_order)]
    if slice_rows:
        parts += ["<h3>Per slice (reported, not gated)</h3>",
                  _table(["feature", "value", "examples"] + [label for _, label in columns], slice_rows,
                         numeric=(2, 3, 4))]
    evaluator = summary.component("Evaluator")
    roc, calibration = _plot_series(evaluator.outputs["evaluation"][0])
    charts = []
    if roc:
        charts.append(f"<figure>{line_chart(roc, 'false positive rate', 'true positive rate')}"
                      "<figcaption>ROC, overall slice (TFMA confusion matrices at 1,000 thresholds)</figcaption>"
                      "</figure>")
    if calibration:
        charts.append(f"<figure>{line_chart(calibration, 'mean predicted probability', 'observed rate')}"
                      "<figcaption>Calibration, 10 bins of predicted probability</figcaption></figure>")
    if charts:
        parts.append('<div class="charts">' + "".join(charts) + "</div>")
    return "".join(parts)


def edge_section(summary: RunSummary, config) -> str:
    """Float vs int8 TFLite against the SavedModel, from the edge export's own record of this run."""
    result = summary.edge
    if not result:
        return ""
    verdict = (f'<span class="badge ok">pushed</span> to <code>{_e(result.get("version_dir"))}</code>'
               if result.get("pushed") else f'<span class="badge muted">not pushed</span> {_e(result.get("reason"))}')
    parts = [f"<p>{verdict}</p>"]
    metrics, sizes = result.get("metrics") or {}, result.get("sizes") or {}
    task = tasks.task(result.get("task") or config.features.task)
    if metrics:
        first, second = task.quality_metrics[:2]
        versus = task.versus_saved_model
        rows = [[name, _num(sizes.get(name)), _num(sizes.get(f"{name}_weights")), _num(m.get(first.key)),
                 _num(m.get(second.key)), _num(m.get(versus.key))] for name, m in metrics.items()]
        parts.append(_table(["model", "bytes", "of which weights", first.label, second.label, versus.label],
                            rows, numeric=(1, 2, 3, 4, 5)))
        gate = result.get("gate") or []
        if gate:
            parts.append(_table(["gate", "measured", "limit", "setting"],
                                [[c["measure"], _num(c["value"]), _num(c["limit"]), c["setting"]] for c in gate],
                                numeric=(1, 2)))
    edgetpu = result.get("edgetpu") or {}
    if edgetpu:
        parts.append(f"<details><summary>Edge TPU readiness</summary><pre>{_e(json.dumps(edgetpu, indent=2))}"
                     "</pre></details>")
    return "".join(parts)


# --- page ---------------------------------------------------------------------------------------------------------

def _components_section(summary: RunSummary, timings: Dict[str, Tuple[str, float]]) -> str:
    rows = []
    for c in summary.components:
        started, seconds = timings.get(c.name, ("", None))
        state = {"complete": "ok", "cached": "muted", "failed": "bad"}.get(c.state, "muted")
        rows.append([c.name, f'<span class="badge {state}">{_e(c.state)}</span>', started, _num(seconds, 1)])
    return _table(["component", "state", "started (UTC)", "seconds"], rows, numeric=(3,))


def _timings(store, run_id: str) -> Dict[str, Tuple[str, float]]:
    run = next(c for c in store.get_contexts_by_type("pipeline_run") if c.name == run_id)
    return {node_name(store, e.id): (iso(e.create_time_since_epoch),
                                      (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000)
            for e in store.get_executions_by_context(run.id)}


def render(summary: RunSummary, config, store) -> str:
    """The report of one run as a complete HTML document."""
    timings = _timings(store, summary.run_id)
    sections = [_section("Components", _components_section(summary, timings), "components")]
    stats = summary.component("StatisticsGen")
    if stats and stats.outputs.get("statistics"):
        sections.append(_section("Data statistics", data_section(stats.outputs["statistics"][0]), "data"))
    sections.append(_section("Anomalies", anomalies_section(summary), "anomalies"))
    validation = validation_section(summary)
    if validation:
        sections.append(_section("Data validation gate: anomalies, skew, drift", validation, "gate"))
    sections.append(_section("Model evaluation", model_section(summary, config), "evaluation"))
    edge = edge_section(summary, config)
    if edge:
        sections.append(_section("Edge export: float vs int8", edge, "edge"))
    if summary.bulk_inference:
        sections.append(_section("Bulk inference", (
            f"<p>BulkInferrer wrote <b>{_e(summary.bulk_inference['predictions'])}</b> PredictionLogs of "
            f"<code>{_e(config.bulk_inference.pattern)}</code> to <code>{_e(summary.bulk_inference['uri'])}</code>"
            "</p>"), "bulk-inference"))
    pushed = (f"pushed to <code>{_e(summary.pushed_path)}</code>" if summary.pushed else
              f"already serving as version {_e(summary.already_serving_version)}" if summary.already_serving_version
              else "not pushed")
    title = f"{config.pipeline_name} run {summary.run_id}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width'><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>{pushed} &middot; artifacts <code>{_e(config.pipeline_root)}</code>"
            f"</p></header><main>{''.join(sections)}</main><script>{_JS}</script></body></html>")


FLEET_COLUMNS = ("model", "last run", "status", "reason", "serving version", "metric", "span", "next due",
                 "run report")


def utc_minute(seconds) -> str:
    """Epoch seconds as `YYYY-MM-DD HH:MM` UTC, '-' for none (the fleet table, text and HTML)."""
    if not seconds:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def fleet_section(rows: Sequence[Dict[str, object]], links: Dict[str, str]) -> str:
    """The rows of `fleet status` (plain dicts, fleet/status.py) as a table; `links`: model -> its run report."""
    badge = {"ok": "ok", "never run": "muted", "running": "muted"}
    body = []
    for r in rows:
        metric = "-" if r["metric_value"] is None else f"{r['metric']} {_num(r['metric_value'], 3)}"
        link = links.get(r["name"])
        body.append([r["name"], utc_minute(r["last_run"]),
                     f'<span class="badge {badge.get(r["status"], "bad")}">{_e(r["status"])}</span>',
                     r["reason"] or "-", r["serving_version"] or "-", metric,
                     "-" if r["span"] is None else r["span"], utc_minute(r["next_due"]),
                     f'<a href="{_e(link)}">latest run</a>' if link else "-"])
    served = sum(1 for r in rows if r["serving_version"])
    return (f"<p>{served} of {len(rows)} models served. The metric is the served version's own (its "
            "Evaluator run), not the newest candidate's.</p>" + _table(FLEET_COLUMNS, body, numeric=(4,)))


def render_fleet(rows: Sequence[Dict[str, object]], fleet_path: str, links: Dict[str, str]) -> str:
    """The fleet's page: the `fleet status` table, each model linked to its latest run's report."""
    title = f"fleet {os.path.basename(fleet_path)}"
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width'><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>fleet file <code>{_e(fleet_path)}</code></p></header>"
            f"<main>{_section('Fleet', fleet_section(rows, links), 'fleet')}</main><script>{_JS}</script>"
            "</body></html>")


def latest_report(pipeline_root: str) -> str:
    """The newest run report the runner wrote under `pipeline_root` ("" if none)."""
    found = glob.glob(os.path.join(pipeline_root, "reports", "run-*.html"))
    return max(found, key=os.path.getmtime) if found else ""


def write_page(page: str, path: str) -> str:
    """Writes a rendered page whole (rendered first: a failure leaves no partial file)."""
    return write_text(path, page)


def report_path(config, run_id: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)
    return os.path.join(config.pipeline_root, "reports", f"run-{safe}.html")


def write_report(config, run_id: Optional[str] = None, out: Optional[str] = None,
                 summary: Optional[RunSummary] = None, store=None) -> str:
    """Render the run's report and write it atomically; returns its path.

    `store` defaults to the run's local SQLite MLMD (`pipeline.metadata.open_metadata`).
    """
    store = store or open_metadata(config.metadata_path)
    summary = summary or read_run(store, config.pipeline_name, run_id)
    return write_page(render(summary, config, store), out or report_path(config, summary.run_id))


# --- monitoring ---------------------------------------------------------------------------------------------------

# Features drawn per skew/drift chart: the ones that came closest to (or over) their threshold.
_MONITORED_FEATURES = 4


def _figure(chart: str, caption: str) -> str:
    return f"<figure>{chart}<figcaption>{_e(caption)}</figcaption></figure>" if chart else ""


def monitoring_section(model: str, points, higher_is_better: bool) -> str:
    """The series of one model (`monitoring.store.Point`s): traffic, errors, latency, skew, drift, served metric."""
    from monitoring import store as series

    by_measure: Dict[str, list] = {}
    for p in points:
        by_measure.setdefault(p.measure, []).append(p)
    if not by_measure:
        return "<p class='muted'>No monitored windows yet: run <code>tfx-edge monitoring run</code> once the " \
               "server has logged requests.</p>"

    def line(measure: str):
        return [(p.window_start, p.value) for p in by_measure.get(measure, [])]

    figures = [_figure(time_chart({"requests/s": line(series.REQUESTS_PER_SECOND)}, "requests per second"),
                       "traffic, scaled back from the request log's sample"),
               _figure(time_chart({"errors": line(series.ERROR_RATIO)}, "error ratio"), "share of failed requests"),
               _figure(time_chart({"p50": line(series.LATENCY_P50), "p99": line(series.LATENCY_P99)}, "latency, ms"),
                       "server latency per request")]
    for measure, against in ((series.SKEW, "the training statistics"), (series.DRIFT, "the previous window")):
        ratios: Dict[str, List[Tuple[float, float]]] = {}
        for p in by_measure.get(measure, []):
            if p.threshold:
                ratios.setdefault(p.feature, []).append((p.window_start, p.value / p.threshold))
        worst = sorted(ratios, key=lambda f: -max(v for _, v in ratios[f]))[:_MONITORED_FEATURES]
        figures.append(_figure(time_chart({f: ratios[f] for f in worst}, "distance / threshold", bound=1.0),
                               f"{measure} against {against}, per feature (TFDV's distance over the schema's "
                               f"threshold; above 1 alerts)"))
    served = by_measure.get(series.SERVED_METRIC, [])
    if served:
        bound = served[-1].threshold
        figures.append(_figure(time_chart({served[-1].feature: line(series.SERVED_METRIC)}, served[-1].feature,
                                          bound=bound, higher_is_better=higher_is_better),
                               "served metric on joined late labels" + (f", bound {bound:g}" if bound else "")))
    newest = max(p.window_start for p in points)
    over = [p for p in points if p.window_start == newest and p.measure in series.FEATURE_MEASURES
            and p.threshold and p.value > p.threshold]
    verdict = (f'<p><span class="badge bad">over threshold</span> newest window ({_e(utc_minute(newest))} UTC): '
               + ", ".join(f"{_e(p.feature)} {p.measure} {p.value:.3f} &gt; {p.threshold:g}" for p in over) + "</p>"
               if over else f'<p><span class="badge ok">within thresholds</span> newest window '
                            f'({_e(utc_minute(newest))} UTC)</p>')
    return verdict + f'<div class="charts">{"".join(figures)}</div>'


def render_monitoring(models: Dict[str, Tuple[list, bool]], title: str) -> str:
    """The monitoring page: one section per model (name -> (its points, higher-is-better of its metric))."""
    sections = [_section(f"{name}", monitoring_section(name, points, better), f"model-{i}")
                for i, (name, (points, better)) in enumerate(models.items())]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width'><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>per window of the request log: traffic, errors, latency, skew, "
            f"drift and the served metric</p></header><main>{''.join(sections)}</main><script>{_JS}</script>"
            "</body></html>")


def monitoring_report_path(config) -> str:
    """`monitoring.html` beside the monitoring store (one page for every model that shares it)."""
    return os.path.join(os.path.dirname(config.monitoring_path), "monitoring.html")


def write_monitoring(configs: Sequence, out: str = "") -> str:
    """The monitoring page of these models (pipeline configs sharing one store), written whole."""
    from monitoring.store import Store

    store = Store(configs[0].monitoring_path)
    models = {c.model_name: (store.series(c.model_name), c.features.task_type.headline.higher_is_better)
              for c in configs}
    title = "monitoring: " + ", ".join(models)
    return write_page(render_monitoring(models, title), out or monitoring_report_path(configs[0]))
