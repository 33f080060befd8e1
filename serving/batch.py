"""Batch scoring: a large file scored offline with pushed models, on Beam RunInference.

    python -m serving score [--input PATH] --out DIR [--model latest|stable|canary|VERSION|PATH ...]
                            [--id COLUMN ...] [--format parquet|csv|tfrecord] [--shards N]
                            [--strict] [--overwrite] [--runner direct|dataflow]

The third way the models serve, after online (`serving/server.py`) and edge
(`edge/`). One job:

1. checks its input before Beam starts: every TFRecord shard is read by the
   preflight (`validation/files.py`: corrupt gzip, records that are not
   tf.Example), every CSV header must hold the features the model needs;
2. validates the batch with the gate's logic (`validation/checks.py`): TFDV
   statistics of the batch, computed on Beam, against the schema's SERVING
   environment, and compared with the training statistics (the schema's
   skew_comparator thresholds). `--strict` stops a failing batch before it is
   scored; otherwise it is scored and the result is flagged;
3. scores every example with each chosen model in one pass: Beam's
   `RunInference` (apache_beam.ml.inference) with the `ScoringModelHandler`
   below, on batches of `serving.batch_scoring_batch_size` records as tf.data
   reads them, ids travelling with their batch (RunInference's own per-element
   batching cost 2.4x the time at 1.5 M examples: README, "Batch scoring");
4. writes ids + prediction columns as Parquet, CSV or tf.Example TFRecords,
   sharded, into a hidden temporary directory beside `--out` that is renamed
   into place at the end, so a failed job leaves no partial output visible.

The same job runs on the DirectRunner (beam.direct_running_mode in_memory or
multi_processing) and on Dataflow (`--runner dataflow`, the dataflow.* and gcp.*
settings, workers in the project's image).
"""

import csv
import io
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

# The serving contract, settings and errors (contract/ after the package refactor), in one block.
from contract.config import PipelineConfig, bundled_taxi_root, is_remote
from contract.serving import EXAMPLES_INPUT, PRIMARY_OUTPUT, SERVING_SIGNATURE
from contract.versions import list_versions
from validation.files import BadInputError

LATEST = "latest"
FORMATS = {"parquet": ".parquet", "csv": ".csv", "tfrecord": ".tfrecord.gz"}
RUNNERS = ("direct", "dataflow")
RESULT_FILE = "_SCORING.json"
SHARD_PREFIX = "predictions"
# Default ids when no --id is given: where each row came from, enough to join results back.
POSITION_IDS = ("source", "record")
# Exit status of a batch that --strict refused (0 done, 1 the job failed, 2 a setting or input is wrong).
EXIT_REFUSED = 3
PROGRESS_EVERY_SECONDS = 10.0


class ScoringError(ValueError):
    """A model, output or option choice that cannot be scored; the message says what to change."""


class ScoringJobError(RuntimeError):
    """The Beam job failed after it started; nothing was published."""


def _reason(error: BaseException) -> str:
    """The line of a Beam/TensorFlow failure that says what was wrong (its last non-empty one)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if not line.startswith(("[[", "File ", "Traceback"))),
                  type(error).__name__)
    return f"{type(error).__name__}: {reason}"


# --- Task-aware prediction columns ---------------------------------------------------------------
# The one place where a model's task decides its output columns: binary `probability` + `class`
# (0/1 at 0.5), multiclass `class` (the class name) + `score_<class>` per class, regression `value`.

def prediction_columns(task: str, classes: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
    """(name, "float" | "int" | "string") of one model's predictions, in output order."""
    if task == "regression":
        return (("value", "float"),)
    if task == "multiclass":
        return (("class", "string"),) + tuple((f"score_{name}", "float") for name in classes)
    return (("probability", "float"), ("class", "int"))


