"""Which models score a batch, and how: model choices, scorers and the RunInference model handler.

A `--model` is a version label (`stable`, `canary`), `latest`, a version number or a
path to a SavedModel or edge version directory; each becomes a `ModelChoice` whose
task (from the feature spec, or an edge manifest's own) decides its prediction
columns.
"""

import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from batch import quality
from batch.inputs import ExampleBatch
from contract.config import FeaturesConfig, PipelineConfig, is_remote
from contract import tasks
from contract.serving import EXAMPLES_INPUT, SERVING_SIGNATURE
from contract.versions import list_versions

LATEST = "latest"

class ScoringError(ValueError):
    """A model, output or option choice that cannot be scored; the message says what to change."""


@dataclass(frozen=True)
class ModelChoice:
    """One model to score with: `name` prefixes its columns when several models score together."""

    asked: str  # what --model said
    name: str
    path: str
    kind: str  # saved_model | edge
    version: Optional[int] = None
    task: str = "binary"  # features.task of the model (an edge model's manifest says its own)
    classes: Tuple[str, ...] = ()


def _labels(config: PipelineConfig) -> Dict[str, int]:
    from serving import model_config

    if not os.path.exists(config.models_config_path) and not is_remote(config.models_config_path):
        return {}
    entry = model_config.model_entry(model_config.read(config.models_config_path), config.model_name)
    return dict(entry.version_labels)


def resolve_model(asked: str, config: PipelineConfig) -> ModelChoice:
    """`latest`, a pushed version number, a label from models.config, or a path (SavedModel or edge version)."""
    base = config.model_serving_dir
    if os.sep in asked or asked.startswith(".") or os.path.exists(asked) or is_remote(asked):
        path = asked.rstrip("/")
        import tensorflow as tf

        if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            return ModelChoice(asked, os.path.basename(path) or "model", path, "saved_model")
        from edge.runtime import MANIFEST, resolve_version_dir

        try:
            edge_dir = resolve_version_dir(path)
        except (FileNotFoundError, ValueError):
            edge_dir = ""
        if edge_dir and os.path.exists(os.path.join(edge_dir, MANIFEST)):
            return ModelChoice(asked, "edge", edge_dir, "edge", int(os.path.basename(edge_dir)))
        raise ScoringError(f"--model {asked}: no SavedModel (saved_model.pb) and no edge model "
                           f"({MANIFEST}) there; pass a pushed version directory")
    versions = list_versions(base)
    if asked == LATEST:
        if not versions:
            raise ScoringError(f"--model latest: no version is pushed under {base}; run the pipeline first")
        return ModelChoice(asked, LATEST, os.path.join(base, str(versions[-1])), "saved_model", versions[-1])
    if asked.isdigit():
        if int(asked) not in versions:
            raise ScoringError(f"--model {asked}: version {asked} is not pushed under {base} "
                               f"(pushed versions: {versions or 'none'})")
        return ModelChoice(asked, f"v{asked}", os.path.join(base, asked), "saved_model", int(asked))
    labels = _labels(config)
    if asked not in labels:
        known = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none (models.config follows latest)"
        raise ScoringError(f"--model {asked}: no version has the label {asked!r} in {config.models_config_path} "
                           f"(labels: {known}); use a label, a version number, {LATEST} or a model path")
    version = labels[asked]
    if version not in versions:
        raise ScoringError(f"--model {asked}: label {asked} points at version {version}, which is not under "
                           f"{base} (pushed versions: {versions})")
    return ModelChoice(asked, asked, os.path.join(base, str(version)), "saved_model", version)


def resolve_models(asked: Sequence[str], config: PipelineConfig) -> List[ModelChoice]:
    choices = [_with_task(resolve_model(a, config), config) for a in (asked or [LATEST])]
    names = [c.name for c in choices]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScoringError(f"--model: {', '.join(duplicates)} given twice; each model scores once per job")
    return choices


def _with_task(choice: ModelChoice, config: PipelineConfig) -> ModelChoice:
    """The task and class names of the model: a SavedModel's from the feature spec it was trained on,
    an edge model's from its manifest."""
    if choice.kind == "edge":
        from edge.runtime import read_manifest

        manifest = read_manifest(choice.path)
        return replace(choice, task=manifest["task"], classes=tuple(manifest.get("classes") or ()))
    return replace(choice, task=config.features.task, classes=tuple(config.features.class_names))


def _column(model: str, column: str, models: int) -> str:
    """A prediction column's name: plain for one model, `<model>_<column>` for several."""
    return column if models == 1 else f"{model}_{column}"


def column_names(choices: Sequence[ModelChoice]) -> List[Tuple[str, str]]:
    """Prediction columns (name, type) of the chosen models, in output order."""
    return [(_column(c.name, name, len(choices)), kind)
            for c in choices for name, kind in tasks.task(c.task).prediction_columns(c.classes)]


