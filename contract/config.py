"""Pipeline configuration: one dataclass tree, loaded from YAML, overridable on the command line.

Defaults run the bundled Chicago taxi data with no file at all. A YAML file
(`--config FILE`) overrides any subset; `--set section.key=value` overrides a
single value last. Every runner, component, module file, test and benchmark
uses these classes: a component receives its section as a dict (custom_config
or an exec property) and rebuilds it with `section_from_dict`, so each setting
has exactly one definition and one default. Importing this module costs no
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Type, TypeVar

import yaml

from contract import tasks
from contract.errors import ConfigError

# The directory holding the project's packages: the checkout with `pip install -e .`, site-packages
# (or the image's /pipeline) otherwise. schemas/ is installed beside contract/.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SCHEMA = os.path.join(REPO_ROOT, "schemas", "taxi", "schema.pbtxt")
STRATEGIES = ("default", "mirrored", "parameter_server")
SEVERITIES = ("WARNING", "ERROR")


def is_remote(path: str) -> bool:
    """gs://, s3:// and the like: read by TFX's filesystem layer, never made absolute locally."""
    return "://" in path


@dataclass
class DataConfig:
    """Where the data comes from, in which file format, and how it splits into train and eval.

    `input_base` empty means the Chicago taxi TFRecords shipped inside the tfx
    wheel. With `train_pattern`/`eval_pattern` set, each pattern (relative to
    `input_base`) is one split. With only `pattern` set, one set of files is
    hash-split by `hash_buckets` (e.g. [4, 1] for 80/20).
    """

    input_base: str = ""
    # tfrecord (tf.Example, gzip or plain) | parquet | csv (with a header row): read where it lives by TFX's
    # ExampleGen for the format (formats/, docs/data-formats.md), no conversion job.
    format: str = "tfrecord"
    train_pattern: str = "Split-train/*"  # files of the train split, relative to input_base
    eval_pattern: str = "Split-eval/*"  # files of the eval split, relative to input_base
    pattern: str = ""
    hash_buckets: List[int] = field(default_factory=lambda: [4, 1])
    # With `{SPAN}` (or the date specs `{YYYY}-{MM}-{DD}`, e.g. Hive-style `date={YYYY}-{MM}-{DD}/*`) in the
    # patterns each run ingests the latest span; Transform, Tuner and Trainer then learn from the
    # `span_window` latest spans (1 = the latest only); spans of the window on disk that no run ingested yet
    # are ingested first. The gate, the Evaluator and the edge export's accuracy check look at the latest span.
    span_window: int = 1

    @property
    def spanned_pattern(self) -> str:
        """The train (or hash-split) pattern when it names spans by `{SPAN}` or a date, else ""."""
        pattern = self.pattern or self.train_pattern
        return pattern if has_span_spec(pattern) else ""


# ExampleGen's span specs: a span number, or a date whose span is its day number since 1970-01-01.
SPAN_SPEC = "{SPAN}"
DATE_SPECS = ("{YYYY}", "{MM}", "{DD}")
FORMATS = ("tfrecord", "parquet", "csv")


def has_span_spec(pattern: str) -> bool:
    """True when a file pattern names spans: `{SPAN}` (or `{SPAN:width}`) or the date specs."""
    return "{SPAN" in pattern or all(spec in pattern for spec in DATE_SPECS)


TASKS = tasks.TASKS
VOCABULARIES = ("approximate", "exact")
TEXT_WEIGHTINGS = ("tfidf", "multi_hot")
# The feature roles, in the order the model's vector concatenates them.
ROLES = ("numeric", "bucketized", "categorical", "text", "category_sets")
RETUNE = ("always", "on_change")