def convert_predictions(task: str, classes: Sequence[str], output: np.ndarray) -> Dict[str, np.ndarray]:
    """The model's primary output ([N, 1] or [N] for binary/regression, [N, classes]) as columns."""
    if task == "multiclass":
        scores = np.asarray(output, dtype=np.float64).reshape(len(output), len(classes))
        columns = {"class": np.asarray(classes, dtype=object)[scores.argmax(axis=1)]}
        columns.update({f"score_{name}": scores[:, i] for i, name in enumerate(classes)})
        return columns
    values = np.asarray(output).reshape(-1).astype(np.float64)
    if task == "regression":
        return {"value": values}
    return {"probability": values, "class": (values > 0.5).astype(np.int64)}


# --- Which models ----------------------------------------------------------------------------------

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
            for c in choices for name, kind in prediction_columns(c.task, c.classes)]


# --- The RunInference model handler ---------------------------------------------------------------

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

    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[SERVING_SIGNATURE]
    outputs = list(signature.structured_outputs)
    primary = PRIMARY_OUTPUT[task]
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
class ExampleBatch:
    """One element of the job: up to `serving.batch_scoring_batch_size` serialized tf.Examples and their ids."""

    ids: Dict[str, list]  # id column -> one value per example
    examples: List[bytes]

    def __len__(self) -> int:
        """RunInference counts a prebatched element's examples with len()."""
        return len(self.examples)


class ScoringModelHandler(ModelHandler[ExampleBatch, Dict[str, list], LoadedModels]):
    """An ExampleBatch in, its columns out (ids, then every chosen model's predictions).

    The SavedModel's `serving_default` signature parses the raw examples and applies the
    Transform graph itself, so batch scoring prepares features exactly as online serving
    does. (Beam's TFModelHandlerTensor would load the model with keras.load_model and call
    it on dense tensors, outside that signature.) RunInference runs it prebatched
    (`with_no_batching`): the readers hand over the record batches tf.data reads.
    """

    def __init__(self, choices: Sequence[ModelChoice], progress_dir: str = ""):
        super().__init__()
        self.choices = list(choices)
        self.progress_dir = progress_dir
        self._progress: Optional[_Progress] = None

    def load_model(self) -> LoadedModels:
        loaders = {"saved_model": _saved_model_scorer, "edge": _edge_scorer}
        return LoadedModels((c.name, loaders[c.kind](c.path, c.task)) for c in self.choices)

    def run_inference(self, batch: ExampleBatch, model: LoadedModels,
                      inference_args: Optional[Dict[str, Any]] = None) -> List[Dict[str, list]]:
        columns = dict(batch.ids)
        for choice in self.choices:
            output = model[choice.name](batch.examples)
            for name, values in convert_predictions(choice.task, choice.classes, output).items():
                columns[_column(choice.name, name, len(self.choices))] = values.tolist()
        if self._progress is None:
            self._progress = _Progress(self.progress_dir)
        self._progress.add(len(batch.examples))
        return [columns]

    def get_num_bytes(self, batch: ExampleBatch) -> int:
        return sum(len(b) for b in batch.examples)

    def get_metrics_namespace(self) -> str:
        return "BatchScoring"


# --- Reading the input -------------------------------------------------------------------------

def input_files(location: str) -> List[str]:
    """A file, a directory (every file below it) or a glob, local or remote."""
    import tensorflow as tf

    if tf.io.gfile.isdir(location):
        found = sorted(os.path.join(root, name) for root, _, names in tf.io.gfile.walk(location)
                       for name in names if not name.startswith((".", "_")))
    elif any(ch in location for ch in "*?["):
        found = sorted(tf.io.gfile.glob(location))
    else:
        if not tf.io.gfile.exists(location):
            raise BadInputError(f"--input {location} does not exist")
        found = [location]
    if not found:
        raise BadInputError(f"--input {location} matches no file; pass a file, a directory or a glob of "
                            "TFRecord (gzip or plain) or CSV files")
    kinds = {_is_csv(f) for f in found}
    if len(kinds) > 1:
        raise BadInputError(f"--input {location} mixes CSV and TFRecord files; score them in separate jobs")
    return found


