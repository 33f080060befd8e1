"""Blessed SavedModel -> gated, self-describing int8 TFLite in `<edge_dir>/<model_name>/<version>/`.

Runs inside the EdgeExport component (TensorFlow available). Steps:
1. calibrate: read Transform's transformed training examples; the clip range of each
   numeric feature (training min/max or quantiles) and a representative sample;
2. convert the SavedModel's `edge` signature at batch 1 (clip in front) twice: float,
   and full-integer (TFLITE_BUILTINS_INT8, int8/uint8 io) with the representative data;
3. gate: on the raw eval split, the SavedModel's `serving_default` vs both TFLite
   models run by the device runtime itself (raw features -> edge/encoder.py -> interpreter),
   per task: binary AUC drop (beyond what rounding the SavedModel's own scores to the int8
   output's 256 levels costs), multiclass accuracy drop and class agreement, regression
   RMSE increase relative to the std of the eval labels;
4. quantization-aware training when post-training int8 fails the gate: the model's Keras
   core (the `edge_core.keras` asset) fine-tuned with fake-quantized weights and activations
   (TensorFlow Model Optimization), converted and gated again; the result says which path
   produced the pushed model;
5. push only when the gate passes: files written to a hidden staging directory, then
   renamed, so a failed export leaves the last version intact.

A decision forest's `edge` signature is its distilled student: the gate then
compares the student with the forest itself, and the manifest names teacher,
student and the gap between them (`model_family.json`, models/trainer/export.py).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import numpy as np
import tensorflow as tf
from absl import logging

from contract import versions
from contract.config import EdgeConfig, FeaturesConfig
from contract.serving import SERVING_SIGNATURE
from edge import edgetpu, metadata
from edge.runtime import MANIFEST, EdgeModel, interpreter_module
from models import features
from models.trainer import custom_ops, edge_signature
from models.trainer import export as model_export

FILES = {"int8": "model_int8.tflite", "float": "model_float.tflite", "mapping": "edge_mapping.json"}
# Clip ranges and representative rows come from at most this many transformed training examples:
# enough for stable quantiles, bounded memory (each row is a dense one-hot vector) on big datasets.
CALIBRATION_EXAMPLES = 100_000
# Rows per call when the SavedModel scores rows (calibration and gate): bounded activations on big data.
SCORE_BATCH = 1024
POST_TRAINING, QUANTIZATION_AWARE = "post-training int8", "quantization-aware training"
# Quantization-aware fine-tuning: passes over the calibration rows, at a small rate (the float weights are a good
# start; the fake-quantized forward pass only has to adapt to 8-bit rounding).
QAT_EPOCHS = 8
QAT_LEARNING_RATE = 1e-4
QAT_BATCH = 64


@dataclass
class EdgeResult:
    pushed: bool
    reason: str
    version_dir: str = ""
    task: str = ""
    sizes: Dict[str, int] = field(default_factory=dict)
    metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # What the gate measured: {"measure", "value", "limit"} per check, e.g. the int8 AUC drop.
    gate: List[Dict[str, Any]] = field(default_factory=list)
    auc_drop: float = float("nan")  # binary: SavedModel AUC - int8 AUC
    edgetpu: Dict[str, Any] = field(default_factory=dict)
    # Which way the int8 model was made: post-training quantization, or quantization-aware training after
    # post-training int8 failed the gate ("" when no int8 model was gated).
    path: str = ""
    # The post-training int8 model's gate when quantization-aware training followed it.
    post_training_gate: List[Dict[str, Any]] = field(default_factory=list)
    # A distilled edge model (decision forests): teacher, student and the gap between them.
    distillation: Dict[str, Any] = field(default_factory=dict)


def _records(pattern: Union[str, List[str]], limit: int = 0, spread: bool = False) -> List[bytes]:
    """The first `limit` records (0 = all); `spread` reads the files round-robin, 64 at a time, so a
    limited sample comes from many files instead of the first few (shards are often written in key or
    time order); past 64 files the sample comes from the first 64, each one's reader costing memory."""
    patterns = [pattern] if isinstance(pattern, str) else pattern
    files = sorted(f for p in patterns for f in glob.glob(p))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {', '.join(patterns)}")
    records = []
    # tf.data interleaves parallel reads deterministically, one record per file in turn.
    readers = min(len(files), 64) if spread and limit else None
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=readers):
        records.append(record.numpy())
        if limit and len(records) >= limit:
            break
    return records