@dataclass
class FeaturesConfig:
    """Which raw columns play which role, the task and the label rule: the one feature spec.

    Transform, the Keras model and its signatures, the Tuner, the Evaluator, the
    edge export and the clients all read it (module files get it back from
    `custom_config` with `section_from_dict`). Defaults are the bundled Chicago taxi data.

    numeric: signed log1p, then z-score; and with `numeric_buckets` > 0 also the
        one-hot of its quantile bucket, so the model can fit a non-monotonic effect
        (on the bundled data: AUC +0.0015 at 30 buckets).
    bucketized: quantile buckets (`bucket_count`), one-hot encoded.
    categorical: strings or integer codes; vocabulary of the `vocab_top_k` most
        frequent values plus OOV buckets, one-hot encoded. `vocabulary`: `approximate`
        (TFT's Misra-Gries `approximate_vocabulary`: one packed combine for all
        categorical columns; the same list whenever a column has at most `vocab_top_k`
        distinct values, else the tail's ties may differ) or `exact` (`tft.vocabulary`).
    text: free text (keywords, titles, queries), tokenized inside the Transform graph
        (contract/text.py) into words and their n-grams (`text_ngrams`); a vocabulary of
        the `text_top_k` most frequent n-grams plus one OOV bucket; the row becomes a bag
        of them weighted by `text_weighting` (TF-IDF, or 0/1), one block of the model's vector.
    category_sets: list-valued columns (a basket of product ids, a set of tags): a
        vocabulary of the `vocab_top_k` most frequent values plus one OOV bucket; the row
        becomes the multi-hot block of its values.
    task and label:
        binary: with `classes` empty, positive when `label_column > label_threshold *
            label_relative_to` (or `> label_threshold` when `label_relative_to` is
            empty), computed in float32; with two `classes`, the label is the index
            of its value in `classes` (the second one is the positive class).
        multiclass: the index of the label's value in `classes` (strings, or integer
            codes written as text), in that order; the names reach every output.
        regression: the label column's value itself (int or float).
    The label column is never a model input and is absent at serving.
    """

    task: str = "binary"  # binary | multiclass | regression
    # Raw columns that are amounts: signed log1p, then z-score (and their quantile buckets, numeric_buckets).
    # Heavy-tailed amounts: a handful of $1000 fares would otherwise set the scale.
    numeric: List[str] = field(default_factory=lambda: ["trip_miles", "fare", "trip_seconds"])
    # Raw numeric columns used only as their quantile bucket (bucket_count buckets), one-hot encoded.
    bucketized: List[str] = field(default_factory=lambda: [
        "pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"])
    # Raw string or integer-code columns: a vocabulary of the vocab_top_k most frequent values plus one
    # out-of-vocabulary id, one-hot encoded. pickup_census_tract is left out: 1 of 9,909 training examples
    # has it and the eval split has none.
    # trip_start_timestamp is decomposed into hour/day/month.
    categorical: List[str] = field(default_factory=lambda: [
        "payment_type", "company", "trip_start_hour", "trip_start_day", "trip_start_month",
        "dropoff_census_tract", "pickup_community_area", "dropoff_community_area"])
    label_column: str = "tips"  # the raw column the label comes from; never a model input, absent at serving
    # Binary threshold rule (classes empty): positive when label_column > label_threshold * label_relative_to.
    label_threshold: float = 0.2
    label_relative_to: str = "fare"  # "" to compare label_column with label_threshold directly
    # Class values of the label, in class-id order (multiclass; binary with a string or coded label).
    classes: List[str] = field(default_factory=list)
    bucket_count: int = 10  # quantile buckets of each bucketized column
    numeric_buckets: int = 30  # 0: numeric features are z-scores only
    vocab_top_k: int = 100  # most frequent values kept in each categorical vocabulary
    vocabulary: str = "approximate"  # approximate | exact
    # Free-text columns (keywords, titles, queries): tokenized inside the Transform graph (contract/text.py), a
    # bag of their n-grams over a vocabulary of text_top_k plus one out-of-vocabulary id.
    text: List[str] = field(default_factory=list)
    # Word n-gram orders [low, high]: [1, 1] words only, [1, 2] words and pairs of words.
    text_ngrams: List[int] = field(default_factory=lambda: [1, 2])
    # N-grams kept per text column (+1 OOV bucket): the block's width in the model and the edge model's input.
    text_top_k: int = 1000
    text_weighting: str = "tfidf"  # tfidf (tft.tfidf: term frequency x smoothed idf) | multi_hot (0/1)
    # List-valued columns (a basket of product ids, a set of tags): multi-hot over a vocabulary of the vocab_top_k
    # most frequent values plus one out-of-vocabulary id.
    category_sets: List[str] = field(default_factory=list)

    # Name of the label after Transform: what the model and TFMA see.
    LABEL_KEY: ClassVar[str] = "label"
    # The binary threshold rule's class names, as tf.estimator's classifiers exported them.
    THRESHOLD_CLASSES: ClassVar[tuple] = ("0", "1")

    def check(self) -> None:
        """Raises ConfigError on roles that cannot train: none, overlapping, the label as an input, a bad task."""
        inputs = self.raw_input_features
        if not inputs:
            raise ConfigError("features: no input features configured (features.numeric, .bucketized, .categorical, "
                              ".text, .category_sets)")
        duplicated = sorted({k for k in inputs if inputs.count(k) > 1})
        if duplicated:
            raise ConfigError(f"features: {duplicated} appear in more than one role")
        if self.label_column in inputs:
            raise ConfigError(
                f"features: the label column {self.label_column!r} is also an input; "
                "remove it from the input lists (it would leak the label)")
        if self.bucket_count < 2 or self.vocab_top_k < 1:
            raise ConfigError("features: bucket_count must be >= 2 and vocab_top_k >= 1")
        if self.numeric_buckets == 1 or self.numeric_buckets < 0:
            raise ConfigError(f"features.numeric_buckets: {self.numeric_buckets} must be 0 (z-scores only) or >= 2")
        if len(self.text_ngrams) != 2 or not 1 <= int(self.text_ngrams[0]) <= int(self.text_ngrams[1]):
            raise ConfigError(f"features.text_ngrams: {self.text_ngrams} must be [low, high] with 1 <= low <= high, "
                              "e.g. [1, 2] for words and pairs of words")
        if self.text_top_k < 1:
            raise ConfigError("features.text_top_k must be >= 1")
        if self.text_weighting not in TEXT_WEIGHTINGS:
            raise ConfigError(f"features.text_weighting: {self.text_weighting!r} is not one of "
                              f"{', '.join(TEXT_WEIGHTINGS)}")
        if self.vocabulary not in VOCABULARIES:
            raise ConfigError(f"features.vocabulary: {self.vocabulary!r} is not one of {', '.join(VOCABULARIES)}")
        if self.task not in TASKS:
            raise ConfigError(f"features.task: {self.task!r} is not one of {', '.join(TASKS)}")
        classes = [str(c) for c in self.classes]
        if len(set(classes)) != len(classes):
            raise ConfigError(f"features.classes: {classes} names a class twice")
        problem = self.task_type.class_names_problem(classes)
        if problem:
            raise ConfigError(f"features.classes: {problem}")

    @property
    def raw_input_features(self) -> List[str]:
        return (list(self.numeric) + list(self.bucketized) + list(self.categorical) + list(self.text)
                + list(self.category_sets))

    @property
    def label_key(self) -> str:
        return self.LABEL_KEY

    @property
    def label_only_columns(self) -> List[str]:
        """Raw columns that exist only in training data and must not be parsed at serving."""
        return [self.label_column]

    @property
    def task_type(self) -> tasks.Task:
        """The task object of `task`: what every stage asks instead of branching on the name."""
        return tasks.task(self.task)

    @property
    def is_classification(self) -> bool:
        return self.task_type.is_classification

    @property
    def uses_threshold_rule(self) -> bool:
        """Binary from a numeric label and `label_threshold` (the taxi rule), not from `classes`."""
        return self.task_type.supports_threshold_rule and not self.classes

    @property
    def class_names(self) -> List[str]:
        """Class names in class-id order ([] for regression): what `classes` outputs and clients show."""
        if not self.is_classification:
            return []
        return list(self.THRESHOLD_CLASSES) if self.uses_threshold_rule else [str(c) for c in self.classes]

    @property
    def label_columns(self) -> List[str]:
        """Raw columns the label is computed from."""
        if self.uses_threshold_rule and self.label_relative_to:
            return [self.label_column, self.label_relative_to]
        return [self.label_column]

    def label(self, label_values, relative_values=None):
        """The label on numpy values (first value of each raw example), exactly as Transform computes it.

        Threshold rule in float32: float64 would flip examples that sit on the
        boundary (a $1.00 tip on a $5.00 fare). Class labels: the index in
        `classes`, -1 for a value that is not a class. Regression: float32.
        """
        import numpy as np

        if not self.is_classification:
            return np.asarray(label_values, dtype=np.float32)
        if not self.uses_threshold_rule:
            index = {name: i for i, name in enumerate(self.class_names)}
            return np.array([index.get(class_key(v), -1) for v in label_values], dtype=np.int64)
        column = np.asarray(label_values, dtype=np.float32)
        bound = np.float32(self.label_threshold)
        if self.label_relative_to:
            bound = bound * np.asarray(relative_values, dtype=np.float32)
        return (column > bound).astype(np.int64)