def _is_csv(path: str) -> bool:
    return path.endswith((".csv", ".csv.gz"))


def _tfrecord_compression(path: str) -> str:
    if is_remote(path):
        return "GZIP" if path.endswith(".gz") else ""
    with open(path, "rb") as f:
        return "GZIP" if f.read(2) == b"\x1f\x8b" else ""


def preflight(files: Sequence[str], needed: Sequence[str], id_columns: Sequence[str]) -> None:
    """The checks that need no Beam: shards readable as tf.Example, CSV headers complete."""
    from validation.files import HEAD_CHECK_BYTES, check_files

    if _is_csv(files[0]):
        for path in files:
            header = _csv_header(path)
            missing = [c for c in list(needed) + list(id_columns) if c not in header]
            if missing:
                raise BadInputError(f"{path}: the CSV header has no column {', '.join(missing)}, which the "
                                    f"{'model needs' if set(missing) & set(needed) else 'job passes through'}; "
                                    f"header: {', '.join(header)}")
        return
    # Each shard's first megabyte (all of a small one): a whole read of a large batch would cost a pass in
    # one Python process; a fault further in fails the Beam job, which publishes nothing.
    check_files([f for f in files if not is_remote(f)], full_check_bytes=HEAD_CHECK_BYTES)


def _csv_header(path: str) -> List[str]:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "r") as f:
        return next(csv.reader([f.readline()]), [])


def _id_value(feature, type_name: str):
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if not values:
        return None
    value = values[0]
    if type_name == "string":
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return value


class ReadTFRecordShard(beam.DoFn):
    """ExampleBatches of one shard, in file order.

    A shard is read by one worker (shard your input for parallelism): that is what gives every
    row its position (`source`, `record`) for joining results back.
    """

    def __init__(self, id_columns: Sequence[str], id_types: Dict[str, str], batch_size: int):
        self.id_columns, self.id_types, self.batch_size = list(id_columns), dict(id_types), batch_size

    def process(self, path: str) -> Iterator[ExampleBatch]:
        import tensorflow as tf

        start = 0
        dataset = tf.data.TFRecordDataset(path, compression_type=_tfrecord_compression(path))
        for records in dataset.batch(self.batch_size).as_numpy_iterator():
            examples = records.tolist()
            if self.id_columns:
                parsed = [tf.train.Example.FromString(r).features.feature for r in examples]
                ids = {c: [_id_value(f[c], self.id_types[c]) if c in f else None for f in parsed]
                       for c in self.id_columns}
            else:
                ids = {"source": [path] * len(examples), "record": list(range(start, start + len(examples)))}
            start += len(examples)
            yield ExampleBatch(ids, examples)


class ReadCsvFile(beam.DoFn):
    """ExampleBatches of CSV rows; values typed by the schema as the online client types them."""

    def __init__(self, schema_file: str, id_columns: Sequence[str], id_types: Dict[str, str], batch_size: int):
        self.schema_file, self.id_columns, self.id_types = schema_file, list(id_columns), dict(id_types)
        self.batch_size = batch_size

    def setup(self):
        from serving.client import feature_types, load_schema

        self._types = feature_types(load_schema(self.schema_file))

    def process(self, path: str) -> Iterator[ExampleBatch]:
        import tensorflow as tf

        from serving.client import to_example

        names = self.id_columns or list(POSITION_IDS)
        batch = ExampleBatch({c: [] for c in names}, [])
        with tf.io.gfile.GFile(path, "r") as f:
            for number, row in enumerate(csv.DictReader(f), start=2):
                features = {k: v for k, v in row.items() if k in self._types}
                batch.examples.append(to_example(features, self._types, f"{path} line {number}").SerializeToString())
                if self.id_columns:
                    for c in self.id_columns:
                        batch.ids[c].append(_typed_csv_id(row.get(c), self.id_types[c]))
                else:
                    batch.ids["source"].append(path)
                    batch.ids["record"].append(number - 2)
                if len(batch.examples) == self.batch_size:
                    yield batch
                    batch = ExampleBatch({c: [] for c in names}, [])
        if batch.examples:
            yield batch


