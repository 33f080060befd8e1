"""What a run did, read back from ML Metadata: components, metrics, blessing, push.

The runner prints `format_summary(read_run(...))` at the end of every run; the
same data serves tests and benchmarks, so nobody has to dig through artifacts.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ml_metadata import metadata_store

from contract import tasks

from pipeline import tuning_reuse
from pipeline.metadata import INPUT_EVENTS, OUTPUT_EVENTS, STATES, node_name

def headline(metrics: Dict[str, float]) -> List[tuple]:
    """The two metrics that sum a model up for its task: [(label, value or None), (label, value or None)].

    The task is read from the metrics TFMA computed (`tasks.of_metrics`), so a run of any task shows its own.
    """
    return [(m.label, metrics.get(m.key)) for m in tasks.of_metrics(metrics).report_metrics[:2]]


@dataclass
class ComponentRun:
    name: str
    state: str
    outputs: Dict[str, List[str]] = field(default_factory=dict)  # output key -> artifact URIs
    output_ids: Dict[str, List[int]] = field(default_factory=dict)
    input_ids: Dict[str, List[int]] = field(default_factory=dict)


@dataclass
class RunSummary:
    run_id: str
    components: List[ComponentRun]
    candidate_metrics: Dict[str, float] = field(default_factory=dict)
    baseline_metrics: Dict[str, float] = field(default_factory=dict)
    slice_metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # Multiclass: counts[actual class id][predicted class id] on the overall slice, candidate model.
    confusion_matrix: List[List[float]] = field(default_factory=list)
    blessed: Optional[bool] = None
    blessing_reasons: List[str] = field(default_factory=list)
    pushed: bool = False
    pushed_path: str = ""
    already_serving_version: str = ""
    baseline_model: str = ""
    candidate_model: str = ""
    hyperparameters: Dict[str, object] = field(default_factory=dict)
    hyperparameters_from: str = ""  # the earlier search's artifact when the Tuner was skipped (on_change)
    # split -> ["feature: short description"], from ExampleValidator
    anomalies: Dict[str, List[str]] = field(default_factory=dict)
    # EdgeExport's report (edge/export.py EdgeResult as a dict); empty when it did not run.
    edge: Dict[str, object] = field(default_factory=dict)
    # The Trainer's training.json (training/strategies.py): strategy, replicas, batch, resumed step, cluster.
    training: Dict[str, object] = field(default_factory=dict)
    # BulkInferrer's output: {"uri", "predictions"} (PredictionLog records); empty when it did not run.
    bulk_inference: Dict[str, object] = field(default_factory=dict)
    # The pre-push serving check (components/serving_check.py CheckResult as a dict); empty when it did not run.
    serving_check: Dict[str, object] = field(default_factory=dict)

    def component(self, name: str) -> Optional[ComponentRun]:
        return next((c for c in self.components if c.name == name), None)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)


def read_run(store: metadata_store.MetadataStore, pipeline_name: str, run_id: Optional[str] = None,
             started_after: float = 0.0) -> RunSummary:
    """The latest run of `pipeline_name` (or `run_id`) as recorded in MLMD (`pipeline.metadata.open_metadata`).

    `started_after` (epoch seconds): only a run registered since then, so that a runner reads its own run,
    never an earlier one, when its run failed before registering.
    """
    runs = [c for c in store.get_contexts_by_type("pipeline_run")
            if (run_id is None or c.name == run_id) and c.create_time_since_epoch >= started_after * 1000]
    pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_ctx is not None:
        in_pipeline = {c.id for c in store.get_children_contexts_by_context(pipeline_ctx.id)}
        runs = [c for c in runs if not in_pipeline or c.id in in_pipeline]
    if not runs:
        raise LookupError(f"no run of pipeline {pipeline_name!r} in this metadata store")
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifacts = {a.id: a for a in store.get_artifacts_by_id(list({e.artifact_id for e in events}))}

    components = []
    for execution in executions:
        comp = ComponentRun(node_name(store, execution.id), STATES.get(execution.last_known_state, "unknown"))
        for event in (e for e in events if e.execution_id == execution.id):
            key = event.path.steps[0].key if event.path.steps else ""
            if event.type in OUTPUT_EVENTS:
                comp.outputs.setdefault(key, []).append(artifacts[event.artifact_id].uri)
                comp.output_ids.setdefault(key, []).append(event.artifact_id)
            elif event.type in INPUT_EVENTS:
                comp.input_ids.setdefault(key, []).append(event.artifact_id)
        components.append(comp)
    summary = RunSummary(run_id=run.name, components=components)
    _add_model_results(summary, store, artifacts)
    return summary


def served_model_metrics(store: metadata_store.MetadataStore, source_model: str) -> Dict[str, float]:
    """The overall metrics the Evaluator measured for the model a serving version was pushed from.

    `source_model` is the push record's path (`<Model uri>/Format-Serving`). This is the metric of what is
    served; the latest run's candidate may have been refused, or the latest run stopped before evaluating.
    {} when no evaluation of that model is in the store.
    """
    uri = os.path.dirname(source_model) if os.path.basename(source_model) == "Format-Serving" else source_model
    model_ids = {a.id for a in store.get_artifacts_by_uri(uri)}
    if not model_ids:
        return {}
    evaluated = {e.execution_id for e in store.get_events_by_artifact_ids(list(model_ids))
                 if e.type in INPUT_EVENTS and e.path.steps and e.path.steps[0].key == "model"}
    outputs = [e for e in store.get_events_by_execution_ids(list(evaluated))
               if e.type in OUTPUT_EVENTS and e.path.steps and e.path.steps[0].key == "evaluation"]
    if not outputs:
        return {}
    newest = max(outputs, key=lambda e: (e.milliseconds_since_epoch, e.artifact_id))
    summary = RunSummary(run_id="", components=[])
    _read_evaluation(summary, store.get_artifacts_by_id([newest.artifact_id])[0].uri)
    return summary.candidate_metrics


def _add_model_results(summary: RunSummary, store, artifacts) -> None:
    evaluator = summary.component("Evaluator")
    if evaluator and evaluator.outputs.get("evaluation"):
        _read_evaluation(summary, evaluator.outputs["evaluation"][0])
        blessing = artifacts.get(evaluator.output_ids.get("blessing", [None])[0])
        if blessing is not None and "blessed" in blessing.custom_properties:
            summary.blessed = bool(blessing.custom_properties["blessed"].int_value)
        for key, attr in (("model", "candidate_model"), ("baseline_model", "baseline_model")):
            ids = evaluator.input_ids.get(key)
            if ids:
                setattr(summary, attr, store.get_artifacts_by_id(ids)[0].uri)
    pusher = summary.component("Pusher")
    if pusher and pusher.output_ids.get("pushed_model"):
        pushed = artifacts[pusher.output_ids["pushed_model"][0]]
        props = pushed.custom_properties
        summary.pushed = bool(props["pushed"].int_value) if "pushed" in props else False
        summary.pushed_path = props["pushed_destination"].string_value if "pushed_destination" in props else ""
        if "already_serving_version" in props:
            summary.already_serving_version = props["already_serving_version"].string_value
    summary.edge = _output_json(summary, "EdgeExport", "edge_model", "edge_export.json")
    summary.serving_check = _output_json(summary, "ServingCheck", "blessing", "serving_check.json")
    validator = summary.component("ExampleValidator")
    if validator and validator.outputs.get("anomalies"):
        summary.anomalies = read_anomalies(validator.outputs["anomalies"][0])
    summary.training = _output_json(summary, "Trainer", "model_run", "training.json")
    summary.hyperparameters = _output_json(summary, tuning_reuse.TUNER_ID, tuning_reuse.OUTPUT_KEY,
                                           tuning_reuse.HPARAMS_FILE).get("values", {})
    importer = summary.component(tuning_reuse.IMPORTER_ID)
    if not summary.hyperparameters and importer and importer.outputs.get("result"):
        # tuner.retune: on_change found an earlier search with the same tuning key.
        summary.hyperparameters_from = importer.outputs["result"][0]
        summary.hyperparameters = _output_json(summary, tuning_reuse.IMPORTER_ID, "result",
                                               tuning_reuse.HPARAMS_FILE).get("values", {})
    summary.bulk_inference = _read_inference_result(summary)


def _read_inference_result(summary: RunSummary) -> Dict[str, object]:
    """Where BulkInferrer wrote its PredictionLogs and how many; {} when it did not run or skipped the model."""
    run = summary.component("BulkInferrer")
    uris = run.outputs.get("inference_result") if run else None
    if not uris:
        return {}
    import tensorflow as tf

    files = tf.io.gfile.glob(os.path.join(uris[0], "*.gz"))
    count = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP")) if files else 0
    return {"uri": uris[0], "predictions": count}


def _output_json(summary: RunSummary, component: str, key: str, filename: str) -> Dict:
    """A JSON file a component wrote into its first `key` output; {} when it did not run or write it."""
    run = summary.component(component)
    uris = run.outputs.get(key) if run else None
    path = os.path.join(uris[0], filename) if uris else ""
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_anomalies(anomalies_uri: str) -> Dict[str, List[str]]:
    """Split -> "feature: description" lines from ExampleValidator's per-split SchemaDiff.pb."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    found = {}
    for split_dir in sorted(glob.glob(os.path.join(anomalies_uri, "Split-*"))):
        path = os.path.join(split_dir, "SchemaDiff.pb")
        if not os.path.exists(path):
            continue
        anomalies = anomalies_pb2.Anomalies()
        with open(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        lines = [f"{feature}: {info.short_description or info.description}"
                 for feature, info in sorted(anomalies.anomaly_info.items())]
        if lines:
            found[os.path.basename(split_dir)[len("Split-"):]] = lines
    return found


def _slice_name(slice_key) -> str:
    parts = [f"{k.column}={k.bytes_value.decode() if k.HasField('bytes_value') else k.int64_value if k.HasField('int64_value') else k.float_value}"  # noqa: E501
             for k in slice_key.single_slice_keys]
    return ", ".join(parts) or "overall"


def metric_name(key) -> str:
    """A TFMA MetricKey as one name: `auc`, `macro_auc` (macro average), `recall/class_2` (one class)."""
    if key.HasField("aggregation_type") and key.aggregation_type.macro_average:
        return f"macro_{key.name}"
    if key.HasField("sub_key") and key.sub_key.HasField("class_id"):
        return f"{key.name}/class_{key.sub_key.class_id.value}"
    return key.name


def read_confusion_matrix(evaluation_uri: str) -> List[List[float]]:
    """The candidate's multiclass confusion matrix (actual x predicted, argmax) on the overall slice; [] if none."""
    import tensorflow_model_analysis as tfma

    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue
        for kv in plots.plot_keys_and_values:
            matrices = kv.value.multi_class_confusion_matrix_at_thresholds.matrices
            if kv.key.model_name == "baseline" or not matrices:
                continue
            entries = matrices[0].entries
            size = max(max(e.actual_class_id, e.predicted_class_id) for e in entries) + 1 if entries else 0
            counts = [[0.0] * size for _ in range(size)]
            for e in entries:
                if e.actual_class_id >= 0 and e.predicted_class_id >= 0:
                    counts[e.actual_class_id][e.predicted_class_id] += e.num_weighted_examples
            return counts
    return []


def _read_evaluation(summary: RunSummary, evaluation_uri: str) -> None:
    import tensorflow_model_analysis as tfma

    for metrics in tfma.load_metrics(evaluation_uri):
        name = _slice_name(metrics.slice_key)
        for kv in metrics.metric_keys_and_values:
            if kv.key.is_diff:
                continue
            if not kv.value.HasField("double_value"):
                continue
            value = kv.value.double_value.value
            if name == "overall":
                target = summary.baseline_metrics if kv.key.model_name == "baseline" else summary.candidate_metrics
                target[metric_name(kv.key)] = value
            elif kv.key.model_name != "baseline":
                summary.slice_metrics.setdefault(name, {})[metric_name(kv.key)] = value
    if tasks.of_metrics(summary.candidate_metrics).per_class_scores:
        summary.confusion_matrix = read_confusion_matrix(evaluation_uri)
    validation = tfma.load_validation_result(evaluation_uri)
    if validation and not validation.validation_ok:
        for per_slice in validation.metric_validations_per_slice:
            for failure in per_slice.failures:
                summary.blessing_reasons.append(
                    f"{failure.metric_key.name} {failure.metric_value.double_value.value:.4f}: "
                    f"{failure.message}")
        if validation.missing_slices:
            summary.blessing_reasons.append(f"missing slices: {list(validation.missing_slices)}")


def _slice_lines(slice_metrics: Dict[str, Dict[str, float]], per_feature: int = 5) -> List[str]:
    """The task's headline metric per slice (reported, not gated): the largest slices of each sliced feature."""
    by_feature: Dict[str, List] = {}
    for name, metrics in slice_metrics.items():
        feature, _, value = name.partition("=")
        label, score = headline(metrics)[0]
        by_feature.setdefault(feature, []).append((metrics.get("example_count", 0), value, score, label))
    lines = []
    for feature, rows in sorted(by_feature.items()):
        rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        shown = ", ".join(f"{value} {score:.3f} (n={int(n)})" if score == score and score is not None else
                          f"{value} - (n={int(n)})" for n, value, score, _ in rows[:per_feature])
        more = f", +{len(rows) - per_feature} more" if len(rows) > per_feature else ""
        lines.append(f"  {rows[0][3]} by {feature}: {shown}{more}")
    return lines


def class_lines(summary: RunSummary, class_names: List[str]) -> List[str]:
    """Multiclass: recall of each class and the confusion matrix (rows: actual class, columns: predicted)."""
    names = list(class_names) or [str(i) for i in range(len(summary.confusion_matrix))]
    recalls = [(names[i] if i < len(names) else str(i), summary.candidate_metrics.get(f"recall/class_{i}"))
               for i in range(len(names))]
    lines = []
    if any(r is not None for _, r in recalls):
        lines.append("  recall per class: " + ", ".join(f"{n} {r:.3f}" for n, r in recalls if r is not None))
    if summary.confusion_matrix:
        width = max(8, *(len(n) for n in names)) + 1
        lines.append("  confusion matrix (rows: actual, columns: predicted)")
        lines.append("  " + " " * width + "".join(f"{n:>{width}s}" for n in names))
        for name, row in zip(names, summary.confusion_matrix):
            lines.append(f"  {name:<{width}s}" + "".join(f"{int(v):>{width}d}" for v in row))
    return lines


def blessing_rules(config, with_baseline: bool) -> List[str]:
    """The thresholds a candidate met (`Task.blessings`, what the Evaluator gates), for the summary."""
    return [f"{rule.label} {text}" for rule, text in
            config.features.task_type.blessing_texts(config.evaluator, with_baseline)]


def _edge_lines(edge: Dict, config, cached: bool = False) -> List[str]:
    """Float vs int8 size and quality, and where the edge model went (or why it did not, or that it is cached)."""
    if not edge:
        return []
    lines = []
    metrics, sizes = edge.get("metrics", {}), edge.get("sizes", {})
    task = tasks.task(edge.get("task") or config.features.task)
    if metrics:
        key, label = task.headline.key, task.headline.label
        versus, versus_label = task.versus_saved_model.key, task.versus_saved_model.label.replace(" with SavedModel", "")
        shown = lambda v: f"{task.versus_saved_model.format(v):>12s}"  # noqa: E731
        lines.append("  edge model           float TFLite   int8 TFLite   SavedModel")
        weights = (f"; weights {sizes['int8_weights'] / sizes['float_weights']:.2f}x"
                   if sizes.get("float_weights") else "")
        lines.append(f"  size (bytes)         {sizes['float']:12d}  {sizes['int8']:12d}            -"
                     f"   (int8 {sizes['int8'] / sizes['float']:.2f}x float{weights})")
        lines.append(f"  {label:20s} {metrics['float'][key]:12.4f}  {metrics['int8'][key]:12.4f}"
                     f"  {metrics['saved_model'][key]:11.4f}")
        lines.append(f"  {versus_label:20s} {shown(metrics['float'][versus])}  "
                     f"{shown(metrics['int8'][versus])}            -")
        for check in edge.get("gate") or []:
            value = round(check["value"], 4) + 0.0  # no "-0.0000"
            lines.append(f"  gate: int8 {check['measure']} {value:.4f} (limit {check['limit']:.4f}, "
                         f"{check['setting']})")
        ready = edge.get("edgetpu", {})
        lines.append("  Edge TPU ready: " + ("yes" if ready.get("ready") else
                                             "NO (" + "; ".join(ready.get("cpu_ops", [])[:3]) + ")"))
        lines.extend(_quantization_lines(edge, task))
    if edge.get("pushed") and cached:
        lines.append(f"  edge model not pushed again: the export is cached, it is already in {edge['version_dir']}")
    elif edge.get("pushed"):
        lines.append(f"  edge model pushed to: {edge['version_dir']}")
    else:
        lines.append(f"  edge model not pushed: {edge.get('reason', '')}")
    return lines


def _quantization_lines(edge: Dict, task) -> List[str]:
    """Which path made the int8 model (post-training, or quantization-aware after post-training failed), and
    for a distilled student, its teacher and the gap between them."""
    lines = []
    if edge.get("path"):
        failed = "; ".join(f"{c['measure']} {c['value']:.4f} > {c['limit']:.4f}" for c in
                           edge.get("post_training_gate") or [] if not c["value"] <= c["limit"])
        lines.append(f"  int8 by: {edge['path']}" + (f" (post-training int8 failed: {failed})" if failed else ""))
    distilled = edge.get("distillation")
    if distilled:
        key = task.headline.key
        lines.append(f"  edge student of the {distilled['teacher']['family']} model: {task.headline.label} "
                     f"{distilled['student'][f'int8_{key}']:.4f} (int8) vs {distilled['teacher'][key]:.4f} "
                     f"(served model), gap {distilled['gap'][key]:.4f}")
    return lines


def training_line(facts: Dict[str, object]) -> str:
    """`mirrored, 2 replicas, global batch 128 (64 per replica), 60 steps, resumed from step 20`, or a forest's
    `default, 87 trees on 8,000 examples`."""
    if "trees" in facts:
        return f"{facts['strategy']}, {facts['trees']} trees on {facts['train_examples']:,} examples"
    text = (f"{facts['strategy']}, {facts['replicas']} replica(s), global batch {facts['global_batch']} "
            f"({facts['per_replica_batch']} per replica), {facts['train_steps']} steps")
    cluster = facts.get("cluster") or []
    if cluster:
        jobs = [task["job"] for task in cluster]
        text += f", cluster of {jobs.count('ps')} ps + {jobs.count('worker')} workers"
    if facts.get("resumed_from_step"):
        text += f", resumed from step {facts['resumed_from_step']}"
    return text


def family_lines(facts: Dict[str, object]) -> List[str]:
    """The family that trained the model; with `training.model auto`, every family's held-out score too."""
    auto = facts.get("auto")
    if not auto:
        return [f"  model family: {facts.get('model', 'dnn')}"]
    scores = ", ".join(f"{name} {score[auto['metric']]:.4f}" for name, score in auto["scores"].items())
    return [f"  model family: {auto['chosen']}, chosen by auto on {auto['validation_rows']} rows held out of the "
            f"train split ({auto['metric_label']}: {scores})"]


def edge_student_lines(facts: Dict[str, object]) -> List[str]:
    student = facts.get("edge_student")
    if not student:
        return []
    fidelity = ", ".join(f"{k} {v:.4f}" for k, v in student["fidelity_on_train"].items())
    return [f"  edge student: {student['student']} distilled from the {student['teacher']} model on "
            f"{student['distillation_examples']} examples ({student['distillation_training_rows']} training rows "
            f"and mixes of them; on the training rows: {fidelity})"]


def format_summary(summary: RunSummary, config, timings: Dict[str, float]) -> str:
    lines = ["", f"Run {summary.run_id}"]
    cached = [c.name for c in summary.components if c.state == "cached"]
    if cached:
        lines.append(f"  reused from cache: {', '.join(cached)}")
    for split, found in summary.anomalies.items():
        lines.append(f"  data anomalies in {split} (tolerated by the anomaly gate): {'; '.join(found)}")
    gate = summary.component("AnomalyGate")
    if gate and gate.outputs.get("report"):
        lines.append(f"  data validation passed: {os.path.join(gate.outputs['report'][0], 'report.html')}")
    if summary.hyperparameters:
        hp = ", ".join(f"{k}={v}" for k, v in summary.hyperparameters.items() if not k.startswith("tuner/"))
        lines.append(f"  tuned hyper-parameters: {hp}")
        if summary.hyperparameters_from:
            lines.append("  (Tuner skipped, tuner.retune: on_change: nothing the search depends on changed; "
                         f"its result: {summary.hyperparameters_from})")
    if summary.training:
        lines.append(f"  training: {training_line(summary.training)}")
        lines.extend(family_lines(summary.training) + edge_student_lines(summary.training))
    if summary.candidate_metrics:
        lines.append("  metric                       candidate   baseline")
        for name in (m.key for m in tasks.of_metrics(summary.candidate_metrics).report_metrics):
            key = next((k for k in summary.candidate_metrics if k.lower() == name.lower()), None)
            if key is None:
                continue
            base = summary.baseline_metrics.get(key)
            fmt = "{:9.0f}" if key == "example_count" else "{:9.4f}"
            base_text = " " + fmt.format(base) if base is not None else "         -"
            lines.append(f"  {key:28s} {fmt.format(summary.candidate_metrics[key])} {base_text}")
        if not summary.baseline_metrics:
            lines.append("  (no baseline: no model was blessed before this one)")
        lines.extend(class_lines(summary, config.features.class_names))
    lines.extend(_slice_lines(summary.slice_metrics))
    if summary.blessed is True:
        rules = blessing_rules(config, bool(summary.baseline_metrics)) or ["no thresholds set"]
        lines.append(f"  blessed: yes (overall slice: {', '.join(rules)})")
    elif summary.blessed is False:
        lines.append("  blessed: NO")
        lines.extend(f"    - {r}" for r in summary.blessing_reasons)
    check = summary.serving_check
    refused_by_check = bool(check) and not check.get("passed") and summary.blessed is True
    if check and summary.blessed is True:
        lines.append(f"  serving check: {'passed' if check.get('passed') else 'FAILED'} ({check.get('reason', '')})")
    pusher = summary.component("Pusher")
    if summary.pushed and pusher.state == "cached":
        lines.append(f"  not pushed again: the Pusher is cached, this model already serves from {summary.pushed_path}")
    elif summary.pushed:
        lines.append(f"  pushed to: {summary.pushed_path}")
    elif summary.already_serving_version:
        lines.append(f"  not pushed: this model is already serving as version {summary.already_serving_version}"
                     f" in {config.model_serving_dir}")
    elif summary.blessed is False:
        lines.append(f"  not pushed: serving directory {config.model_serving_dir} is unchanged")
    elif refused_by_check:
        lines.append(f"  not pushed: the serving check refused the model; serving directory "
                     f"{config.model_serving_dir} is unchanged")
    edge = summary.component("EdgeExport")
    lines.extend(_edge_lines(summary.edge, config, cached=bool(edge and edge.state == "cached")))
    if summary.bulk_inference:
        lines.append(f"  bulk inference: {summary.bulk_inference['predictions']} PredictionLogs of "
                     f"{config.bulk_inference.pattern} in {summary.bulk_inference['uri']}")
    lines.append(f"  total time: {sum(timings.values()):.1f}s")
    lines.append(f"  artifacts: {config.pipeline_root}")
    lines.append(f"  metadata:  {config.metadata_path}")
    return "\n".join(lines)