def class_key(value) -> str:
    """A raw label value as the text `classes` names it: strings as they are, integers in decimal."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# training.model auto: fewer held-out rows than this make the choice between families a coin toss.
AUTO_MIN_VALIDATION_ROWS = 30


@dataclass
class TrainingConfig:
    # The model family (models/trainer/families/, one module each; docs/model-families.md): dnn (a wide-and-deep
    # Keras network), linear (regularized logistic/softmax/linear regression), gbdt (TF Decision Forests'
    # gradient-boosted trees; its edge model is a distilled int8 DNN), auto (each family trained, the best on
    # held-out training data exported).
    model: str = "dnn"
    # ~13 passes over the 9,909 taxi training examples; more overfits the one-hot features.
    train_steps: int = 1000
    eval_steps: int = 200  # batches of the eval split evaluated after training
    batch_size: int = 128  # per replica: mirrored training's global batch is this x replicas
    # How the Trainer trains: default | mirrored | parameter_server (docs: Training).
    strategy: str = "default"
    logical_cpu_devices: int = 2  # mirrored without GPUs: replicas made by splitting the CPU
    parameter_servers: int = 1  # parameter_server without TF_CONFIG: the local cluster's size
    workers: int = 2  # parameter_server without TF_CONFIG: worker processes of the local cluster
    steps_per_execution: int = 10  # parameter_server: steps a worker runs per round trip
    # BackupAndRestore checkpoint interval; a re-run after a kill resumes from the last one. 0 = off.
    checkpoint_every_steps: int = 100
    # The one seed of a run: the Tuner's search, weight init, dropout and the training shuffle order
    # (models/trainer/). Same data + config + seed -> same hyper-parameters and metrics (default strategy).
    # 0 leaves them unseeded: each run draws its own (the default; on taxi, seed 42 reaches AUC 0.948 and
    # unseeded runs 0.947-0.954, so no fixed seed is chosen for the bundled data).
    seed: int = 0
    # model auto: the share of the train split held out to choose the family (never the Evaluator's eval split).
    auto_validation_share: float = 0.2


@dataclass
class TunerConfig:
    """KerasTuner search run before training; its best hyper-parameters feed the Trainer."""

    enabled: bool = True  # false: no search; the Trainer uses the search space's default hyper-parameters
    algorithm: str = "random"  # random | hyperband | bayesian
    max_trials: int = 4  # hyper-parameter combinations tried
    train_steps: int = 500  # training steps per trial
    eval_steps: int = 100  # eval batches per trial
    # always: search whenever the Tuner's inputs change (new data, as TFX's cache decides);
    # on_change: reuse the last search's best hyper-parameters until the search space, these
    # settings, the feature spec or the schema change (pipeline/tuning_reuse.py).
    retune: str = "always"


@dataclass
class EvaluatorConfig:
    """Blessing rules per task, applied to the overall slice; other slices are reported only.

    binary: AUC and binary accuracy; multiclass: accuracy and macro-averaged
    one-vs-rest AUC; regression: RMSE. Each also against the last blessed model.
    """

    min_auc: float = 0.85  # binary AUC; multiclass macro AUC
    min_binary_accuracy: float = 0.75
    # The candidate may not be worse than the last blessed model by more than this.
    max_auc_drop: float = 0.0
    min_accuracy: float = 0.5  # multiclass
    max_accuracy_drop: float = 0.0  # multiclass, vs the last blessed model
    max_rmse: float = 0.0  # regression upper bound, in the label's unit; 0 = none
    max_rmse_increase: float = 0.0  # regression, vs the last blessed model (lower is better)
    slice_features: List[str] = field(default_factory=lambda: ["payment_type", "trip_start_hour"])


@dataclass
class ValidationConfig:
    """The anomaly gate after ExampleValidator (components/anomaly_gate.py) and `python -m validation`.

    Skew and drift thresholds are not here: they are per feature in the schema file.
    """

    fail_severity: str = "ERROR"  # anomalies at or above this stop the run: WARNING | ERROR
    # Anomalies tolerated: "TYPE" for every feature or "feature:TYPE". The bundled eval split has one
    # 1,710-mile trip (schema max 1,000): reported as tolerated, not hidden by a looser schema.
    allow_anomalies: List[str] = field(default_factory=lambda: ["trip_miles:FLOAT_TYPE_BIG_FLOAT"])
    skew: bool = True  # compare the train split with serving traffic (serving_data)
    # Glob of serving traffic: tf.Example TFRecords or request logs (.parquet). "" = the request logs under
    # <output_dir>/request_logs/<model_name>/ when there are any, else the bundled `unlabelled` split.
    serving_data: str = ""
    drift: bool = True  # with `{SPAN}` patterns: compare the current span with the previous one


@dataclass
class EdgeConfig:
    """Full-int8 TFLite export of the blessed model for Coral Edge TPU / Raspberry Pi (components/edge_export.py).

    The gate compares the int8 model with the SavedModel on the raw eval split, per task:
    binary AUC drop, multiclass accuracy drop and agreement of predicted classes,
    regression RMSE increase relative to the label's standard deviation.
    """

    enabled: bool = True  # export and push the int8 TFLite model after the Pusher
    edge_dir: str = ""  # default <output_dir>/edge; versions go to <edge_dir>/<model_name>/<version>/
    # binary: push only when the int8 model's AUC is at most this much below the SavedModel's on the eval split.
    max_auc_drop: float = 0.005
    max_accuracy_drop: float = 0.02  # multiclass: int8 accuracy below the SavedModel's
    min_agreement: float = 0.95  # multiclass: share of eval examples where int8 predicts the SavedModel's class
    max_rmse_increase: float = 0.05  # regression: (int8 RMSE - SavedModel RMSE) / std of the eval labels
    io_type: str = "int8"  # int8 | uint8: the integer type of the model's input and output tensors
    # Transformed training examples that calibrate the int8 ranges (the converter's representative dataset).
    representative_examples: int = 1000
    # Numeric inputs are clipped to the [q, 1-q] quantiles of the training data; 0 = its min/max.
    clip_quantile: float = 0.0
    # Raw eval examples the gate scores, read round-robin over all eval files; 0 = all. The gate runs each
    # example through the device runtime one at a time, so on millions it would dominate the run, while the
    # paired int8-vs-SavedModel difference it checks is already precise on tens of thousands.
    gate_examples: int = 50000


@dataclass
class TransformConfig:
    """How the Transform component runs (what it computes is `features:`)."""

    # Transform's own pre- and post-transform statistics: StatisticsGen already computes the raw data's, and
    # nothing here (gate, skew, drift, reports) reads Transform's, so by default they are not computed.
    statistics: bool = False


@dataclass
class BeamConfig:
    direct_running_mode: str = "in_memory"  # in_memory | multi_processing
    direct_num_workers: int = 0  # 0 = one per core (multi_processing only)


@dataclass
class GcpConfig:
    """Google Cloud settings shared by the Dataflow and Vertex AI runners; local runs ignore them."""

    project: str = ""  # Google Cloud project of the Vertex AI and Dataflow jobs
    region: str = ""  # e.g. us-central1
    # This project's image, built from ./Dockerfile (e.g. us-docker.pkg.dev/PROJECT/REPO/taxi:TAG).
    # Vertex AI runs every step in it and Dataflow workers use it, so both can import models/.
    image: str = ""
    service_account: str = ""  # empty: the project's default compute service account


@dataclass
class DataflowConfig:
    """Beam on Dataflow for ExampleGen, StatisticsGen, Transform and Evaluator."""

    temp_location: str = ""  # gs:// path; required
    staging_location: str = ""  # empty: <temp_location>/staging
    machine_type: str = "n1-standard-4"  # Dataflow worker machine type
    max_num_workers: int = 4  # upper bound of Dataflow's autoscaling
    disk_size_gb: int = 50  # disk per Dataflow worker


@dataclass
class KubeflowConfig:
    """Compiling for Vertex AI Pipelines / KFP v2 (`python -m runners compile`).

    Steps run in `gcp.image`, so pipeline_root, serving_dir and data.input_base
    must then be gs:// paths.
    """

    display_name: str = ""  # empty: pipeline_name
    # Run the Beam steps on Dataflow (dataflow.* settings) instead of inside each step's container.
    use_dataflow: bool = False
    # Where the Dockerfile copies this repository; the steps read repository files (schema_file) there.
    image_project_dir: str = "/pipeline"


@dataclass
class ServingConfig:
    """Online serving (`tfx-edge serving`): the local gRPC/REST server, the files for TF Serving, the clients."""

    host: str = "127.0.0.1"  # loopback by default; 0.0.0.0 exposes the server to the network
    port: int = 8500  # TF Serving's gRPC port; 0 = a free port, printed at start (one worker only)
    rest_port: int = 8501  # TF Serving's REST port (--rest_api_port), also /monitoring/prometheus/metrics; 0 = free
    rest_max_body_bytes: int = 8 * 1024 * 1024  # larger REST request bodies are refused (413)
    # Server processes sharing the ports (SO_REUSEPORT), each with its own model copy and batching queue.
    # 0 = one per core.
    workers: int = 0
    # How often the server re-reads models.config and rescans the model base path (TF Serving's
    # --file_system_poll_wait_seconds and --model_config_file_poll_wait_seconds).
    poll_interval_seconds: float = 2.0
    # A version that fails to load is tried again after this long, doubling each time (TF Serving's
    # --load_retry_interval_micros, there a fixed interval), at most `max_load_retries` times
    # (--max_num_load_retries); the version serving meanwhile stays.
    load_retry_interval_seconds: float = 5.0
    max_load_retries: int = 5  # retries of a version that failed to load; then it is END with its error
    enable_batching: bool = True
    max_batch_size: int = 64  # examples per merged model call; larger single requests are refused
    # How long a batch waits for more requests. 0: a batch is whatever queued while the previous
    # call ran, so a lone request never waits and batches still form under load (bench/serving_latency.py).
    batch_timeout_micros: int = 0
    num_batch_threads: int = 1  # model calls at once; more only helps with more cores than clients use
    warmup_requests: int = 6  # PredictionLog records the Pusher writes from real eval examples
    # Share of Predict/Classify/Regress requests written to the request log (contract/request_log.py: id, time,
    # version, arm, examples, answers), which the skew check, the monitoring job and the late-label join read.
    request_log_sample_rate: float = 0.01
    request_log_dir: str = ""  # default: <output_dir>/request_logs; files land in <dir>/<model_name>/
    # Classify/Regress (and MultiInference) accept only signatures whose method_name is classify/regress, as
    # TF Serving's --enable_signature_method_name_check (passed to it too). Off, as TF Serving's default: any
    # signature whose inputs and outputs fit serves, such as those `tf.saved_model.save` marks predict.
    enable_signature_method_name_check: bool = False
    # Experiments (serving/experiments.py): the request header (gRPC metadata) whose value keeps a client on one arm.
    experiment_key_header: str = "x-experiment-key"
    experiment_log_dir: str = ""  # default: <output_dir>/experiment_logs; files land in <dir>/<model_name>/
    tf_serving_image: str = "tensorflow/serving:2.16.1"  # matches tensorflow-serving-api
    # `tfx-edge serving score`: examples per model call (one Beam element), as tf.data reads them.
    batch_scoring_batch_size: int = 1024


@dataclass
class MonitoringConfig:
    """The monitoring job, late labels, the exporter and the alert webhook (`tfx-edge monitoring`, monitoring/).

    Per window of the request log: skew against the served model's training statistics, drift against the
    previous window (thresholds: the schema's skew/drift comparators), traffic, errors, latency, and the
    served metric on late labels; kept in `<directory of metadata_path>/monitoring.sqlite`.
    """

    window_seconds: float = 3600.0  # one point of the series; windows start at multiples of it (UTC)
    # The served headline metric (AUC, accuracy, RMSE) must stay on its good side of this; 0 = no bound.
    # Fleet models take their fleet file's metric.bound.
    metric_bound: float = 0.0
    min_labels: int = 50  # fewest joined labels in a window for its served metric (fewer: not computed)
    # A label that arrives longer than this after its prediction is counted as too late and not joined.
    label_window_days: float = 30.0
    exporter_port: int = 9464  # `monitoring exporter`: the Prometheus page of the series, on serving.host
    webhook_port: int = 9465  # `monitoring webhook`: Alertmanager's receiver that starts fleet retrains
    # An alert starts no second retrain of a model within this many seconds of the last one it started.
    retrain_cooldown_seconds: float = 3600.0


@dataclass
class ServingCheckConfig:
    """The pre-push serving check (components/serving_check.py, TFX InfraValidator's job), on every runner.

    The blessed candidate is served by `tfx-edge serving serve` in a separate process; it must load, answer its
    warm-up requests and `requests` real eval examples as the SavedModel does in process, with a p99 latency
    within `p99_budget_ms`; otherwise the Pusher and EdgeExport push nothing and the summary says why.
    """

    enabled: bool = True  # off: the Pusher and EdgeExport check only the Evaluator's blessing
    requests: int = 100  # eval examples sent one Predict each (the latency sample)
    p99_budget_ms: float = 250.0  # p99 of those requests, client-measured over loopback gRPC
    load_timeout_seconds: float = 300.0  # the server must have loaded the model and opened its ports by then


@dataclass
class BulkInferenceConfig:
    """TFX BulkInferrer after blessing: the blessed model scores an unlabelled input into PredictionLogs.

    Off for the taxi demo; `pipeline/configs/bulk_inference.yaml` turns it on. For jobs outside
    the pipeline (ids, Parquet/CSV, several models, a chosen version) use `tfx-edge serving score`.
    """

    enabled: bool = False  # run BulkInferrer after the Evaluator (a blessed model only)
    input_base: str = ""  # directory of tf.Example TFRecords; "" = the bundled taxi data
    pattern: str = "unlabelled/*"  # relative to input_base: the files to score (one split, "unlabelled")


@dataclass
class VertexConfig:
    """Trainer and Tuner as Vertex AI custom jobs (tfx.extensions.google_cloud_ai_platform).

    Worker pools follow training.strategy: the chief alone for default and
    mirrored; chief + `training.workers` workers + `training.parameter_servers`
    ps for parameter_server. Vertex AI sets TF_CONFIG in each replica, so the
    same run_fn joins that cluster. Uses gcp.project, gcp.region and gcp.image.
    """

    enabled: bool = False  # run the Trainer and Tuner as Vertex AI custom jobs
    machine_type: str = "n1-standard-8"  # chief and workers
    accelerator_type: str = ""  # e.g. NVIDIA_TESLA_T4: mirrored training then uses every GPU of the chief
    accelerator_count: int = 0  # GPUs of the chief; set with accelerator_type
    ps_machine_type: str = "n1-highmem-4"


@dataclass
class PipelineConfig:
    """Every setting of a run: the top-level names and paths, then one section per stage.

    Build it with `load_config`, which also validates it; a bare `PipelineConfig()` holds the defaults
    (the bundled taxi data). Paths left empty derive from `output_dir` when the object is made. The
    configuration reference lists every setting with its meaning.
    """

    pipeline_name: str = "taxi"
    model_name: str = "taxi"
    # Everything a run writes lives under output_dir (relative to the directory the command runs in)
    # unless a path below is set.
    output_dir: str = "outputs"
    pipeline_root: str = ""
    metadata_path: str = ""
    serving_dir: str = ""
    log_dir: str = ""
    schema_file: str = DEFAULT_SCHEMA
    enable_cache: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    tuner: TunerConfig = field(default_factory=TunerConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    gcp: GcpConfig = field(default_factory=GcpConfig)
    dataflow: DataflowConfig = field(default_factory=DataflowConfig)
    kubeflow: KubeflowConfig = field(default_factory=KubeflowConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    serving_check: ServingCheckConfig = field(default_factory=ServingCheckConfig)
    vertex: VertexConfig = field(default_factory=VertexConfig)
    bulk_inference: BulkInferenceConfig = field(default_factory=BulkInferenceConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)

    def __post_init__(self):
        # gs:// (and other remote) paths are joined as they are; local ones made absolute.
        out = self.output_dir if is_remote(self.output_dir) else os.path.abspath(self.output_dir)
        self.output_dir = out
        self.pipeline_root = self.pipeline_root or os.path.join(out, "pipeline_root")
        self.metadata_path = self.metadata_path or os.path.join(out, "metadata.sqlite")
        self.serving_dir = self.serving_dir or os.path.join(out, "serving")
        self.log_dir = self.log_dir or os.path.join(out, "logs")
        self.edge.edge_dir = self.edge.edge_dir or os.path.join(out, "edge")
        self.serving.request_log_dir = self.serving.request_log_dir or os.path.join(out, "request_logs")
        self.serving.experiment_log_dir = self.serving.experiment_log_dir or os.path.join(out, "experiment_logs")

    @property
    def model_edge_dir(self) -> str:
        """`<edge.edge_dir>/<model_name>`: where edge versions are pushed."""
        return os.path.join(self.edge.edge_dir, self.model_name)

    @property
    def models_config_path(self) -> str:
        """`<serving_dir>/models.config`: the ModelServerConfig read by TF Serving and the local server."""
        return os.path.join(self.serving_dir, "models.config")

    @property
    def model_request_log_dir(self) -> str:
        """`<request_log_dir>/<model_name>`: sampled request logs, read by the skew check."""
        return os.path.join(self.serving.request_log_dir, self.model_name)

    @property
    def monitoring_path(self) -> str:
        """`monitoring.sqlite` beside the ML Metadata store: the monitoring series and the joined labels."""
        return os.path.join(os.path.dirname(self.metadata_path), "monitoring.sqlite")

    @property
    def model_experiment_log_dir(self) -> str:
        """`<experiment_log_dir>/<model_name>`: what the server's experiment split routed, read by the report."""
        return os.path.join(self.serving.experiment_log_dir, self.model_name)

    @property
    def model_serving_dir(self) -> str:
        """`<serving_dir>/<model_name>`: TF Serving's model base path."""
        return os.path.join(self.serving_dir, self.model_name)

    @property
    def run_lock_path(self) -> str:
        """`<metadata dir>/locks/<pipeline_name>.lock`: held by the one local run of this pipeline on this store."""
        return os.path.join(os.path.dirname(os.path.abspath(self.metadata_path)), "locks",
                            f"{self.pipeline_name}.lock")

    @property
    def input_base(self) -> str:
        """`data.input_base` made absolute, or the bundled taxi TFRecords when it is empty."""
        base = self.data.input_base
        if not base:
            return bundled_taxi_root()
        return base if is_remote(base) else os.path.abspath(base)

    @property
    def split_patterns(self) -> Dict[str, str]:
        """ExampleGen split name -> file pattern relative to `input_base`."""
        if self.data.pattern:
            return {"single_split": self.data.pattern}
        return {"train": self.data.train_pattern, "eval": self.data.eval_pattern}

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def bundled_taxi_root() -> str:
    """The Chicago taxi TFRecords shipped inside the installed tfx wheel (never downloaded).

    Found without importing tfx, which would start TensorFlow.

    Returns:
        The directory holding `Split-train/`, `Split-eval/` and `unlabelled/`.

    Raises:
        ConfigError: the tfx package lacks its test data.
    """
    import importlib.util

    found = importlib.util.find_spec("tfx")
    tfx_dir = os.path.dirname(found.origin) if found and found.origin else ""
    root = os.path.join(tfx_dir, "components", "testdata", "csv_example_gen")
    if not os.path.isdir(root):
        raise ConfigError(
            f"the bundled taxi data is missing from the tfx package at {root}; "
            "reinstall with `make setup` (tfx==1.16.0 ships it)")
    return root


Section = TypeVar("Section")


def section_from_dict(cls: Type[Section], values: Optional[Dict[str, Any]]) -> Section:
    """Rebuilds a configuration section from the dict a component received (custom_config, exec property).

    Unknown keys are an error, not silently dropped: they mean the sender and
    this code disagree about the section.

    Args:
        cls: the section's class, e.g. `TrainingConfig`.
        values: the section as a dict (`section_to_dict`); None for the defaults.

    Returns:
        The section.

    Raises:
        ConfigError: a key the section does not have.
    """
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown settings {unknown}; known: {sorted(names)}")
    return cls(**values)


def section_to_dict(section: Any, *names: str) -> Dict[str, Any]:
    """A section as a plain dict (all fields, or only `names`), for custom_config and exec properties."""
    values = dataclasses.asdict(section)
    return {k: values[k] for k in names} if names else values


def check_gate_policy(fail_severity: str, allow_anomalies: Sequence[str]) -> None:
    """`validation.fail_severity` and `validation.allow_anomalies` name real TFDV severities and anomaly types."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2  # protobuf only, no TensorFlow

    if fail_severity not in SEVERITIES:
        raise ConfigError(f"validation.fail_severity must be one of {', '.join(SEVERITIES)}, not {fail_severity!r}")
    known = set(anomalies_pb2.AnomalyInfo.Type.keys())
    for entry in allow_anomalies:
        anomaly_type = entry.split(":")[-1]
        if anomaly_type not in known:
            raise ConfigError(f"validation.allow_anomalies: {anomaly_type!r} (in {entry!r}) is not a TFDV "
                              "anomaly type, e.g. ENUM_TYPE_UNEXPECTED_STRING_VALUES or FLOAT_TYPE_BIG_FLOAT")


def _coerce(value: Any, current: Any, where: str) -> Any:
    """Converts a YAML or command-line value to the type of the field's default."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if isinstance(current, (int, float)):
        try:
            return type(current)(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: expected a {type(current).__name__}, got {value!r}") from None
    if isinstance(current, list):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.startswith("[") else [
                v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return value
    return "" if value is None else str(value)


def _apply(obj: Any, values: Dict[str, Any], prefix: str = "") -> None:
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"unknown setting {where!r}; known settings here: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
            _apply(current, value, where + ".")
        else:
            setattr(obj, key, _coerce(value, current, where))


def _parse_override_value(raw: str) -> Any:
    """YAML scalars and lists (`500`, `true`, `[4, 1]`); anything else, like a glob, as text."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def load_config(path: Optional[str] = None, overrides: Optional[List[str]] = None) -> PipelineConfig:
    """Builds and validates the configuration: the defaults, then the YAML file, then the overrides.

    Args:
        path: a YAML file with any subset of `pipeline/configs/default.yaml`, or None for the defaults.
        overrides: `section.key=value` strings applied last, as `--set` gives them (values are YAML
            scalars or lists, e.g. `training.train_steps=500`, `data.hash_buckets=[4, 1]`).

    Returns:
        The configuration, with every derived path filled in.

    Raises:
        ConfigError: an unknown setting, a value of the wrong type or out of range, a missing file; the
            message names the setting.
    """
    values: Dict[str, Any] = {}
    if path:
        if not os.path.exists(path):
            raise ConfigError(f"config file {path} does not exist")
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        values = loaded
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        node = values
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node[parts[-1]] = _parse_override_value(raw)

    base = {k: v for k, v in values.items() if not isinstance(v, dict)}
    config = PipelineConfig()
    _apply(config, values)
    if "output_dir" in base:
        # Derived paths follow a changed output_dir unless they were set explicitly.
        for name in ("pipeline_root", "metadata_path", "serving_dir", "log_dir"):
            if name not in base:
                setattr(config, name, "")
        if not (values.get("edge") or {}).get("edge_dir"):
            config.edge.edge_dir = ""
        for name in ("request_log_dir", "experiment_log_dir"):
            if name not in values.get("serving", {}):
                setattr(config.serving, name, "")
    config.__post_init__()
    validate(config)
    return config


def validate(config: PipelineConfig) -> None:
    """Rejects settings that would only fail later, deep inside a component."""
    if config.tuner.algorithm not in ("random", "hyperband", "bayesian"):
        raise ConfigError(
            f"tuner.algorithm: {config.tuner.algorithm!r} is not one of random, hyperband, bayesian")
    if config.tuner.retune not in RETUNE:
        raise ConfigError(f"tuner.retune: {config.tuner.retune!r} is not one of {', '.join(RETUNE)}")
    if config.beam.direct_running_mode not in ("in_memory", "multi_processing", "multi_threading"):
        raise ConfigError(
            f"beam.direct_running_mode: {config.beam.direct_running_mode!r} is not one of "
            "in_memory, multi_processing, multi_threading")
    for name in ("train_steps", "eval_steps", "batch_size", "logical_cpu_devices", "parameter_servers", "workers",
                 "steps_per_execution"):
        if getattr(config.training, name) <= 0:
            raise ConfigError(f"training.{name} must be positive")
    if config.training.strategy not in STRATEGIES:
        raise ConfigError(f"training.strategy: {config.training.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if config.training.checkpoint_every_steps < 0:
        raise ConfigError("training.checkpoint_every_steps must be 0 (no checkpoints) or a positive number of steps")
    if config.vertex.accelerator_count < 0 or bool(config.vertex.accelerator_type) != (
            config.vertex.accelerator_count > 0):
        raise ConfigError("vertex.accelerator_type and vertex.accelerator_count go together: set both "
                          "(e.g. NVIDIA_TESLA_T4 and 1) or neither")
    if config.beam.direct_num_workers < 0:
        raise ConfigError("beam.direct_num_workers must be 0 (one per core) or a positive number")
    for name in ("max_num_workers", "disk_size_gb"):
        if getattr(config.dataflow, name) <= 0:
            raise ConfigError(f"dataflow.{name} must be positive")
    serving = config.serving
    for name in ("port", "rest_port"):
        if not 0 <= getattr(serving, name) < 65536:
            raise ConfigError(f"serving.{name} must be 1-65535 (or 0: a free port), got {getattr(serving, name)}")
    if serving.port == serving.rest_port and serving.port:
        raise ConfigError(f"serving.port and serving.rest_port are both {serving.port}; gRPC and REST need a port each")
    if serving.workers < 0:
        raise ConfigError("serving.workers must be 0 (one per core) or a positive number of processes")
    if serving.workers != 1 and 0 in (serving.port, serving.rest_port):
        raise ConfigError("serving.port=0 / serving.rest_port=0 (a free port) needs serving.workers=1: worker "
                          "processes share fixed ports")
    if serving.load_retry_interval_seconds <= 0 or serving.max_load_retries < 0:
        raise ConfigError("serving.load_retry_interval_seconds must be positive and serving.max_load_retries "
                          "0 (no retry) or more")
    if serving.rest_max_body_bytes <= 0:
        raise ConfigError("serving.rest_max_body_bytes must be positive")
    for name in ("max_batch_size", "num_batch_threads", "poll_interval_seconds", "batch_scoring_batch_size"):
        if getattr(serving, name) <= 0:
            raise ConfigError(f"serving.{name} must be positive")
    if serving.batch_timeout_micros < 0:
        raise ConfigError("serving.batch_timeout_micros must be 0 (no waiting) or positive")
    if not 0.0 <= serving.request_log_sample_rate <= 1.0:
        raise ConfigError("serving.request_log_sample_rate must be between 0 and 1")
    if config.data.format not in FORMATS:
        raise ConfigError(f"data.format: {config.data.format!r} is not one of {', '.join(FORMATS)}")
    monitoring = config.monitoring
    for name in ("window_seconds", "min_labels", "label_window_days"):
        if getattr(monitoring, name) <= 0:
            raise ConfigError(f"monitoring.{name} must be positive")
    if monitoring.metric_bound < 0 or monitoring.retrain_cooldown_seconds < 0:
        raise ConfigError("monitoring.metric_bound and monitoring.retrain_cooldown_seconds must be 0 or positive")
    for name in ("exporter_port", "webhook_port"):
        if not 0 < getattr(monitoring, name) < 65536:
            raise ConfigError(f"monitoring.{name} must be 1-65535, got {getattr(monitoring, name)}")
    if config.data.span_window < 1:
        raise ConfigError("data.span_window must be 1 (the latest span) or more")
    if config.data.span_window > 1 and not config.data.spanned_pattern:
        raise ConfigError(f"data.span_window={config.data.span_window} needs span-partitioned input: put {{SPAN}} "
                          "or the date specs {YYYY}-{MM}-{DD} in data.train_pattern/eval_pattern (or data.pattern), "
                          "e.g. 'span-{SPAN}/train/*' or 'date={YYYY}-{MM}-{DD}/*'")
    if not config.data.pattern and not (config.data.train_pattern and config.data.eval_pattern):
        raise ConfigError("data: set either pattern (hash split) or both train_pattern and eval_pattern")
    if config.data.pattern and (len(config.data.hash_buckets) < 2 or min(config.data.hash_buckets) <= 0):
        raise ConfigError("data.hash_buckets needs two positive numbers, e.g. [4, 1] for train/eval")
    if config.serving_check.requests <= 0 or config.serving_check.p99_budget_ms <= 0 or (
            config.serving_check.load_timeout_seconds <= 0):
        raise ConfigError("serving_check.requests, serving_check.p99_budget_ms and "
                          "serving_check.load_timeout_seconds must be positive")
    if config.bulk_inference.enabled and not config.bulk_inference.pattern:
        raise ConfigError("bulk_inference.pattern is empty: set the files to score, e.g. 'unlabelled/*'")
    if config.edge.io_type not in ("int8", "uint8"):
        raise ConfigError(f"edge.io_type: {config.edge.io_type!r} is not one of int8, uint8")
    if config.edge.representative_examples <= 0:
        raise ConfigError("edge.representative_examples must be positive")
    if config.edge.gate_examples < 0:
        raise ConfigError(f"edge.gate_examples must be 0 (all eval examples) or positive, "
                          f"got {config.edge.gate_examples}")
    if not 0.0 <= config.edge.clip_quantile < 0.5:
        raise ConfigError(f"edge.clip_quantile must be in [0, 0.5), got {config.edge.clip_quantile}")
    if not 0.0 <= config.edge.min_agreement <= 1.0:
        raise ConfigError(f"edge.min_agreement must be between 0 and 1, got {config.edge.min_agreement}")
    if config.evaluator.max_rmse < 0:
        raise ConfigError("evaluator.max_rmse must be 0 (no bound) or a positive RMSE in the label's unit")
    config.features.check()
    check_gate_policy(config.validation.fail_severity, config.validation.allow_anomalies)
    if not os.path.exists(config.schema_file):
        raise ConfigError(
            f"schema_file {config.schema_file} does not exist; infer one with "
            "`tfx-edge schema infer --data-root DIR --out FILE` (or `tfx-edge schema init`)")


def setting(config: PipelineConfig, dotted: str) -> Any:
    """The value of `section.key` (or a top-level `key`)."""
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def require(config: PipelineConfig, purpose: str, required: Sequence[str] = (),
            gcs: Sequence[str] = ()) -> None:
    """Fails, naming every missing setting at once, when `purpose` cannot run without them.

    Cloud runners call this, not `load_config`, so local runs need none of their
    settings. `gcs` settings must be gs:// paths: cloud workers cannot see this disk.
    """
    problems = [f"{name} is not set" for name in required if not setting(config, name)]
    for name in gcs:
        value = setting(config, name)
        if not str(value).startswith("gs://"):
            problems.append(f"{name} must be a gs:// path" + (f", not {value!r}" if value else " and is not set"))
    if problems:
        raise ConfigError(f"{purpose}: " + "; ".join(problems) +
                          ". Set them in the --config file or with --set KEY=VALUE")