def transformed_inputs(records: List[bytes], feature_spec, mapping) -> List[np.ndarray]:
    """Transformed tf.Examples -> the edge inputs in signature order (packed z-scores, one-hot block, bags),
    unclipped."""
    return edge_inputs(tf.io.parse_example(tf.constant(records), feature_spec), mapping)


def _rows(value) -> int:
    return int(value.dense_shape[0]) if isinstance(value, tf.SparseTensor) else len(value)


def edge_inputs(transformed: Dict[str, Any], mapping) -> List[np.ndarray]:
    """Transform's outputs by name (dense arrays or tensors; a bag's ids and weights sparse) -> the edge inputs
    in signature order, unclipped."""
    columns = []
    rows = _rows(next(iter(transformed.values())))
    if mapping["numeric_input"]:
        columns.append(np.hstack([np.asarray(transformed[e["input"]]).reshape(-1, 1) for e in mapping["numeric"]])
                       .astype(np.float32))
    if mapping["one_hot"]["input"]:
        one_hot = np.zeros((rows, mapping["one_hot"]["size"]), np.float32)
        for entry in mapping["one_hot"]["features"]:
            ids = np.asarray(transformed[entry["input"]]).reshape(-1)
            one_hot[np.arange(rows), entry["offset"] + ids] = 1.0
        columns.append(one_hot)
    if mapping.get("bags", {}).get("input"):
        bags = np.zeros((rows, mapping["bags"]["size"]), np.float32)
        for entry in mapping["bags"]["features"]:
            ids = transformed[entry["input"]]
            at = np.asarray(ids.indices)[:, 0]
            weights = (np.asarray(transformed[features.weights_name(entry["feature"])].values)
                       if entry["weighting"] == "tfidf" else np.ones(len(at), np.float32))
            block = bags[:, entry["offset"]:entry["offset"] + entry["size"]]
            # Summed per id, as the model's CategoryEncoding sums them (presence: at most 1).
            np.add.at(block, (at, np.asarray(ids.values)), weights)
            if entry["weighting"] != "tfidf":
                np.minimum(block, 1.0, out=block)
        columns.append(bags)
    return columns


def clip_ranges(numeric: Optional[np.ndarray], mapping, quantile: float) -> Dict[str, List[float]]:
    """Per numeric feature (by its transformed name), the range its int8 quantization covers."""
    if numeric is None:
        return {}
    return {e["input"]: [float(np.quantile(numeric[:, i], quantile)), float(np.quantile(numeric[:, i], 1.0 - quantile))]
            for i, e in enumerate(mapping["numeric"])}


def _clip_vectors(mapping):
    clip = mapping["clip"]
    low = np.array([[clip[e["input"]][0] for e in mapping["numeric"]]], np.float32)
    high = np.array([[clip[e["input"]][1] for e in mapping["numeric"]]], np.float32)
    return low, high


def _batch_one_function(signature, mapping):
    """`signature` (the `edge` signature, or a function of the same inputs) at static batch 1 with the clip in
    front (MINIMUM/MAXIMUM, TPU ops)."""
    names = edge_signature.input_names(mapping)
    widths = edge_signature.input_widths(mapping)
    specs = [tf.TensorSpec([1, widths[n]], tf.float32, name=n) for n in names]
    low, high = _clip_vectors(mapping) if mapping["numeric_input"] else (None, None)

    @tf.function(input_signature=specs)
    def edge(*tensors):
        inputs = {n: tf.clip_by_value(t, low, high) if n == mapping["numeric_input"] else t
                  for n, t in zip(names, tensors)}
        return signature(**inputs)

    return edge.get_concrete_function()


