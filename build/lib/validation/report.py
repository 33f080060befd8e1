"""The validation report: what is wrong, where, and whether it stops the run.

TFDV's `Anomalies` protos (one per split, plus skew and drift comparisons) are
turned into `Finding`s and `Distance`s, judged by a `GatePolicy` (severity and
allow-list from the `validation:` config), and rendered as a console summary
and an HTML page. The anomaly gate, the runner and the `validate` command all
show this same report.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from contract.config import SEVERITIES, ValidationConfig, check_gate_policy

_MAX_VALUES = 5


@dataclass(frozen=True)
class GatePolicy:
    """Anomalies at or above `fail_severity` stop the run unless their type is allowed.

    `allow` entries are an anomaly type (`FLOAT_TYPE_BIG_FLOAT`) tolerated for
    every feature, or `feature:TYPE` tolerated for that feature only.
    """

    fail_severity: str = "ERROR"
    allow: Sequence[str] = ()

    def __post_init__(self):
        check_gate_policy(self.fail_severity, self.allow)

    @classmethod
    def from_config(cls, validation: ValidationConfig) -> "GatePolicy":
        return cls(validation.fail_severity, tuple(validation.allow_anomalies))

    def allows(self, feature: str, anomaly_type: str) -> bool:
        return anomaly_type in self.allow or f"{feature}:{anomaly_type}" in self.allow

    def severity_fails(self, severity: str) -> bool:
        return severity in SEVERITIES and SEVERITIES.index(severity) >= SEVERITIES.index(self.fail_severity)


@dataclass
class Finding:
    dataset: str  # "train", "eval", "serving skew", "drift", or a directory for `validate`
    feature: str
    anomaly: str  # TFDV AnomalyInfo.Type name
    severity: str
    description: str
    values: List[str] = field(default_factory=list)
    status: str = "fails"  # fails | tolerated | below severity


@dataclass
class Distance:
    """One skew or drift comparison of a feature, with the threshold from the schema."""

    kind: str  # skew | drift
    feature: str
    measure: str  # L_INFTY | JENSEN_SHANNON_DIVERGENCE
    value: float
    threshold: float

    @property
    def over(self) -> bool:
        return self.value > self.threshold


@dataclass
class Report:
    title: str
    findings: List[Finding] = field(default_factory=list)
    distances: List[Distance] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    comparisons: Dict[str, str] = field(default_factory=dict)  # skew|drift -> "train vs serving data at ..."

    @property
    def failures(self) -> List[Finding]:
        return [f for f in self.findings if f.status == "fails"]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    def to_text(self) -> str:
        verdict = "PASSED" if self.passed else f"FAILED: {len(self.failures)} problem(s) stop the run"
        lines = [f"{self.title}: {verdict}"]
        if self.findings:
            lines.append(f"  {'data':14s} {'feature':24s} {'anomaly':38s} {'status':14s} description")
            for f in self.findings:
                lines.append(f"  {f.dataset:14s} {f.feature:24s} {f.anomaly:38s} {f.status:14s} {f.description}")
                if f.values:
                    lines.append(f"  {'':14s} {'':24s} offending values: {', '.join(f.values)}")
        for kind in ("skew", "drift"):
            rows = [d for d in self.distances if d.kind == kind]
            if not rows:
                continue
            lines.append(f"  {kind} ({self.comparisons.get(kind, '')}):")
            lines.append(f"    {'feature':24s} {'measure':28s} {'distance':>10s} {'threshold':>10s}")
            for d in rows:
                flag = "  OVER" if d.over else ""
                lines.append(f"    {d.feature:24s} {d.measure:28s} {d.value:10.4f} {d.threshold:10.4f}{flag}")
        lines.extend(f"  note: {n}" for n in self.notes)
        if not self.passed:
            lines.append("  what to do: fix the data at its source; if the change is expected, update the schema "
                         "(domain, thresholds) or tolerate the anomaly with "
                         "--set validation.allow_anomalies=[feature:ANOMALY_TYPE]")
        return "\n".join(lines)

    def to_html(self) -> str:
        e = html.escape
        verdict = "PASSED" if self.passed else f"FAILED &mdash; {len(self.failures)} problem(s) stop the run"
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{e(self.title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:4px 8px;"
            "text-align:left}.fails{background:#fdd}.tolerated{background:#ffd}.over{background:#fdd}</style>",
            f"</head><body><h1>{e(self.title)}</h1><p><b>{verdict}</b></p>",
        ]
        if self.findings:
            parts.append("<h2>Anomalies</h2><table><tr><th>data</th><th>feature</th><th>anomaly</th>"
                         "<th>severity</th><th>status</th><th>description</th><th>offending values</th></tr>")
            for f in self.findings:
                parts.append(
                    f"<tr class='{e(f.status.replace(' ', '-'))}'><td>{e(f.dataset)}</td><td>{e(f.feature)}</td>"
                    f"<td>{e(f.anomaly)}</td><td>{e(f.severity)}</td><td>{e(f.status)}</td>"
                    f"<td>{e(f.description)}</td><td>{e(', '.join(f.values))}</td></tr>")
            parts.append("</table>")
        else:
            parts.append("<p>No anomalies against the schema.</p>")
        for kind in ("skew", "drift"):
            rows = [d for d in self.distances if d.kind == kind]
            if not rows:
                continue
            parts.append(f"<h2>{kind.capitalize()}: {e(self.comparisons.get(kind, ''))}</h2><table><tr>"
                         "<th>feature</th><th>measure</th><th>distance</th><th>threshold</th></tr>")
            for d in rows:
                parts.append(f"<tr class='{'over' if d.over else ''}'><td>{e(d.feature)}</td><td>{e(d.measure)}</td>"
                             f"<td>{d.value:.4f}</td><td>{d.threshold:.4f}</td></tr>")
            parts.append("</table>")
        parts.extend(f"<p>{e(n)}</p>" for n in self.notes)
        if not self.passed:
            parts.append("<h2>What to do</h2><p>Fix the data at its source. If the change is expected, update the "
                         "schema (a domain, or a skew/drift threshold), or tolerate the anomaly type with "
                         "<code>--set validation.allow_anomalies=[feature:ANOMALY_TYPE]</code>.</p>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, directory: str) -> str:
        """Writes report.txt, report.html and report.json (local or gs://); returns the HTML path."""
        from tfx.dsl.io import fileio

        fileio.makedirs(directory)
        for name, text in (("report.txt", self.to_text()), ("report.json", self.to_json()),
                           ("report.html", self.to_html())):
            with fileio.open(os.path.join(directory, name), "w") as f:
                f.write(text + "\n")
        return os.path.join(directory, "report.html")


def _feature_stats(statistics: Optional[statistics_pb2.DatasetFeatureStatisticsList], name: str):
    if statistics is None or not statistics.datasets:
        return None
    for feature in statistics.datasets[0].features:
        if (feature.path.step and feature.path.step[-1] == name) or feature.name == name:
            return feature
    return None


def offending_values(anomaly: str, feature: str, schema: schema_pb2.Schema,
                     statistics: Optional[statistics_pb2.DatasetFeatureStatisticsList]) -> List[str]:
    """A few concrete values behind an anomaly, read from the statistics of the offending data."""
    stats = _feature_stats(statistics, feature)
    if stats is None:
        return []
    if stats.HasField("string_stats"):
        top = [v.value for v in stats.string_stats.top_values] or [
            b.label for b in stats.string_stats.rank_histogram.buckets]
        if anomaly == "ENUM_TYPE_UNEXPECTED_STRING_VALUES":
            domain = _string_domain(feature, schema)
            top = [v for v in top if v not in domain]
        return [repr(v) for v in top[:_MAX_VALUES]]
    if stats.HasField("num_stats") and anomaly in ("FLOAT_TYPE_BIG_FLOAT", "INT_TYPE_BIG_INT"):
        return [f"min {stats.num_stats.min:g}", f"max {stats.num_stats.max:g}"]
    if anomaly in ("FEATURE_TYPE_LOW_NUMBER_PRESENT", "FEATURE_TYPE_NO_VALUES", "FEATURE_TYPE_LOW_NUMBER_VALUES"):
        common = (stats.num_stats or stats.string_stats).common_stats
        total = statistics.datasets[0].num_examples
        return [f"{common.tot_num_values} values in {total} examples (feature absent from "
                f"{total - common.num_non_missing})"]
    return []


def _string_domain(feature: str, schema: schema_pb2.Schema) -> set:
    for f in schema.feature:
        if f.name == feature:
            if f.HasField("string_domain"):
                return set(f.string_domain.value)
            return {v for d in schema.string_domain if d.name == f.domain for v in d.value}
    return set()


def findings_from_anomalies(anomalies: anomalies_pb2.Anomalies, dataset: str, policy: GatePolicy,
                            schema: schema_pb2.Schema,
                            statistics: Optional[statistics_pb2.DatasetFeatureStatisticsList] = None
                            ) -> List[Finding]:
    """One finding per anomaly reason, judged by `policy`."""
    type_names = anomalies_pb2.AnomalyInfo.Type.Name
    severity_names = anomalies_pb2.AnomalyInfo.Severity.Name
    findings = []
    if anomalies.data_missing:
        findings.append(Finding(dataset, "(all)", "DATA_MISSING", "ERROR", "the data holds no examples"))
    infos = [(name, info) for name, info in sorted(anomalies.anomaly_info.items())]
    if anomalies.HasField("dataset_anomaly_info"):
        infos.append(("(dataset)", anomalies.dataset_anomaly_info))
    for feature, info in infos:
        severity = severity_names(info.severity)
        for reason in info.reason or [anomalies_pb2.AnomalyInfo.Reason(short_description=info.description)]:
            anomaly = type_names(reason.type)
            description = (reason.description or reason.short_description or info.description).strip()
            finding = Finding(dataset, feature, anomaly, severity, description,
                              offending_values(anomaly, feature, schema, statistics))
            if policy.allows(feature, anomaly):
                finding.status = "tolerated"
            elif not policy.severity_fails(severity):
                finding.status = "below severity"
            findings.append(finding)
    return findings


def distances_from_anomalies(anomalies: anomalies_pb2.Anomalies) -> List[Distance]:
    """Per-feature skew and drift distances TFDV measured, with the schema thresholds."""
    measure = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name
    distances = []
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for kind, measurements in (("skew", info.skew_measurements), ("drift", info.drift_measurements)):
            distances.extend(Distance(kind, feature, measure(m.type), m.value, m.threshold) for m in measurements)
    return sorted(distances, key=lambda d: (d.kind, d.feature))
