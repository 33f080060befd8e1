"""`tfx-edge serving experiment report`: how each arm of an experiment did, from the experiment logs.

Per arm: requests and their share (checked against the configured weight with a
binomial test), latency percentiles, the score distribution and, when the
traffic was labelled (its tf.Examples still carried the label column), AUC and
accuracy. Each arm is compared with the baseline arm (`stable`, else the
busiest): AUC with DeLong's test for two independent samples, accuracy with a
two-proportion z-test, the score distributions with a two-sample
Kolmogorov-Smirnov test, latency with a Mann-Whitney U test. Shadow calls are
reported apart: how often the shadow version's decision agreed with the answer
the client got, and both AUCs on the same examples.

A p-value is the chance of a difference at least this large if the arms were
really the same; below 0.05 is the usual bar, and with few labelled requests no
difference will reach it.
"""

import glob
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from scipy import stats

from serving.experiments import LOG_SUFFIX, Experiment

THRESHOLD = 0.5
ALPHA = 0.05


def read_records(directory: str, since_minutes: float = 0.0) -> List[Dict[str, Any]]:
    after = time.time() - since_minutes * 60 if since_minutes > 0 else 0.0
    records = []
    for path in sorted(glob.glob(os.path.join(directory, f"*{LOG_SUFFIX}"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    if record.get("time", 0.0) >= after:
                        records.append(record)
    return records


def _midrank_placements(positives: np.ndarray, negatives: np.ndarray):
    """For each positive the share of negatives below it (ties count half), and vice versa."""
    negatives_sorted, positives_sorted = np.sort(negatives), np.sort(positives)
    below = np.searchsorted(negatives_sorted, positives, side="left")
    equal = np.searchsorted(negatives_sorted, positives, side="right") - below
    v10 = (below + 0.5 * equal) / len(negatives)
    above = len(positives) - np.searchsorted(positives_sorted, negatives, side="right")
    equal = np.searchsorted(positives_sorted, negatives, side="right") - np.searchsorted(
        positives_sorted, negatives, side="left")
    v01 = (above + 0.5 * equal) / len(positives)
    return v10, v01


def auc_with_variance(scores: Sequence[float], labels: Sequence[int]) -> Optional[Dict[str, float]]:
    """AUC and its DeLong variance; None when one class is missing."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) < 2 or len(negatives) < 2:
        return None
    v10, v01 = _midrank_placements(positives, negatives)
    variance = float(np.var(v10, ddof=1) / len(positives) + np.var(v01, ddof=1) / len(negatives))
    return {"auc": float(np.mean(v10)), "variance": variance}


def delong_independent(a: Dict[str, float], b: Dict[str, float]) -> float:
    """Two-sided p-value of AUC a == AUC b for two independent samples."""
    spread = math.sqrt(a["variance"] + b["variance"])
    if spread == 0:
        return 1.0 if a["auc"] == b["auc"] else 0.0
    return float(2 * stats.norm.sf(abs(a["auc"] - b["auc"]) / spread))


def two_proportions(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """Two-sided p-value of equal proportions (pooled z-test)."""
    pooled = (hits_a + hits_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return 1.0
    return float(2 * stats.norm.sf(abs(hits_a / n_a - hits_b / n_b) / spread))


def _percentiles(values: Sequence[float], points=(50, 95, 99)) -> Dict[str, float]:
    return {f"p{p}": round(float(np.percentile(values, p)), 4) for p in points} if len(values) else {}


def _arm_summary(records: List[Dict[str, Any]], total_requests: int, weight: Optional[float]) -> Dict[str, Any]:
    scores = [s for r in records for s in r.get("scores", [])]
    pairs = [(s, y) for r in records if r.get("labels") for s, y in zip(r["scores"], r["labels"])]
    summary: Dict[str, Any] = {
        "requests": len(records),
        "share": round(len(records) / total_requests, 4) if total_requests else 0.0,
        "versions": sorted({r["version"] for r in records}),
        "latency_ms": _percentiles([r["latency_ms"] for r in records]),
        "scores": {"count": len(scores), "mean": round(float(np.mean(scores)), 4) if scores else None,
                   **_percentiles(scores, (10, 50, 90)),
                   "positive_rate": round(float(np.mean(np.asarray(scores) > THRESHOLD)), 4) if scores else None},
        "labelled": len(pairs),
    }
    if weight is not None and total_requests:
        summary["weight_percent"] = weight
        summary["share_p_value"] = float(stats.binomtest(len(records), total_requests, weight / 100.0).pvalue)
    if pairs:
        pair_scores, pair_labels = zip(*pairs)
        correct = int(sum((s > THRESHOLD) == bool(y) for s, y in pairs))
        summary["accuracy"] = round(correct / len(pairs), 4)
        summary["_correct"] = correct
        auc = auc_with_variance(pair_scores, pair_labels)
        if auc is not None:
            summary["auc"] = round(auc["auc"], 4)
            summary["_auc"] = auc
    summary["_scores"] = scores
    summary["_latency"] = [r["latency_ms"] for r in records]
    return summary


def _compare(arm: Dict[str, Any], baseline: Dict[str, Any]) -> Dict[str, Any]:
    comparison: Dict[str, Any] = {}
    if "_auc" in arm and "_auc" in baseline:
        comparison["auc_difference"] = round(arm["auc"] - baseline["auc"], 4)
        comparison["auc_p_value"] = delong_independent(arm["_auc"], baseline["_auc"])
    if "accuracy" in arm and "accuracy" in baseline:
        comparison["accuracy_difference"] = round(arm["accuracy"] - baseline["accuracy"], 4)
        comparison["accuracy_p_value"] = two_proportions(arm["_correct"], arm["labelled"], baseline["_correct"],
                                                         baseline["labelled"])
    if arm["_scores"] and baseline["_scores"]:
        comparison["score_ks_p_value"] = float(stats.ks_2samp(arm["_scores"], baseline["_scores"]).pvalue)
    if arm["_latency"] and baseline["_latency"]:
        comparison["latency_p_value"] = float(stats.mannwhitneyu(arm["_latency"], baseline["_latency"]).pvalue)
    return comparison


def _shadow_summary(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    pairs = [(s, live) for r in records for s, live in zip(r.get("scores", []), r.get("live_scores", []))]
    agree = sum((s > THRESHOLD) == (live > THRESHOLD) for s, live in pairs)
    summary: Dict[str, Any] = {
        "requests": len(records), "latency_ms": _percentiles([r["latency_ms"] for r in records]),
        "decisions_agreeing": round(agree / len(pairs), 4) if pairs else None,
        "mean_abs_score_difference": round(float(np.mean([abs(s - v) for s, v in pairs])), 4) if pairs else None,
        "live_arms": sorted({r.get("live_arm", "") for r in records}),
    }
    labelled = [(s, live, y) for r in records if r.get("labels")
                for s, live, y in zip(r["scores"], r["live_scores"], r["labels"])]
    if labelled:
        shadow_auc = auc_with_variance([s for s, _, _ in labelled], [y for _, _, y in labelled])
        live_auc = auc_with_variance([v for _, v, _ in labelled], [y for _, _, y in labelled])
        summary["labelled"] = len(labelled)
        if shadow_auc and live_auc:
            summary["auc"], summary["live_auc"] = round(shadow_auc["auc"], 4), round(live_auc["auc"], 4)
    return summary


def build(directory: str, model_name: str, experiment: Optional[Experiment] = None,
          since_minutes: float = 0.0) -> Dict[str, Any]:
    """The report as a dict (what `--json` prints)."""
    records = read_records(directory, since_minutes)
    live = [r for r in records if not r.get("shadow")]
    by_arm: Dict[str, List[Dict[str, Any]]] = {}
    for record in live:
        by_arm.setdefault(record["arm"], []).append(record)
    weights = experiment.split if experiment is not None else {}
    arms = {arm: _arm_summary(rows, len(live), weights.get(arm)) for arm, rows in sorted(by_arm.items())}
    baseline = "stable" if "stable" in arms else max(arms, key=lambda a: arms[a]["requests"], default="")
    for arm, summary in arms.items():
        if arm != baseline:
            summary["versus_" + baseline] = _compare(summary, arms[baseline])
    for summary in arms.values():
        for key in [k for k in summary if k.startswith("_")]:
            del summary[key]
    shadows: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:
        if record.get("shadow"):
            shadows.setdefault(record["arm"], []).append(record)
    return {"model": model_name, "log_dir": directory, "requests": len(live), "baseline": baseline, "arms": arms,
            "shadow": {arm: _shadow_summary(rows) for arm, rows in sorted(shadows.items())},
            "split": weights}


def _p(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" + (" (significant)" if value < ALPHA else "")


def render(report: Dict[str, Any]) -> str:
    if not report["arms"]:
        return (f"no experiment records for {report['model']} in {report['log_dir']}; run an experiment "
                "(tfx-edge serving rollout --label canary --version V --weight canary=10) and send traffic "
                "without a version or label")
    lines = [f"experiment of {report['model']}: {report['requests']} requests routed by the split "
             f"(logs {report['log_dir']})",
             f"{'arm':<10}{'requests':>9}{'share':>8}{'weight':>8}{'p50 ms':>8}{'p99 ms':>8}{'mean score':>11}"
             f"{'positive':>9}{'labelled':>9}{'AUC':>8}{'accuracy':>9}"]
    for arm, s in report["arms"].items():
        weight = f"{s['weight_percent']:g}%" if "weight_percent" in s else "-"
        lines.append(f"{arm:<10}{s['requests']:>9}{s['share'] * 100:>7.1f}%{weight:>8}"
                     f"{s['latency_ms'].get('p50', 0):>8.2f}{s['latency_ms'].get('p99', 0):>8.2f}"
                     f"{s['scores']['mean'] if s['scores']['mean'] is not None else '-':>11}"
                     f"{s['scores']['positive_rate'] if s['scores']['positive_rate'] is not None else '-':>9}"
                     f"{s['labelled']:>9}{s.get('auc', '-'):>8}{s.get('accuracy', '-'):>9}")
    for arm, s in report["arms"].items():
        if "share_p_value" in s:
            lines.append(f"  {arm}: share {s['share'] * 100:.1f}% vs weight {s['weight_percent']:g}%: binomial "
                         f"p={_p(s['share_p_value'])}")
        versus = s.get("versus_" + report["baseline"])
        if versus:
            parts = []
            if "auc_difference" in versus:
                parts.append(f"AUC {versus['auc_difference']:+.4f} (DeLong p={_p(versus['auc_p_value'])})")
            if "accuracy_difference" in versus:
                parts.append(f"accuracy {versus['accuracy_difference']:+.4f} "
                             f"(z-test p={_p(versus['accuracy_p_value'])})")
            if "score_ks_p_value" in versus:
                parts.append(f"scores KS p={_p(versus['score_ks_p_value'])}")
            if "latency_p_value" in versus:
                parts.append(f"latency Mann-Whitney p={_p(versus['latency_p_value'])}")
            lines.append(f"  {arm} vs {report['baseline']}: " + "; ".join(parts))
    for arm, s in report["shadow"].items():
        line = (f"shadow {arm}: {s['requests']} mirrored requests from {', '.join(s['live_arms'])}, p50 "
                f"{s['latency_ms'].get('p50', 0):.2f} ms; decisions agreeing with the live answer "
                f"{(s['decisions_agreeing'] or 0) * 100:.1f}%, mean |score difference| "
                f"{s['mean_abs_score_difference']}")
        if "auc" in s:
            line += f"; AUC {s['auc']} vs live {s['live_auc']} on the same {s['labelled']} examples"
        lines.append(line)
    return "\n".join(lines)