def _typed_csv_id(value: Optional[str], type_name: str):
    if value in (None, ""):
        return None
    return int(float(value)) if type_name == "int" else float(value) if type_name == "float" else value


def id_types(schema_file: str, id_columns: Sequence[str]) -> Dict[str, str]:
    """int/float/string per id column: from the schema when it is a feature, else string."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    from serving.client import feature_types, load_schema

    types = feature_types(load_schema(schema_file))
    names = {schema_pb2.INT: "int", schema_pb2.FLOAT: "float"}
    return {c: names.get(types.get(c), "string") for c in id_columns}


def read_examples(pipeline: beam.Pipeline, files: Sequence[str], schema_file: str, id_columns: Sequence[str],
                  types: Dict[str, str], batch_size: int) -> beam.PCollection:
    """ExampleBatches of every input file."""
    reader = (ReadCsvFile(schema_file, id_columns, types, batch_size) if _is_csv(files[0])
              else ReadTFRecordShard(id_columns, types, batch_size))
    return (pipeline
            | "ListInput" >> beam.Create(list(files))
            # Spreads the shards over the workers before they are read.
            | "SpreadShards" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(reader))


# --- Writing the output ----------------------------------------------------------------------

def _csv_lines(columns: Dict[str, list], names: Sequence[str]) -> str:
    """One batch as CSV lines (WriteToText adds the last newline)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        ["" if v is None else v for v in row] for row in zip(*(columns[n] for n in names)))
    return buffer.getvalue()[:-1]


def _examples_of(columns: Dict[str, list], kinds: Dict[str, str]) -> Iterator[bytes]:
    """One batch as serialized tf.Examples, one per row."""
    import tensorflow as tf

    names = list(kinds)
    for row in zip(*(columns[n] for n in names)):
        example = tf.train.Example()
        for name, value in zip(names, row):
            if value is None:
                continue
            feature = example.features.feature[name]
            if kinds[name] == "int":
                feature.int64_list.value.append(int(value))
            elif kinds[name] == "float":
                feature.float_list.value.append(float(value))
            else:
                feature.bytes_list.value.append(str(value).encode())
        yield example.SerializeToString()


def _arrow_table(columns: Dict[str, list], schema):
    import pyarrow as pa

    return pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)


def write_rows(batches: beam.PCollection, output_format: str, prefix: str, columns: List[Tuple[str, str]],
               shards: int):
    """Writes scored batches (column -> values) as sharded Parquet, CSV or tf.Example TFRecord files."""
    suffix = FORMATS[output_format]
    names = [n for n, _ in columns]
    if output_format == "parquet":
        import pyarrow as pa

        arrow = {"int": pa.int64(), "float": pa.float64(), "string": pa.string()}
        schema = pa.schema([(n, arrow[k]) for n, k in columns])
        return (batches | "ToArrow" >> beam.Map(_arrow_table, schema)
                | "WriteParquet" >> beam.io.WriteToParquetBatched(prefix, schema, file_name_suffix=suffix,
                                                                   num_shards=shards))
    if output_format == "csv":
        return (batches | "ToCsv" >> beam.Map(_csv_lines, names)
                | "WriteCsv" >> beam.io.WriteToText(prefix, file_name_suffix=suffix, num_shards=shards,
                                                    header=",".join(names)))
    return (batches | "ToExamples" >> beam.FlatMap(_examples_of, dict(columns))
            | "WriteTFRecord" >> beam.io.WriteToTFRecord(prefix, file_name_suffix=suffix, num_shards=shards))


# --- Checking the batch ------------------------------------------------------------------------