def convert(signature, mapping, representative: List[np.ndarray], io_type: str) -> Dict[str, bytes]:
    """The float and the full-int8 TFLite of the batch-1 `edge` function (`signature`).

    TF's `from_concrete_functions` writes the function out as a SavedModel under
    `serving_default`, with the whole serving model for its variables, and
    converts that, on every call. Here it is written once, holding only the
    variables the function reads, and converted twice: the same two models
    (same gate metrics), the whole export 17.7 s -> 6.3-6.6 s on the bundled
    data's model (README, Performance).
    """
    function = _batch_one_function(signature, mapping)
    with tempfile.TemporaryDirectory(prefix="edge_convert_") as saved:
        # Only what the function reads: the serving model's other signatures and their tables stay out.
        holder = tf.Module()
        holder.variables_used = list(function.variables)
        tf.saved_model.save(holder, saved, signatures={"serving_default": function})
        return _convert_saved(saved, representative, mapping, io_type)


def _convert_saved(saved: str, representative: List[np.ndarray], mapping, io_type: str) -> Dict[str, bytes]:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
    float_model = converter.convert()
    # The converter feeds calibration rows to the model's input tensors in their order, which need not be
    # the signature's (one_hot can come before numeric).
    by_name = dict(zip(edge_signature.input_names(mapping), representative))
    ordered = [by_name[name] for name in input_order(float_model)]

    def representative_dataset():
        for i in range(len(ordered[0])):
            yield [column[i:i + 1] for column in ordered]

    converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = getattr(tf, io_type)
    return {"float": float_model, "int8": converter.convert()}


def _rank_score(scores: np.ndarray) -> np.ndarray:
    """One number per row to spread calibration rows over: the score, or the top class probability."""
    return scores.max(axis=1) if scores.ndim == 2 else scores


def calibration_rows(columns: List[np.ndarray], mapping, count: int, scores: np.ndarray) -> List[np.ndarray]:
    """Clipped training rows that calibrate the int8 ranges.

    `count` rows at evenly spaced ranks of the float model's score (both output extremes
    are in range), and two rows at the ends of every numeric clip range, so that the
    packed input's int8 range covers exactly the clip ranges. Too few rows under-calibrate
    the hidden layers: measured on a 600-example model, 200 rows shifted int8 scores by
    -0.05 and flipped 4-7% of decisions, 600 rows shifted them by -0.004 and flipped none.
    """
    order = np.argsort(_rank_score(scores), kind="mergesort")
    chosen = order[np.unique(np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int))]
    rows = [c[chosen] for c in columns]
    if mapping["numeric_input"]:
        low, high = _clip_vectors(mapping)
        rows[0] = np.concatenate([np.clip(rows[0], low, high), low, high]).astype(np.float32)
        rows[1:] = [np.concatenate([r, r[:2]]) for r in rows[1:]]
    return rows


def float_scores(loaded, columns: List[np.ndarray], mapping) -> np.ndarray:
    """The SavedModel's `edge` signature on transformed rows (the model's own float outputs)."""
    signature = loaded.signatures[edge_signature.EDGE_SIGNATURE]
    names, rows = edge_signature.input_names(mapping), len(columns[0])
    # In slices: every layer's activations for up to CALIBRATION_EXAMPLES rows at once would be held at once.
    out = [next(iter(signature(**{n: tf.constant(c[i:i + SCORE_BATCH]) for n, c in zip(names, columns)}).values()))
           .numpy() for i in range(0, rows, SCORE_BATCH)]
    return _squeeze(np.concatenate(out))


def _squeeze(outputs: np.ndarray) -> np.ndarray:
    """[n, 1] -> [n]; [n, classes] stays."""
    return outputs.reshape(-1) if outputs.ndim == 1 or outputs.shape[1] == 1 else outputs