class _Progress:
    """Examples scored by this process, written to `<directory>/<pid>` at most once a second.

    The launcher sums the files for its progress line; in_memory and multi_processing workers
    are processes of this machine, so a file per process works for both. "" disables it.
    """

    def __init__(self, directory: str):
        self.directory, self.count, self.written_at = directory, 0, 0.0

    def add(self, count: int) -> None:
        if not self.directory:
            return
        self.count += count
        now = time.monotonic()
        if now - self.written_at >= 1.0:
            self.flush()
            self.written_at = now

    def flush(self) -> None:
        if self.directory and os.path.isdir(self.directory):
            path = os.path.join(self.directory, f"{os.getpid()}-{id(self)}")
            with open(path + ".tmp", "w") as f:
                f.write(str(self.count))
            os.replace(path + ".tmp", path)


def _saved_model_scorer(path: str, task: str) -> Callable[[List[bytes]], np.ndarray]:
    import tensorflow as tf

    from models.trainer import custom_ops

    loaded = custom_ops.load(path)
    signature = loaded.signatures[SERVING_SIGNATURE]
    outputs = list(signature.structured_outputs)
    primary = tasks.task(task).primary_output
    if primary not in outputs:
        raise ScoringError(f"{path}: {SERVING_SIGNATURE} has outputs {outputs}, not {primary!r} of a {task} "
                           "model; score it with the config of the pipeline that trained it (features.task)")

    def score(serialized: List[bytes]) -> np.ndarray:
        result = signature(**{EXAMPLES_INPUT: tf.constant(serialized, dtype=tf.string)})
        return result[primary].numpy()

    # Keeps the loaded object (its variables) alive as long as the signature is used.
    score.loaded = loaded
    return score


def _edge_scorer(path: str, task: str) -> Callable[[List[bytes]], np.ndarray]:
    """The int8 TFLite model through the device runtime (edge/runtime.py), for a parity check."""
    import tensorflow as tf

    from edge.runtime import EdgeModel

    model = EdgeModel(path)

    def record(serialized: bytes) -> Dict[str, Any]:
        values = {}
        for name, feature in tf.train.Example.FromString(serialized).features.feature.items():
            kind = feature.WhichOneof("kind")
            got = list(getattr(feature, kind).value) if kind else []
            if got:
                values[name] = got[0].decode() if kind == "bytes_list" else got[0]
        return values

    def score(serialized: List[bytes]) -> np.ndarray:
        return model.predict(record(s) for s in serialized)

    score.loaded = model
    return score


class LoadedModels(dict):
    """Model name -> scorer; a dict subclass because RunInference shares models through weak references."""


@dataclass

class ScoringModelHandler(ModelHandler[ExampleBatch, Dict[str, list], LoadedModels]):
    """An ExampleBatch in, its columns out (ids, then every chosen model's predictions).

    The SavedModel's `serving_default` signature parses the raw examples and applies the
    Transform graph itself, so batch scoring prepares features exactly as online serving
    does. (Beam's TFModelHandlerTensor would load the model with keras.load_model and call
    it on dense tensors, outside that signature.) RunInference runs it prebatched
    (`with_no_batching`): the readers hand over the record batches tf.data reads.
    """

    def __init__(self, choices: Sequence[ModelChoice], progress_dir: str = "",
                 label_spec: Optional[FeaturesConfig] = None):
        """`label_spec`: a labelled batch's feature spec; each row then also carries the labels and the models'
        outputs for `batch.quality` (never written)."""
        super().__init__()
        self.choices = list(choices)
        self.progress_dir = progress_dir
        self.label_spec = label_spec
        self._progress: Optional[_Progress] = None

    def load_model(self) -> LoadedModels:
        loaders = {"saved_model": _saved_model_scorer, "edge": _edge_scorer}
        return LoadedModels((c.name, loaders[c.kind](c.path, c.task)) for c in self.choices)

    def run_inference(self, batch: ExampleBatch, model: LoadedModels,
                      inference_args: Optional[Dict[str, Any]] = None) -> List[Dict[str, list]]:
        columns = dict(batch.ids)
        outputs = {}
        for choice in self.choices:
            output = outputs[choice.name] = model[choice.name](batch.examples)
            for name, values in tasks.task(choice.task).prediction_values(choice.classes, output).items():
                columns[_column(choice.name, name, len(self.choices))] = values.tolist()
        if self.label_spec is not None:
            from edge.export import labels_of

            columns[quality.LABELS] = labels_of(batch.examples, self.label_spec).tolist()
            columns[quality.OUTPUTS] = {name: np.asarray(output).tolist() for name, output in outputs.items()}
        if self._progress is None:
            self._progress = _Progress(self.progress_dir)
        self._progress.add(len(batch.examples))
        return [columns]

    def get_num_bytes(self, batch: ExampleBatch) -> int:
        return sum(len(b) for b in batch.examples)

    def get_metrics_namespace(self) -> str:
        return "BatchScoring"