class _DecodeExamples(beam.DoFn):
    def setup(self):
        from tfx_bsl.coders import example_coder

        self._decoder = example_coder.ExamplesToRecordBatchDecoder()

    def process(self, batch: ExampleBatch):
        yield self._decoder.DecodeBatch(batch.examples)


def add_statistics(examples: beam.PCollection, stats_path: str) -> None:
    """TFDV statistics of the ExampleBatches, on Beam (so on Dataflow too), written to `stats_path`."""
    import tensorflow_data_validation as tfdv

    _ = (examples
         | "Decode" >> beam.ParDo(_DecodeExamples())
         | "Statistics" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
         | "WriteStatistics" >> tfdv.WriteStatisticsToBinaryFile(stats_path))


def training_statistics(config: PipelineConfig, path: str = ""):
    """The training split's statistics: `path` if given, else the newest StatisticsGen output in MLMD.

    Returns (statistics or None, where they came from).
    """
    import tensorflow_data_validation as tfdv

    if path:
        return tfdv.load_stats_binary(path), path
    if is_remote(config.metadata_path) or not os.path.exists(config.metadata_path):
        return None, f"no ML Metadata store at {config.metadata_path}"
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.metadata import open_metadata

    store = open_metadata(config.metadata_path)
    candidates = [a for t in store.get_artifact_types() if t.name.endswith("ExampleStatistics")
                  for a in store.get_artifacts_by_type(t.name)
                  if a.state == metadata_store_pb2.Artifact.LIVE]
    for artifact in sorted(candidates, key=lambda a: a.create_time_since_epoch, reverse=True):
        stats_file = os.path.join(artifact.uri, "Split-train", "FeatureStats.pb")
        if os.path.exists(stats_file):
            return tfdv.load_stats_binary(stats_file), stats_file
    return None, f"no training statistics in {config.metadata_path}"


def judge_batch(config: PipelineConfig, batch_stats, training, training_source: str, title: str):
    """The gate's report for a batch: SERVING-environment anomalies, then drift against training data."""
    from validation import checks
    from validation.report import GatePolicy, Report

    policy = GatePolicy.from_config(config.validation)
    schema = checks.load_schema(config.schema_file)
    report = Report(title)
    report.findings = checks.schema_findings(batch_stats, schema, "batch", policy, checks.SERVING)
    report.notes.append(f"{batch_stats.datasets[0].num_examples} examples")
    if training is None:
        report.notes.append(f"drift vs training statistics not checked: {training_source}")
        return report
    # TFDV's training/serving skew comparison: the batch is the serving side.
    findings, distances = checks.compare(training, batch_stats, schema, "skew", policy)
    report.findings += findings
    report.distances = distances
    report.comparisons["skew"] = f"training statistics {training_source} vs this batch"
    return report


# --- The job -----------------------------------------------------------------------------------

@dataclass
class ScoreJob:
    input: str  # "" = the bundled taxi data's unlabelled split
    out: str
    models: List[str] = field(default_factory=list)
    id_columns: List[str] = field(default_factory=list)
    output_format: str = "parquet"
    shards: int = 0  # 0: the runner decides
    strict: bool = False
    overwrite: bool = False
    runner: str = "direct"
    report_dir: str = ""
    training_stats: str = ""


@dataclass
class ScoreResult:
    status: str  # scored | refused
    examples: int
    out: str
    report: str
    flagged: bool
    models: List[Dict[str, Any]]
    columns: List[str]
    files: List[str]
    seconds: Dict[str, float]


def pipeline_options(config: PipelineConfig, runner: str, job_name: str) -> PipelineOptions:
    """DirectRunner in the configured mode, or Dataflow with the project's settings and image."""
    if runner not in RUNNERS:
        raise ScoringError(f"--runner {runner!r} is not one of {', '.join(RUNNERS)}")
    if runner == "dataflow":
        from pipeline.dataflow import dataflow_beam_args

        return PipelineOptions(dataflow_beam_args(config) + [f"--job_name={job_name}"])
    from pipeline.pipeline import beam_pipeline_args

    return PipelineOptions(["--runner=DirectRunner"] + beam_pipeline_args(config))