def raw_records(examples: List[bytes], spec: FeaturesConfig) -> List[Dict[str, Any]]:
    """Serialized raw tf.Examples -> {feature: [values]}, what a device would receive."""
    wanted = set(spec.raw_input_features)
    out = []
    for serialized in examples:
        example = tf.train.Example.FromString(serialized)
        record = {}
        for key, feature in example.features.feature.items():
            if key in wanted:
                kind = feature.WhichOneof("kind")
                record[key] = list(getattr(feature, kind).value) if kind else []
        out.append(record)
    return out


def labels_of(examples: List[bytes], spec: FeaturesConfig) -> np.ndarray:
    """The label of each raw example, by the spec's rule (`FeaturesConfig.label`), as Transform computes it."""
    missing = features.MISSING

    def value(example, key):
        """The first value of a column; Transform's missing value of its kind when absent."""
        feature = example.features.feature.get(key)
        kind = feature.WhichOneof("kind") if feature is not None else None
        values = getattr(feature, kind).value if kind else []
        if values:
            return values[0]
        return missing["string" if kind == "bytes_list" else "int" if kind == "int64_list" else "float"]

    parsed = [tf.train.Example.FromString(e) for e in examples]
    relative = [value(e, spec.label_relative_to) for e in parsed] if spec.uses_threshold_rule and \
        spec.label_relative_to else None
    return spec.label([value(e, spec.label_column) for e in parsed], relative)


def serving_predictions(loaded, examples: List[bytes], spec: FeaturesConfig,
                        batch: int = SCORE_BATCH) -> np.ndarray:
    """The SavedModel's `serving_default` answer per raw example: [n] (binary, regression) or [n, classes]."""
    serve = loaded.signatures[SERVING_SIGNATURE]
    key = spec.task_type.primary_output
    out = [serve(examples=tf.constant(examples[i:i + batch]))[key].numpy() for i in range(0, len(examples), batch)]
    return _squeeze(np.concatenate(out))


def input_order(model: bytes) -> List[str]:
    """Signature input names in the order of the model's input tensors (what metadata must follow)."""
    interpreter = interpreter_module().Interpreter(model_content=model)
    signature = next(iter(interpreter.get_signature_list()))
    by_index = {d["index"]: n for n, d in interpreter.get_signature_runner(signature).get_input_details().items()}
    return [by_index[d["index"]] for d in interpreter.get_input_details()]


def op_versions(model: bytes) -> Dict[str, int]:
    """Builtin op -> version in the flatbuffer: what an Edge TPU compiler must know to map the op."""
    from tensorflow_lite_support.metadata import schema_py_generated as tflite_schema

    names = {v: k for k, v in vars(tflite_schema.BuiltinOperator).items() if not k.startswith("_")}
    parsed = tflite_schema.Model.GetRootAsModel(model, 0)
    codes = [parsed.OperatorCodes(i) for i in range(parsed.OperatorCodesLength())]
    return {names[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())]: c.Version() for c in codes}


def weights_bytes(model: bytes) -> int:
    """Bytes of the tensors' constant data (weights, biases, clip bounds): what quantization shrinks.

    The rest of a .tflite is a fixed structure (tensors, ops, signatures, metadata) of a few KB, which
    dominates a tiny model: the penguins' float model holds 2.1 KB of weights in a 5.6 KB file.
    """
    from tensorflow_lite_support.metadata import schema_py_generated as tflite_schema

    parsed = tflite_schema.Model.GetRootAsModel(model, 0)
    graph = parsed.Subgraphs(0)
    used = {graph.Tensors(i).Buffer() for i in range(graph.TensorsLength())}
    return sum(parsed.Buffers(b).DataLength() for b in used if b < parsed.BuffersLength())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(base_directory: str, version: int, files: Dict[str, bytes]) -> str:
    """Publishes `files` as `<base>/<version>`, whole or not at all (contract.versions)."""

    def fill(staging: str) -> None:
        for name, data in files.items():
            with tf.io.gfile.GFile(os.path.join(staging, name), "wb") as f:
                f.write(data)

    return versions.publish_version(base_directory, version, fill)


