"""What made this model? Provenance read from ML Metadata.

Starting from a pushed version (serving or edge) or a run, walk MLMD's events
upstream: push <- serving check, blessing/evaluation <- model <- hyper-parameters, transform
graph <- schema, statistics <- examples. Only MLMD is read, so the same code
answers against the local SQLite store and a production MySQL store.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipeline import tuning_reuse
from pipeline.metadata import INPUT_EVENTS, OUTPUT_EVENTS, STATES, iso, node_name

# The chain, in the order a reader follows it; each stage lists the MLMD artifact types it shows.
STAGES = (
    ("input examples", ("Examples",),
     ("ImportExampleGen", "CsvExampleGen", "ParquetExampleGen", "BigQueryExampleGen")),
    ("statistics", ("ExampleStatistics",), ("StatisticsGen",)),
    ("schema", ("Schema",), ("ImportSchemaGen", "SchemaGen")),
    ("anomalies", ("ExampleAnomalies", "DataValidationReport"), ("ExampleValidator", "AnomalyGate")),
    ("transform graph", ("TransformGraph",), ()),
    ("hyper-parameters", ("HyperParameters",), ()),
    ("trained model", ("Model",), ("Trainer",)),
    ("evaluation", ("ModelEvaluation",), ()),
    ("blessing", ("ModelBlessing",), ()),
    ("serving check", ("InfraBlessing",), ()),
    ("bulk inference", ("InferenceResult",), ("BulkInferrer",)),
    ("push", ("PushedModel", "EdgeModel", "PushedEdgeModel"), ()),
)
# Components that judge statistics: their outputs belong to the data's story.
_VALIDATORS = ("ExampleValidator", "AnomalyGate")
# Inputs that point at another model's history: shown, never walked through.
_NOT_UPSTREAM = {"baseline_model"}


def _value(v: metadata_store_pb2.Value):
    kind = v.WhichOneof("value")
    if kind == "proto":
        return str(v.proto)
    return getattr(v, kind) if kind else None


@dataclass
class ArtifactInfo:
    id: int
    type: str
    uri: str
    producer: str  # the pipeline node that wrote it
    created: str
    properties: Dict[str, object] = field(default_factory=dict)


@dataclass
class Lineage:
    target: str
    pipeline_run: str
    stages: Dict[str, List[ArtifactInfo]]
    executions: List[Dict[str, object]]
    baseline_model: Optional[ArtifactInfo] = None

    def artifact(self, stage: str) -> Optional[ArtifactInfo]:
        found = self.stages.get(stage) or []
        return found[0] if found else None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)


class _Graph:
    """Cached MLMD lookups for one walk."""

    def __init__(self, store: metadata_store.MetadataStore):
        self.store = store
        self._types: Dict[int, str] = {}
        self._producer: Dict[int, str] = {}

    def type_name(self, artifact) -> str:
        if artifact.type_id not in self._types:
            self._types[artifact.type_id] = self.store.get_artifact_types_by_id([artifact.type_id])[0].name
        return self._types[artifact.type_id]

    def node(self, execution_id: int) -> str:
        if execution_id not in self._producer:
            self._producer[execution_id] = node_name(self.store, execution_id)
        return self._producer[execution_id]

    def info(self, artifact, producer: str) -> ArtifactInfo:
        props = {k: _value(v) for k, v in artifact.properties.items()}
        props.update({k: _value(v) for k, v in artifact.custom_properties.items()
                      if k not in ("tfx_version", "is_external")})
        return ArtifactInfo(artifact.id, self.type_name(artifact), artifact.uri, producer,
                            iso(artifact.create_time_since_epoch), props)


def _upstream(graph: _Graph, start_ids: Iterable[int]):
    """Executions that led to the given artifacts, stopping at baseline models and resolvers."""
    store = graph.store
    seen_artifacts: Set[int] = set(start_ids)
    executions: Dict[int, metadata_store_pb2.Execution] = {}
    frontier = list(seen_artifacts)
    while frontier:
        events = [e for e in store.get_events_by_artifact_ids(frontier) if e.type in OUTPUT_EVENTS]
        candidates = {x.id: x for x in store.get_executions_by_id(list({e.execution_id for e in events}))}
        producers = set()
        for artifact in {e.artifact_id for e in events}:
            writers = [candidates[e.execution_id] for e in events if e.artifact_id == artifact]
            # A cached re-run records the same outputs again; the execution that computed them is the history.
            computed = [x for x in writers if x.last_known_state != metadata_store_pb2.Execution.CACHED]
            producers.update(x.id for x in (computed or writers))
        frontier = []
        for execution in (candidates[i] for i in sorted(producers - set(executions))):
            if graph.node(execution.id).endswith("resolver"):
                continue
            executions[execution.id] = execution
            for event in store.get_events_by_execution_ids([execution.id]):
                key = event.path.steps[0].key if event.path.steps else ""
                if event.type in INPUT_EVENTS and key not in _NOT_UPSTREAM and event.artifact_id not in seen_artifacts:
                    seen_artifacts.add(event.artifact_id)
                    frontier.append(event.artifact_id)
    return executions


def _outputs_of_consumers(graph: _Graph, artifact_ids: List[int], nodes: Iterable[str]) -> Set[int]:
    """Outputs of the `nodes` executions that read any of the artifacts (computing runs preferred over cached)."""
    store = graph.store
    readers = {e.execution_id for e in store.get_events_by_artifact_ids(artifact_ids)
               if e.type in INPUT_EVENTS and graph.node(e.execution_id) in nodes}
    executions = store.get_executions_by_id(list(readers))
    computed = [x for x in executions if x.last_known_state != metadata_store_pb2.Execution.CACHED]
    outputs: Set[int] = set()
    for execution in computed or executions:
        outputs.update(e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                       if e.type in OUTPUT_EVENTS)
    return outputs


def lineage_of(store: metadata_store.MetadataStore, artifact_id: int, target: str) -> Lineage:
    """The provenance of one artifact (normally a push) as an ordered chain of stages."""
    graph = _Graph(store)
    executions = _upstream(graph, [artifact_id])
    # The evaluation sits beside the blessing (same Evaluator run); anomalies beside the statistics.
    events = store.get_events_by_execution_ids(list(executions))
    artifact_ids = {e.artifact_id for e in events if e.type in OUTPUT_EVENTS or
                    (e.path.steps and e.path.steps[0].key not in _NOT_UPSTREAM)}
    artifact_ids.add(artifact_id)
    # Statistics and anomalies are not inputs of the model, but they judged the very examples it used.
    example_ids = [a.id for a in store.get_artifacts_by_id(list(artifact_ids)) if graph.type_name(a) == "Examples"]
    stats_ids = _outputs_of_consumers(graph, example_ids, ("StatisticsGen",))
    artifact_ids.update(stats_ids)
    artifact_ids.update(_outputs_of_consumers(graph, stats_ids, _VALIDATORS))
    # A serving push is followed by the edge export of the same model: both are where the model went.
    artifact_ids.update(_outputs_of_consumers(graph, [artifact_id], ("EdgeExport",)))
    # So is the BulkInferrer's scoring of the unlabelled input with that model.
    model_ids = [a.id for a in store.get_artifacts_by_id(list(artifact_ids)) if graph.type_name(a) == "Model"]
    artifact_ids.update(_outputs_of_consumers(graph, model_ids, ("BulkInferrer",)))
    producer_of: Dict[int, str] = {}
    for event in store.get_events_by_artifact_ids(list(artifact_ids)):
        if event.type in OUTPUT_EVENTS and event.artifact_id not in producer_of:
            producer_of[event.artifact_id] = graph.node(event.execution_id)

    stages: Dict[str, List[ArtifactInfo]] = {name: [] for name, _, _ in STAGES}
    for artifact in sorted(store.get_artifacts_by_id(list(artifact_ids)), key=lambda a: a.id):
        info = graph.info(artifact, producer_of.get(artifact.id, ""))
        for name, types, producers in STAGES:
            # Custom artifact types carry a namespace (validation.DataValidationReport).
            if info.type.split(".")[-1] in types and (not producers or info.producer in producers):
                stages[name].append(info)
    # Pushes that happened, plus the target itself (it may be a push that was skipped).
    stages["push"] = [a for a in stages["push"] if a.properties.get("pushed") or a.id == artifact_id]

    baseline = None
    for event in events:
        if event.path.steps and event.path.steps[0].key in _NOT_UPSTREAM:
            artifact = store.get_artifacts_by_id([event.artifact_id])[0]
            baseline = graph.info(artifact, "")
    run = ""
    for context in store.get_contexts_by_artifact(artifact_id):
        if store.get_context_types_by_id([context.type_id])[0].name == "pipeline_run":
            run = context.name
    steps = [{"id": e.id, "node": graph.node(e.id), "state": STATES.get(e.last_known_state, "unknown"),
              "started": iso(e.create_time_since_epoch), "ended": iso(e.last_update_time_since_epoch)}
             for e in sorted(executions.values(), key=lambda e: e.id)]
    return Lineage(target, run, stages, steps, baseline)


def find_push(store: metadata_store.MetadataStore, version: str = "", path: str = "") -> metadata_store_pb2.Artifact:
    """The artifact that recorded pushing `version` (or to `path`); newest first if several match."""
    candidates = []
    for artifact in store.get_artifacts():
        props = artifact.custom_properties
        if "pushed_destination" not in props or not props.get("pushed", metadata_store_pb2.Value()).int_value:
            continue
        destination = props["pushed_destination"].string_value.rstrip("/")
        pushed_version = props["pushed_version"].string_value if "pushed_version" in props else ""
        if (version and pushed_version == str(version)) or (path and destination == path.rstrip("/")) or \
                (not version and not path):
            candidates.append(artifact)
    if not candidates:
        wanted = f"version {version}" if version else f"destination {path}" if path else "any pushed model"
        raise LookupError(f"no push of {wanted} is recorded in this metadata store; "
                          "`python -m reports runs` lists the runs it knows")
    return max(candidates, key=lambda a: (a.create_time_since_epoch, a.id))


def run_artifact(store: metadata_store.MetadataStore, run_id: str) -> metadata_store_pb2.Artifact:
    """The furthest-along artifact of a run: its push, else its blessing, model, ... examples."""
    contexts = [c for c in store.get_contexts_by_type("pipeline_run") if c.name == run_id]
    if not contexts:
        raise LookupError(f"no pipeline run {run_id!r} in this metadata store; `python -m reports runs` lists them")
    artifacts = store.get_artifacts_by_context(contexts[0].id)
    graph = _Graph(store)
    for _, types, _ in reversed(STAGES):
        matching = [a for a in artifacts if graph.type_name(a) in types]
        if matching:
            return max(matching, key=lambda a: a.id)
    raise LookupError(f"pipeline run {run_id!r} produced no artifacts (it failed before its first component)")


@dataclass
class RunRow:
    run_id: str
    status: str
    started: str
    duration_s: float
    components: int
    auc: Optional[float] = None  # binary AUC, multiclass macro AUC
    accuracy: Optional[float] = None  # binary or multiclass accuracy
    blessed: Optional[bool] = None
    pushed: str = ""
    # The candidate's overall metrics (TFMA names, reports.summary.metric_name): RMSE and MAE for regression.
    metrics: Dict[str, float] = field(default_factory=dict)


def list_runs(store: metadata_store.MetadataStore, pipeline_name: str, with_metrics: bool = True) -> List[RunRow]:
    """Every recorded run of the pipeline, oldest first, with its status and evaluation."""
    from reports.summary import read_run

    pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline_ctx is None:
        raise LookupError(f"pipeline {pipeline_name!r} has no runs in this metadata store")
    runs = sorted(store.get_children_contexts_by_context(pipeline_ctx.id),
                  key=lambda c: (c.create_time_since_epoch, c.id))
    rows = []
    for run in runs:
        executions = store.get_executions_by_context(run.id)
        if not executions:
            continue
        states = {STATES.get(e.last_known_state, "unknown") for e in executions}
        status = "failed" if "failed" in states else "running" if states & {"running", "new"} else "complete"
        start = min(e.create_time_since_epoch for e in executions)
        end = max(e.last_update_time_since_epoch for e in executions)
        row = RunRow(run.name, status, iso(start), (end - start) / 1000, len(executions))
        if with_metrics:
            summary = read_run(store, pipeline_name, run.name)
            metrics = summary.candidate_metrics
            row.metrics = dict(metrics)
            row.auc = metrics.get("auc", metrics.get("macro_auc"))
            row.accuracy = metrics.get("binary_accuracy", metrics.get("sparse_categorical_accuracy"))
            row.blessed = summary.blessed
            row.pushed = (os.path.basename(summary.pushed_path) if summary.pushed else
                          f"(serving {summary.already_serving_version})" if summary.already_serving_version else "")
        rows.append(row)
    return rows


def _describe(stage: str, a: ArtifactInfo) -> str:
    p = a.properties
    if stage == "input examples":
        splits = ",".join(json.loads(p["split_names"])) if "split_names" in p else ""
        return f"span {p.get('span', 0)}, version {p.get('version', 0)}, splits {splits}"
    if stage == "schema":
        return "curated (ImportSchemaGen)" if a.producer == "ImportSchemaGen" else f"by {a.producer}"
    if stage == "anomalies" and a.type.endswith("DataValidationReport"):
        return f"gate {'passed' if p.get('passed') else 'FAILED'}: {p.get('report', '')}"
    if stage == "anomalies":
        from reports.summary import read_anomalies

        found = read_anomalies(a.uri)
        return "; ".join(f"{split}: {', '.join(lines)}" for split, lines in found.items()) or "none"
    if stage == "hyper-parameters":
        path = os.path.join(a.uri, tuning_reuse.HPARAMS_FILE)
        if os.path.exists(path):
            values = json.load(open(path, encoding="utf-8")).get("values", {})
            return ", ".join(f"{k}={v}" for k, v in values.items() if not k.startswith("tuner/"))
    if stage == "trained model":
        return _family_text(a.uri)
    if stage == "blessing":
        return "BLESSED" if p.get("blessed") else "NOT blessed"
    if stage == "serving check":
        return f"{'passed' if p.get('blessed') else 'REFUSED'}: {p.get('reason', '')}"
    if stage == "push":
        return f"-> {p.get('pushed_destination', '')} (version {p.get('pushed_version', '?')})"
    return ""


def _family_text(model_uri: str) -> str:
    """`family gbdt, chosen by auto on 120 held-out rows (AUC: dnn 0.95, gbdt 0.97, linear 0.94)` from the model's
    family record (models/trainer/export.py)."""
    path = os.path.join(model_uri, "Format-Serving", "assets", "model_family.json")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    text = f"family {record.get('family', '?')}"
    auto = record.get("auto")
    if auto:
        scores = ", ".join(f"{name} {score[auto['metric']]:.4f}" for name, score in auto["scores"].items())
        text += f", chosen by auto on {auto['validation_rows']} held-out rows ({auto['metric_label']}: {scores})"
    if record.get("edge"):
        text += f"; edge model: {record['edge']['kind']} ({record['edge']['student']})"
    return text


def _evaluation_line(a: ArtifactInfo) -> str:
    import tensorflow_model_analysis as tfma

    from reports.summary import headline, metric_name

    overall: Dict[str, Dict[str, float]] = {}
    for metrics in tfma.load_metrics(a.uri):
        if metrics.slice_key.single_slice_keys:
            continue
        for kv in metrics.metric_keys_and_values:
            if not kv.key.is_diff and kv.value.HasField("double_value"):
                overall.setdefault(kv.key.model_name or "candidate", {})[metric_name(kv.key)] = \
                    kv.value.double_value.value
    parts = []
    for model in ("candidate", "baseline"):
        m = overall.get(model)
        if m:
            parts.append(f"{model} " + " ".join(f"{label} {value if value is not None else float('nan'):.4f}"
                                                 for label, value in headline(m)))
    return "; ".join(parts) or "no metrics"


def format_lineage(lineage: Lineage) -> str:
    lines = [f"Lineage of {lineage.target}" + (f"  (run {lineage.pipeline_run})" if lineage.pipeline_run else "")]
    for name, _, _ in STAGES:
        for a in lineage.stages.get(name, []):
            detail = _evaluation_line(a) if name == "evaluation" else _describe(name, a)
            lines.append(f"  {name:17s} #{a.id:<4d} {a.producer:16s} {a.created}  {a.uri}")
            if detail:
                lines.append(f"  {'':17s}       {detail}")
        if name == "evaluation" and lineage.stages.get(name):
            base = lineage.baseline_model
            lines.append(f"  {'':17s}       baseline model: " + (f"#{base.id} {base.uri}" if base else
                                                                      "none (first blessed model)"))
    return "\n".join(lines)


def format_runs(rows: List[RunRow]) -> str:
    """One line per run; the two metric columns are the task's headline metrics (AUC/accuracy, RMSE/MAE)."""
    from reports.summary import headline

    labels = [label for label, _ in headline(next((r.metrics for r in rows if r.metrics), {}))]
    lines = [f"{'run':28s} {'status':9s} {'started':21s} {'seconds':>8s} {labels[0]:>7s} {labels[1]:>9s} "
             f"{'blessed':8s} pushed"]
    for r in rows:
        values = [f"{v:.4f}" if v is not None else "-" for _, v in headline(r.metrics)]
        blessed = "yes" if r.blessed else "NO" if r.blessed is False else "-"
        lines.append(f"{r.run_id:28s} {r.status:9s} {r.started:21s} {r.duration_s:8.1f} {values[0]:>7s} "
                     f"{values[1]:>9s} {blessed:8s} {r.pushed or '-'}")
    return "\n".join(lines)