def _check_locations(job: ScoreJob) -> None:
    if job.output_format not in FORMATS:
        raise ScoringError(f"--format {job.output_format!r} is not one of {', '.join(FORMATS)}")
    if job.shards < 0:
        raise ScoringError("--shards must be 0 (the runner decides) or a positive number")
    if job.runner == "dataflow":
        local = [f"--{name} {value}" for name, value in (("input", job.input), ("out", job.out))
                 if not is_remote(value)]
        if local:
            raise ScoringError(f"--runner dataflow: {' and '.join(local)} is not on gs://; Dataflow workers "
                               "cannot read or write this machine's disk, so copy the batch to Cloud Storage")
    import tensorflow as tf

    if tf.io.gfile.exists(job.out) and tf.io.gfile.listdir(job.out) and not job.overwrite:
        raise ScoringError(f"--out {job.out} already holds results ({len(tf.io.gfile.listdir(job.out))} "
                           "entries); pass --overwrite to replace them, or choose another directory")


def _staging_dir(out: str) -> str:
    parent, name = os.path.split(out.rstrip("/"))
    return os.path.join(parent, f".{name}.incomplete-{os.getpid()}-{int(time.time())}")


def _publish(staging: str, out: str) -> None:
    """Moves the finished results into place: one rename locally, a rename per file remotely."""
    import tensorflow as tf

    if tf.io.gfile.exists(out):
        tf.io.gfile.rmtree(out)
    if not is_remote(out):
        os.replace(staging, out)
        return
    for root, _, names in tf.io.gfile.walk(staging):
        for name in names:
            source = os.path.join(root, name)
            target = os.path.join(out, os.path.relpath(source, staging))
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.rename(source, target, overwrite=True)
    tf.io.gfile.rmtree(staging)