def export(saved_model_dir: str, transform_graph_dir: str, transformed_train_pattern: Union[str, List[str]],
           raw_eval_pattern: str, spec: FeaturesConfig, settings: EdgeConfig, model_base_dir: str,
           model_name: str, source: Optional[Dict[str, Any]] = None) -> EdgeResult:
    """The whole edge export; returns what happened (pushed or why not)."""
    import tensorflow_transform as tft

    source = dict(source or {}, source_model=saved_model_dir)
    already = versions.latest_if_same_source(model_base_dir, MANIFEST, saved_model_dir)
    if already is not None:
        return EdgeResult(False, f"already exported as version {already}",
                          version_dir=os.path.join(model_base_dir, str(already)), task=spec.task)
    existing = versions.list_versions(model_base_dir)

    mapping_path = os.path.join(saved_model_dir, "assets", edge_signature.MAPPING_ASSET)
    if not tf.io.gfile.exists(mapping_path):
        raise FileNotFoundError(
            f"{mapping_path} is missing: the model was trained before the edge signature existed; "
            "retrain it (run the pipeline with the Trainer not cached) to export it for edge devices")
    with tf.io.gfile.GFile(mapping_path) as f:
        mapping = json.load(f)
    if mapping.get("format") != edge_signature.MAPPING_FORMAT:
        raise ValueError(f"{mapping_path} has format {mapping.get('format')}, this export reads format "
                         f"{edge_signature.MAPPING_FORMAT}; retrain the model (the Trainer not cached) to export it")
    loaded = custom_ops.load(saved_model_dir)

    feature_spec = tft.TFTransformOutput(transform_graph_dir).transformed_feature_spec()
    train_columns = transformed_inputs(_records(transformed_train_pattern, CALIBRATION_EXAMPLES), feature_spec,
                                       mapping)
    numeric = train_columns[0] if mapping["numeric_input"] else None
    mapping["clip"] = clip_ranges(numeric, mapping, settings.clip_quantile)
    scores = float_scores(loaded, train_columns, mapping)
    representative = calibration_rows(train_columns, mapping, settings.representative_examples, scores)
    signature = loaded.signatures[edge_signature.EDGE_SIGNATURE]
    models = convert(signature, mapping, representative, settings.io_type)
    record = model_export.read_family_record(saved_model_dir)

    version = versions.next_version(existing)
    info = {"name": model_name, "version": str(version), "author": "TFX pipeline edge export",
            "description": f"{model_name}: {spec.task}, full-integer ({settings.io_type} io); source model and "
                           "metrics in manifest.json",
            "output": spec.task_type.describe_output(spec.label_column, spec.class_names)}

    # The gate runs the exact files to be pushed through the device runtime, from raw features.
    eval_examples = _records(raw_eval_pattern, settings.gate_examples, spread=True)
    labels = labels_of(eval_examples, spec)
    reference = serving_predictions(loaded, eval_examples, spec)
    records = raw_records(eval_examples, spec)
    candidate = _gate(models, mapping, info, spec, settings, labels, reference, records)
    candidate.path = POST_TRAINING
    if _failed(candidate) and record.get("edge_core"):
        logging.info("Post-training int8 failed its gate (%s); retraining with quantization-aware training",
                     _failure_text(candidate, spec))
        qat_models = quantization_aware(saved_model_dir, record["edge_core"], mapping, train_columns, scores,
                                        representative, spec, settings)
        first = candidate
        candidate = _gate(qat_models, mapping, info, spec, settings, labels, reference, records)
        candidate.path, candidate.post_training_gate = QUANTIZATION_AWARE, first.result.gate

    result = candidate.result
    result.path, result.post_training_gate = candidate.path, candidate.post_training_gate
    if record.get("edge"):
        result.distillation = distillation(record, result.metrics, spec)
    failed = [c for c in result.gate if not c["value"] <= c["limit"]]
    if failed:
        tried = f" after {QUANTIZATION_AWARE}" if candidate.path == QUANTIZATION_AWARE else ""
        result.reason = (f"{_failure_text(candidate, spec)}{tried}; not pushed, {model_base_dir} keeps "
                         f"{'version ' + str(existing[-1]) if existing else 'no version'}")
        return result

    manifest = dict(candidate.manifest)
    manifest.update({
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **source,
        "io_type": settings.io_type,
        "quantization": candidate.path,
        "model_family": record.get("family", ""),
        **({"distillation": result.distillation} if result.distillation else {}),
        **({"post_training_gate": candidate.post_training_gate} if candidate.post_training_gate else {}),
        "metrics": result.metrics, "gate": result.gate, "auc_drop": result.auc_drop,
        "eval_examples": len(eval_examples), "representative_examples": len(representative[0]),
        "sizes": result.sizes, "clip": mapping["clip"], "edgetpu": result.edgetpu,
    })
    files = dict(candidate.files)
    files[MANIFEST] = json.dumps(manifest, indent=2).encode("utf-8")
    result.version_dir = publish(model_base_dir, version, files)
    result.pushed = True
    result.reason = f"{candidate.path}: " + "; ".join(
        f"int8 {c['measure']} {c['value']:.4f} <= {c['limit']:.4f}" for c in result.gate)
    return result


