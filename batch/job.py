"""Batch scoring: a large file scored offline with pushed models, on Beam RunInference.

    tfx-edge serving score [--input PATH] --out DIR [--model latest|stable|canary|VERSION|PATH ...]
                            [--id COLUMN ...] [--format parquet|csv|tfrecord] [--shards N]
                            [--strict] [--overwrite] [--runner direct|dataflow]

The third way the models serve, after online (`serving/`) and edge
(`edge/`). One job:

1. checks its input before Beam starts: every TFRecord shard is read by the
   preflight (`validation/files.py`: corrupt gzip, records that are not
   tf.Example), every CSV header must hold the features the model needs;
2. validates the batch with the gate's logic (`validation/checks.py`): TFDV
   statistics of the batch, computed on Beam, against the schema's SERVING
   environment (TRAINING for a batch that still carries the label column), and
   compared with the training statistics (the schema's skew_comparator
   thresholds). `--strict` stops a failing batch before it is scored; otherwise
   it is scored and the result is flagged;
3. scores every example with each chosen model in one pass: Beam's
   `RunInference` (apache_beam.ml.inference) with the `ScoringModelHandler`
   below, on batches of `serving.batch_scoring_batch_size` records as tf.data
   reads them, ids travelling with their batch (RunInference's own per-element
   batching cost 2.4x the time at 1.5 M examples: README, "Batch scoring");
   a labelled batch also gets each model's task metrics (`quality.py`);
4. writes ids + prediction columns as Parquet, CSV or tf.Example TFRecords,
   sharded, into a hidden temporary directory beside `--out` that is renamed
   into place at the end, so a failed job leaves no partial output visible.

The same job runs on the DirectRunner (beam.direct_running_mode in_memory or
multi_processing) and on Dataflow (`--runner dataflow`, the dataflow.* and gcp.*
settings, workers in the project's image).
"""

import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from batch.checks import add_statistics, judge_batch, label_columns_in, training_statistics
from batch.inputs import (POSITION_IDS, id_types, input_files, preflight,
                          read_examples)
from batch.models import (ScoringError, ScoringModelHandler, column_names,
                          resolve_models)
from batch.outputs import FORMATS, SHARD_PREFIX, write_rows
from batch.quality import Quality
from contract.config import PipelineConfig, bundled_taxi_root, is_remote
from contract.versions import pid_alive
from validation.files import BadInputError

RUNNERS = ("direct", "dataflow")
RESULT_FILE = "_SCORING.json"
QUALITY_FILE = "_QUALITY.json"  # a labelled batch's metrics, folded into RESULT_FILE before the results publish
# Exit status of a batch that --strict refused (0 done, 1 the job failed, 2 a setting or input is wrong).
EXIT_REFUSED = 3
PROGRESS_EVERY_SECONDS = 10.0


class ScoringJobError(RuntimeError):
    """The Beam job failed after it started; nothing was published."""


def _reason(error: BaseException) -> str:
    """The line of a Beam/TensorFlow failure that says what was wrong (its last non-empty one)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if not line.startswith(("[[", "File ", "Traceback"))),
                  type(error).__name__)
    return f"{type(error).__name__}: {reason}"


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
    # A labelled batch (it still carries the label column): each model's task metrics on it.
    quality: Dict[str, Dict[str, float]] = field(default_factory=dict)


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


def _remove_stale_staging(out: str) -> None:
    """What a killed job (SIGKILL: no `finally`) left beside `--out`: staging directories of dead pids."""
    parent, name = os.path.split(os.path.abspath(out.rstrip("/")))
    if is_remote(out) or not os.path.isdir(parent):
        return
    stale = re.compile(rf"\.{re.escape(name)}\.incomplete-(\d+)-\d+")
    for entry in os.listdir(parent):
        match = stale.fullmatch(entry)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


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
    _remove_stale_staging(job.out)
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
    labelled = bool(label_columns_in(config, batch_stats))
    report = judge_batch(config, batch_stats, training, training_source,
                         f"score {job.input} ({'labelled' if labelled else 'SERVING'})", labelled)
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
        handler = ScoringModelHandler(choices, progress_dir, config.features if labelled else None).with_no_batching()
        quality_path = os.path.join(staging, QUALITY_FILE)
        try:
            with beam.Pipeline(options=pipeline_options(config, job.runner, job_name)) as p:
                scored = (read_examples(p, files, config.schema_file, job.id_columns, types, batch_size)
                          | "Score" >> RunInference(handler))
                write_rows(scored, job.output_format, os.path.join(staging, SHARD_PREFIX), columns, job.shards)
                if labelled:
                    _ = (scored | "Quality" >> beam.CombineGlobally(Quality({c.name: c.task for c in choices}))
                         | "WriteQuality" >> beam.Map(_write_json, quality_path))
        except Exception as error:  # noqa: BLE001 - Beam re-raises worker errors of any type
            raise ScoringJobError(f"the scoring job failed ({_reason(error)}); nothing was written to "
                                  f"{job.out}. The validation report may say why: {report_path}") from error
        measured = {}
        if labelled:
            with tf.io.gfile.GFile(quality_path) as f:
                measured = json.load(f)
            tf.io.gfile.remove(quality_path)
        written = sorted(tf.io.gfile.listdir(staging))
        result = ScoreResult("scored", total, job.out, report_path, not report.passed, described,
                             [n for n, _ in columns], written, seconds, measured)
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
    for name, metrics in result.quality.items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "examples")
        out.write(f"score: labelled batch ({config.features.label_column}): {name}: {shown} "
                  f"on {metrics['examples']:,} examples\n")
    return result


def _write_json(value, path: str) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value))