def _progress_printer(directory: str, total: int, stop: threading.Event, out) -> threading.Thread:
    started = time.monotonic()

    def scored() -> int:
        count = 0
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            if not name.endswith(".tmp"):
                try:
                    with open(os.path.join(directory, name)) as f:
                        count += int(f.read() or 0)
                except (OSError, ValueError):
                    pass
        return count

    def loop():
        while not stop.wait(PROGRESS_EVERY_SECONDS):
            count, elapsed = scored(), time.monotonic() - started
            rate = count / elapsed if elapsed else 0.0
            eta = f", ETA {max(total - count, 0) / rate:.0f}s" if rate and total else ""
            out.write(f"score: {count:,} / {total:,} examples scored ({rate:,.0f}/s{eta})\n")
            out.flush()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def score(config: PipelineConfig, job: ScoreJob, out=None) -> ScoreResult:
    """Checks, validates and scores one batch; raises ScoringError/BadInputError on bad input or choices."""
    import sys

    import tensorflow as tf
    import tensorflow_data_validation as tfdv

    out = out or sys.stdout
    seconds: Dict[str, float] = {}
    started = time.monotonic()
    if not job.input:
        job.input = os.path.join(bundled_taxi_root(), "unlabelled")
    _check_locations(job)
    choices = resolve_models(job.models, config)
    files = input_files(job.input)
    needed = config.features.raw_input_features
    preflight(files, needed, job.id_columns)
    ids = list(job.id_columns) or list(POSITION_IDS)
    types = id_types(config.schema_file, job.id_columns) if job.id_columns else {"source": "string",
                                                                                  "record": "int"}
    columns = [(c, types[c]) for c in ids] + column_names(choices)
    if len({n for n, _ in columns}) != len(columns):
        raise ScoringError(f"--id {', '.join(job.id_columns)}: an id column has the name of a prediction column")
    report_dir = job.report_dir or os.path.join(config.output_dir, "batch_reports",
                                                f"score-{time.strftime('%Y%m%d-%H%M%S')}")
    tf.io.gfile.makedirs(report_dir)
    job_name = f"score-{config.model_name}-{time.strftime('%Y%m%d-%H%M%S')}".lower().replace("_", "-")
    batch_size = config.serving.batch_scoring_batch_size
    seconds["preflight"] = time.monotonic() - started

    # 1. Statistics of the batch, then the gate's verdict, before anything is scored.
    phase = time.monotonic()
    stats_path = os.path.join(report_dir, "batch_stats.pb")
    try:
        with beam.Pipeline(options=pipeline_options(config, job.runner, job_name + "-check")) as p:
            add_statistics(read_examples(p, files, config.schema_file, job.id_columns, types, batch_size),
                           stats_path)
    except ValueError as error:  # a reader's one-line verdict on a row (e.g. a CSV value of the wrong type)
        raise BadInputError(str(error).strip().splitlines()[0]) from None
    except Exception as error:  # noqa: BLE001 - Beam re-raises worker errors of any type
        raise ScoringJobError(f"the validation job failed ({_reason(error)}); nothing was scored") from error
    batch_stats = tfdv.load_stats_binary(stats_path)
    training, training_source = training_statistics(config, job.training_stats)
    report = judge_batch(config, batch_stats, training, training_source, f"score {job.input} (SERVING)")
    report_path = report.write(report_dir)
    total = batch_stats.datasets[0].num_examples
    seconds["check"] = time.monotonic() - phase
    out.write(f"score: checked {total:,} examples in {len(files)} file(s): "
              f"{'PASSED' if report.passed else f'FAILED ({len(report.failures)} problem(s))'}; "
              f"report {report_path}\n")
    described = [dict(asdict(c), columns=[n for n, _ in column_names([c])]) for c in choices]
    if not report.passed and job.strict:
        out.write(report.to_text() + "\n")
        return ScoreResult("refused", total, "", report_path, True, described, [], [], seconds)

    # 2. Scoring, into a hidden directory that becomes --out only when the job succeeded.
    phase = time.monotonic()
    staging = _staging_dir(job.out)
    progress_dir = "" if job.runner == "dataflow" else tempfile.mkdtemp(prefix="score-progress-")
    stop = threading.Event()
    printer = _progress_printer(progress_dir, total, stop, out) if progress_dir else None
    try:
        handler = ScoringModelHandler(choices, progress_dir).with_no_batching()
        try:
            with beam.Pipeline(options=pipeline_options(config, job.runner, job_name)) as p:
                scored = (read_examples(p, files, config.schema_file, job.id_columns, types, batch_size)
                          | "Score" >> RunInference(handler))
                write_rows(scored, job.output_format, os.path.join(staging, SHARD_PREFIX), columns, job.shards)
        except Exception as error:  # noqa: BLE001 - Beam re-raises worker errors of any type
            raise ScoringJobError(f"the scoring job failed ({_reason(error)}); nothing was written to "
                                  f"{job.out}. The validation report may say why: {report_path}") from error
        written = sorted(tf.io.gfile.listdir(staging))
        result = ScoreResult("scored", total, job.out, report_path, not report.passed, described,
                             [n for n, _ in columns], written, seconds)
        seconds["score"] = time.monotonic() - phase
        seconds["total"] = time.monotonic() - started
        with tf.io.gfile.GFile(os.path.join(staging, RESULT_FILE), "w") as f:
            f.write(json.dumps(asdict(result), indent=2) + "\n")
        _publish(staging, job.out)
    finally:
        stop.set()
        if printer:
            printer.join()
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
    flag = f"; FLAGGED: the batch failed validation, see {report_path}" if result.flagged else ""
    out.write(f"score: wrote {total:,} rows ({', '.join(result.columns)}) to {job.out} as "
              f"{len(written)} {job.output_format} file(s) in {seconds['total']:.1f}s{flag}\n")
    return result