@dataclass
class _Candidate:
    """One int8 model and its float reference, packaged and gated."""

    files: Dict[str, bytes]
    manifest: Dict[str, Any]
    result: EdgeResult
    path: str = ""
    post_training_gate: List[Dict[str, Any]] = field(default_factory=list)


def _failed(candidate: _Candidate) -> bool:
    return any(not c["value"] <= c["limit"] for c in candidate.result.gate)


def _failure_text(candidate: _Candidate, spec: FeaturesConfig) -> str:
    metrics = candidate.result.metrics
    key, label = spec.task_type.headline.key, spec.task_type.headline.label
    return ("; ".join(f"int8 {c['measure']} {c['value']:.4f} exceeds {c['limit']:.4f} ({c['setting']})"
                      for c in candidate.result.gate if not c["value"] <= c["limit"]) +
            f" (int8 {label} {metrics['int8'][key]:.4f}, SavedModel {metrics['saved_model'][key]:.4f})")


def _gate(models: Dict[str, bytes], mapping, info: Dict[str, str], spec: FeaturesConfig, settings: EdgeConfig,
          labels: np.ndarray, reference: np.ndarray, records: List[Dict[str, Any]]) -> _Candidate:
    """Packages `models` with their metadata and manifest, and measures them against the SavedModel's answers."""
    task = spec.task_type
    order = input_order(models["int8"])
    files = {FILES["int8"]: metadata.populate(models["int8"], order, mapping, info),
             FILES["float"]: metadata.populate(models["float"], order, mapping,
                                               dict(info, description=info["description"] + " (float reference)")),
             FILES["mapping"]: json.dumps(mapping, separators=(",", ":")).encode("utf-8")}
    manifest = {"model_name": info["name"], "version": int(info["version"]), "task": spec.task,
                "classes": spec.class_names, "output": mapping["output"],
                **({"decision_threshold": task.decision_threshold} if task.decision_threshold is not None else {}),
                "files": {k: {"path": name, "sha256": _sha256(files[name]), "bytes": len(files[name])}
                          for k, name in FILES.items()}}
    metrics = {"saved_model": task.quality(labels, reference)}
    with tempfile.TemporaryDirectory(prefix="edge_gate_") as directory:
        for name, data in dict(files, **{MANIFEST: json.dumps(manifest).encode("utf-8")}).items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        for variant in ("float", "int8"):
            model = EdgeModel(directory, variant=variant)
            metrics[variant] = task.quality(labels, model.predict(records), reference)
        metrics["saved_model"].update(task.resolution_metrics(labels, model.at_output_resolution(reference)))
    readiness = edgetpu.check(model_content=files[FILES["int8"]])
    sizes = {k: manifest["files"][k]["bytes"] for k in ("float", "int8")}
    sizes.update({f"{k}_without_metadata": len(models[k]) for k in ("float", "int8")})
    sizes.update({f"{k}_weights": weights_bytes(models[k]) for k in ("float", "int8")})
    drop = metrics["saved_model"]["auc"] - metrics["int8"]["auc"] if "auc" in metrics["int8"] else float("nan")
    result = EdgeResult(False, "", task=spec.task, sizes=sizes, metrics=metrics,
                        gate=task.edge_gate(metrics, labels, settings), auc_drop=float(drop),
                        edgetpu=dict(readiness.to_dict(), op_versions=op_versions(models["int8"])))
    return _Candidate(files, manifest, result)


def distillation(record: Dict[str, Any], metrics: Dict[str, Dict[str, float]], spec: FeaturesConfig) -> Dict:
    """Teacher, student and the gap: the served model's headline metric on the eval split against the int8
    student's, and how the student followed the teacher on the training data (`model_family.json`)."""
    key = spec.task_type.headline.key
    edge = record["edge"]
    return {"teacher": {"family": edge["teacher"], key: metrics["saved_model"][key]},
            "student": {"model": edge["student"], "hyperparameters": edge["student_hyperparameters"],
                        f"int8_{key}": metrics["int8"][key], f"float_{key}": metrics["float"][key],
                        "distillation_examples": edge["distillation_examples"],
                        "fidelity_on_train": edge["fidelity_on_train"]},
            "gap": {key: metrics["saved_model"][key] - metrics["int8"][key]}}


def quantization_aware(saved_model_dir: str, core_asset: str, mapping, train_columns: List[np.ndarray],
                       targets: np.ndarray, representative: List[np.ndarray], spec: FeaturesConfig,
                       settings: EdgeConfig) -> Dict[str, bytes]:
    """The float and int8 TFLite of the model's Keras core after quantization-aware fine-tuning.

    The core learns to give its own float answers (`targets`, the `edge` signature's on the training rows)
    through fake-quantized Dense layers (TensorFlow Model Optimization's default 8-bit scheme), so its
    weights settle where 8-bit rounding costs least; the other layers (activations, the regression
    rescale) are quantized at conversion as before.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    with tempfile.TemporaryDirectory(prefix="edge_core_") as local:
        path = os.path.join(local, model_export.EDGE_CORE_ASSET)
        tf.io.gfile.copy(os.path.join(saved_model_dir, "assets", core_asset), path)
        core = keras.models.load_model(path, compile=False)
    quantize = tfmot.quantization.keras
    annotated = keras.models.clone_model(
        core, clone_function=lambda layer: quantize.quantize_annotate_layer(layer)
        if isinstance(layer, keras.layers.Dense) else layer.__class__.from_config(layer.get_config()))
    annotated.set_weights(core.get_weights())
    qat = quantize.quantize_apply(annotated)
    qat.compile(optimizer=keras.optimizers.Adam(QAT_LEARNING_RATE),
                loss=keras.losses.get(spec.task_type.soft_target_loss))
    low, high = _clip_vectors(mapping) if mapping["numeric_input"] else (None, None)
    vector = _dense_vector(train_columns, mapping, low, high)
    qat.fit(vector, targets.reshape(len(vector), -1), epochs=QAT_EPOCHS, batch_size=QAT_BATCH, shuffle=True,
            verbose=0)
    names, output = edge_signature.input_names(mapping), mapping["output"]["name"]

    def edge(**inputs):
        return {output: qat(tf.concat([inputs[n] for n in names], axis=1) if len(names) > 1 else inputs[names[0]],
                            training=False)}

    return convert(edge, mapping, representative, settings.io_type)


def _dense_vector(columns: List[np.ndarray], mapping, low, high) -> np.ndarray:
    """The edge inputs (numeric clipped to their ranges) packed as the core's dense vector."""
    parts = [np.clip(c, low, high) if i == 0 and mapping["numeric_input"] else c for i, c in enumerate(columns)]
    return np.concatenate(parts, axis=1).astype(np.float32)
