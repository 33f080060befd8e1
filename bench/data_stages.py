"""How StatisticsGen and Transform scale with data, Beam in_memory vs multi_processing.

    python -m bench.data_stages [--scales 1,10,50] [--modes in_memory,multi_processing]
                                [--workers 2] [--variant KEY=VALUE[,KEY=VALUE]] [--variant-scales 1]
                                [--pipelines stages[,whole]] [--repeats 1] [--out-dir bench/results]
                                [--keep]

Why: the bundled taxi data (15,000 examples) is far smaller than what the
pipeline will see in production. The data stages are the ones whose cost grows
with the data (Tuner and Trainer run a fixed number of steps), and the Beam
DirectRunner mode (`beam.direct_running_mode`) is the one knob a local run has
to make them faster. This benchmark shows how their time grows with the number
of examples and whether multi_processing pays off, before anyone trusts a run
on a bigger data set to finish in time.

How: for each scale N it writes N copies of the bundled train and eval splits
as gzip TFRecords in several shards. The first copy is the bundled data as is;
later copies get jittered fares, tips, distances, durations and coordinates
and a shifted trip_start_timestamp, so no two examples are byte-identical and
statistics and vocabularies see realistic variety. Writing the data is timed
separately and never counted. For each (scale, mode) a pipeline of this
project's own components (`create_components`) cut down to ImportExampleGen,
StatisticsGen, ImportSchemaGen and Transform runs in its own subprocess with
LocalDagRunner, a fresh pipeline root and SQLite MLMD, caching off and the Beam
args of `beam_pipeline_args`, so each run starts cold. LocalDagRunner runs one
component at a time; a stage's time is from its "Component X is running." log
line to its "is finished." line (driver, executor and publishing included).

Reading the output: `stats s` and `transform s` are the two stages, `total s`
their sum and `ex/s` all examples (train + eval, both stages read both splits)
divided by it. `vs in_memory` > 1 means that mode processed examples faster
than in_memory at the same scale. `time vs Nx` is the total divided by the
total of the same mode at the smallest scale: 10 for 10x the data means cost
grows linearly; much less means fixed start-up cost (Beam, TensorFlow graph
tracing, worker start) still dominates. Each cell is one run on a machine that
may be shared: repeat before trusting differences of a few percent.

`--repeats N` runs every (scale, mode, variant) N times on the same generated data, each repeat with
its own limit measured just before its runs (the limit drifts with the machine as the stages do), and
ends with a min / median / max table: total seconds, `of limit`, and `per ex vs Nx`, the time per
example against that of the same mode at the smallest scale in the same repeat (1.00x = linear cost;
the targets ask for at least 25 % of the limit and at most 1.2x per example).

The limit: at each scale, before the stages run, the same TFRecords are read with tf.data (parallel
gzip reads) and parsed with `tf.io.parse_example` on the schema's feature spec, nothing else. That rate
is what this machine allows any reader of these files; `of limit` is a run's ex/s against half of it,
since StatisticsGen and Transform each read every example once.

`--pipelines stages,whole` also runs, per (scale, mode), the whole pipeline `make run` runs (gate,
Tuner, Trainer, Evaluator, Pusher, edge export: every component of `create_pipeline`) on the same data,
in its own fresh output directory, and prints a second table: each component's time from the same log
lines, the sum, and the sum against the smallest scale. Tuner and Trainer run a fixed number of steps,
so at scale the whole pipeline's growth comes from the stages that read every example (StatisticsGen,
Transform, Evaluator, the edge export's accuracy check).

`--variant transform.statistics=true` (repeatable; settings as `--set` takes them) runs every (scale,
mode), or only `--variant-scales`, once more with those settings, right after the default run: the
before/after of one setting measured in the same benchmark run.

Pipeline logs live in a temporary directory, deleted at the end unless
`--keep` or a run failed. Results also go to `<out-dir>/data_stages.json`.
"""

import argparse
import dataclasses
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

from bench import results as bench_results
from cli import prologue
from contract.config import PipelineConfig

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench", "results")
# The components kept from `create_components`; ExampleValidator is dropped,
# it only compares statistics with the schema and its cost does not grow with data.
STAGE_IDS = ("ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "Transform")
TIMED_STAGES = ("StatisticsGen", "Transform")
SPLITS = {"train": "Split-train", "eval": "Split-eval"}
# Enough shards that readers can split the input, few enough to stay cheap at 1x.
EXAMPLES_PER_SHARD = 25_000
MIN_SHARDS = 4
LOG_TAIL_LINES = 30
SECONDS_PER_WEEK = 7 * 24 * 3600
# stages: ImportExampleGen through Transform (STAGE_IDS); whole: every component `make run` runs.
PIPELINES = ("stages", "whole")


# --- Data generation -------------------------------------------------------

def _read_split(split_dir: str):
    """The bundled split as (serialized records in file order, decoded Arrow RecordBatch)."""
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    files = sorted(glob.glob(os.path.join(split_dir, "*")))
    if not files:
        raise FileNotFoundError(f"no TFRecords in {split_dir}")
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    return records, example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)


def _replace_values(column, transform):
    """List column `column` with its present values replaced by `transform(values)`.

    Missing features are null lists; they keep their offsets and stay missing.
    """
    import pyarrow as pa

    values = column.flatten().to_numpy(zero_copy_only=False)
    new_values = pa.array(transform(values).astype(values.dtype, copy=False))
    return pa.LargeListArray.from_arrays(column.offsets, new_values, mask=column.is_null())


def jittered_copy(batch, copy_index: int, rng):
    """Copy number `copy_index` (>= 1) of the bundled examples, none equal to its original.

    Fare and tips share one factor so the label (tips > 20% of fare) keeps its
    share of positives; trip_seconds follows trip_miles so speeds stay plausible;
    coordinates move by about 100 m. The timestamp moves by whole weeks, which
    keeps trip_start_hour and trip_start_day true, and by a different number of
    weeks per copy, so copies of one trip never share it (trip_start_month is
    left as it was, off by up to a year at 50x; no stage relates the two).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    # A feature missing from every example decodes as a null-typed column, which
    # the encoder rejects; leaving it out writes the same examples.
    columns = {name: column for name, column in zip(batch.schema.names, batch.columns)
               if not pa.types.is_null(column.type)}

    def per_row_factor(sigma: float):
        return np.exp(rng.normal(0.0, sigma, batch.num_rows))

    def scale(name: str, factor) -> None:
        # Each present value takes the factor of the example (row) it belongs to.
        f = factor[pc.list_parent_indices(columns[name]).to_numpy()]
        columns[name] = _replace_values(
            columns[name], lambda v: np.rint(v * f) if np.issubdtype(v.dtype, np.integer) else v * f)

    price, distance = per_row_factor(0.05), per_row_factor(0.05)
    for name, factor in (("fare", price), ("tips", price), ("trip_miles", distance),
                         ("trip_seconds", distance)):
        scale(name, factor)
    for name in ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"):
        columns[name] = _replace_values(columns[name], lambda v: v + rng.normal(0.0, 1e-3, v.shape))
    columns["trip_start_timestamp"] = _replace_values(
        columns["trip_start_timestamp"], lambda v: v + copy_index * SECONDS_PER_WEEK)
    return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))


def write_scaled_split(source_dir: str, out_dir: str, scale: int, seed: int) -> int:
    """Writes `scale` copies of one bundled split to gzip shards in `out_dir`; returns the example count.

    Columns are jittered with numpy and re-encoded by tfx_bsl's C++ encoder,
    so there is no per-example Python beyond handing records to the writer.
    Every shard gets a slice of every copy, so shards are alike in size and content.
    """
    import numpy as np
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    records, batch = _read_split(source_dir)
    total = len(records) * scale
    shards = max(MIN_SHARDS, math.ceil(total / EXAMPLES_PER_SHARD))
    os.makedirs(out_dir, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = [tf.io.TFRecordWriter(os.path.join(out_dir, f"data_tfrecord-{i:05d}-of-{shards:05d}.gz"), options)
               for i in range(shards)]
    encoder = example_coder.RecordBatchToExamplesEncoder()
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, len(records), shards + 1).astype(int)
    try:
        for copy_index in range(scale):
            # The first copy is the bundled data byte for byte.
            copy = records if copy_index == 0 else encoder.encode(jittered_copy(batch, copy_index, rng))
            for writer, start, end in zip(writers, bounds[:-1], bounds[1:]):
                for record in copy[start:end]:
                    writer.write(record)
    finally:
        for writer in writers:
            writer.close()
    return total


def build_dataset(root: str, scale: int, seed: int = 0) -> Dict[str, int]:
    """`scale`x the bundled data laid out like it (Split-train/, Split-eval/); split -> examples."""
    from contract.config import bundled_taxi_root

    source = bundled_taxi_root()
    return {split: write_scaled_split(os.path.join(source, folder), os.path.join(root, folder), scale,
                                      seed=seed * 1000 + i)
            for i, (split, folder) in enumerate(SPLITS.items())}


def parse_limit(data_dir: str, schema_file: str) -> float:
    """Examples/s of the hardware's floor: read every shard with tf.data and `tf.io.parse_example` it.

    The same gzip TFRecords and the schema's feature spec, parallel reads and parses, nothing else: no
    stage that reads these files can go faster on this machine.
    """
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import schema_utils

    with open(schema_file, encoding="utf-8") as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    files = sorted(glob.glob(os.path.join(data_dir, "Split-*", "*")))
    dataset = (tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE)
               .batch(1024).map(lambda x: tf.io.parse_example(x, spec), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    started, count = time.monotonic(), 0
    for batch in dataset:
        count += int(tf.shape(next(iter(batch.values())))[0])
    return count / (time.monotonic() - started)


# --- One pipeline run (in a child process) ---------------------------------

def stage_config(data_dir: str, work_dir: str, mode: str, workers: int, overrides: Sequence[str] = ()):
    from contract.config import load_config

    return load_config(None, [
        f"output_dir={work_dir}",
        f"data.input_base={data_dir}",
        "enable_cache=false",
        f"beam.direct_running_mode={mode}",
        f"beam.direct_num_workers={workers}",
        *overrides,
    ])


def stage_pipeline(config):
    """This project's components up to Transform, wired exactly as in the full pipeline."""
    from tfx import v1 as tfx

    from pipeline.pipeline import beam_pipeline_args, create_components, read_prior_runs

    components = [c for c in create_components(config, read_prior_runs(config)) if c.id in STAGE_IDS]
    missing = set(STAGE_IDS) - {c.id for c in components}
    if missing:
        raise RuntimeError(f"create_components no longer has components {sorted(missing)}")
    # Ordering-only edges to dropped components (Transform waits for the AnomalyGate) go with them.
    for component in components:
        for upstream in list(component.upstream_nodes):
            if upstream.id not in STAGE_IDS:
                component.remove_upstream_node(upstream)
    return tfx.dsl.Pipeline(
        pipeline_name="data_stages_bench",
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path),
        beam_pipeline_args=beam_pipeline_args(config),
    )


def counted_examples(pipeline_root: str) -> Dict[str, int]:
    """Examples per split as StatisticsGen counted them: proof the run read all the data."""
    import tensorflow_data_validation as tfdv

    counts = {}
    for path in glob.glob(os.path.join(pipeline_root, "StatisticsGen", "statistics", "*", "Split-*",
                                       "FeatureStats.pb")):
        split = os.path.basename(os.path.dirname(path))[len("Split-"):]
        stats = tfdv.load_stats_binary(path)
        counts[split] = int(stats.datasets[0].num_examples)
    return counts


def run_stages(data_dir: str, work_dir: str, mode: str, workers: str, kind: str, result_path: str,
               *overrides: str) -> int:
    """Child process entry: runs the `kind` pipeline (see PIPELINES), writes timings to `result_path` as JSON."""
    import logging

    from absl import logging as absl_logging
    from tfx import v1 as tfx

    # Reused so the timings mean exactly what `runners.local` prints per component.
    from runners.local import ProgressHandler

    # Timestamps let a reader of the log see where inside a stage the time went.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s:%(name)s:%(message)s")
    absl_logging.set_verbosity(absl_logging.INFO)
    config = stage_config(data_dir, work_dir, mode, int(workers), overrides)
    if kind == "whole":
        from pipeline.pipeline import create_pipeline, read_prior_runs

        dag = create_pipeline(config, read_prior_runs(config))
    else:
        dag = stage_pipeline(config)
    progress = ProgressHandler(sys.stdout, total=len(dag.components))
    logging.getLogger().addHandler(progress)
    # Beam executors parse sys.argv as absl flags; this process's arguments are not theirs.
    sys.argv = sys.argv[:1]
    tfx.orchestration.LocalDagRunner().run(dag)
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"stage_s": progress.timings, "counted_examples": counted_examples(config.pipeline_root),
                   "beam_args": dag.beam_pipeline_args}, f)
    return 0


# --- Orchestration, in the parent process -----------------------------------

@dataclasses.dataclass
class Run:
    scale: int
    mode: str
    workers: Optional[int]
    examples: Dict[str, int]
    log: str
    variant: str = ""  # "" = the defaults; else the --variant's settings
    pipeline: str = "stages"  # one of PIPELINES
    repeat: int = 1  # which of --repeats; runs compare only within their repeat
    limit_examples_per_s: Optional[float] = None  # the read + parse limit measured for this repeat
    stage_s: Optional[Dict[str, float]] = None  # every component's time, as LocalDagRunner logged it
    status: str = "ok"
    statistics_gen_s: float = float("nan")
    transform_s: float = float("nan")
    example_gen_s: float = float("nan")
    subprocess_wall_s: float = float("nan")
    counted_examples: Optional[Dict[str, int]] = None
    beam_args: Optional[List[str]] = None
    examples_per_s: float = float("nan")
    vs_in_memory: Optional[float] = None
    time_vs_base: Optional[float] = None
    per_example_vs_base: Optional[float] = None  # time per example against the smallest scale's: 1.0 = linear

    @property
    def total_examples(self) -> int:
        return sum(self.examples.values())

    @property
    def mode_label(self) -> str:
        return self.mode if self.workers is None else f"{self.mode}/{self.workers}"

    @property
    def total_s(self) -> float:
        if self.pipeline == "whole":
            return sum(self.stage_s.values()) if self.stage_s else float("nan")
        return self.statistics_gen_s + self.transform_s

    @property
    def of_limit(self) -> Optional[float]:
        """ex/s against half the limit: both stages read every example, so that is the pair's floor."""
        if self.status != "ok" or not self.limit_examples_per_s:
            return None
        return self.examples_per_s / (self.limit_examples_per_s / 2)


def _tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def child_env() -> Dict[str, str]:
    # The log file keeps TensorFlow's warnings, which the terminal (see `main`) does not show.
    # multi_processing workers are fresh interpreters; they import the installed package (pip install -e .).
    return dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="1")


def run_one(data_dir: str, work_root: str, scale: int, mode: str, workers: int, examples: Dict[str, int],
            variant: Sequence[str] = (), kind: str = "stages", repeat: int = 1,
            limit: Optional[float] = None) -> Run:
    name = (f"{scale}x-{mode}" + (f"-v{abs(hash(tuple(variant))) % 10_000}" if variant else "")
            + ("" if kind == "stages" else f"-{kind}") + ("" if repeat == 1 else f"-r{repeat}"))
    work_dir = os.path.join(work_root, name)
    os.makedirs(work_dir)
    run = Run(scale=scale, mode=mode, workers=None if mode == "in_memory" else workers,
              examples=examples, log=os.path.join(work_dir, "run.log"), variant=" ".join(variant), pipeline=kind,
              repeat=repeat, limit_examples_per_s=limit)
    result_path = os.path.join(work_dir, "result.json")
    started = time.monotonic()
    with open(run.log, "wb") as log:
        status = subprocess.run(
            [sys.executable, "-c",
             "import sys; from bench.data_stages import run_stages; sys.exit(run_stages(*sys.argv[1:]))",
             data_dir, work_dir, mode, str(workers), kind, result_path, *variant],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=child_env(), check=False).returncode
    run.subprocess_wall_s = time.monotonic() - started
    if status != 0 or not os.path.exists(result_path):
        run.status = f"failed (exit {status})"
        return run
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    stages = run.stage_s = result["stage_s"]
    run.statistics_gen_s, run.transform_s = (stages[stage] for stage in TIMED_STAGES)
    run.example_gen_s = stages.get("ImportExampleGen", float("nan"))
    run.counted_examples, run.beam_args = result["counted_examples"], result["beam_args"]
    if run.counted_examples != examples:
        run.status = f"wrong count {run.counted_examples}"
    run.examples_per_s = run.total_examples / run.total_s
    return run


def compare(runs: List[Run]) -> None:
    """Fills each run's speed relative to in_memory and its cost relative to the smallest scale.

    Only runs of the same repeat are compared: they ran minutes apart, on the machine as it was then.
    """
    ok = [r for r in runs if r.status == "ok"]
    base_scale = min((r.scale for r in ok), default=None)
    for run in ok:
        same = [r for r in ok if r.repeat == run.repeat and r.pipeline == run.pipeline]
        memory = next((r for r in same if r.scale == run.scale and r.mode == "in_memory" and not r.variant), None)
        if memory is not None:
            run.vs_in_memory = run.examples_per_s / memory.examples_per_s
        base = next((r for r in same if r.scale == base_scale and r.mode == run.mode and r.variant == run.variant),
                    None)
        if base is not None:
            run.time_vs_base = run.total_s / base.total_s
            run.per_example_vs_base = run.time_vs_base / (run.total_examples / base.total_examples)


def _spread(values: Sequence[float], fmt: str) -> str:
    """min / median / max, or the one value when there is one."""
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return bench_results.format_spread(bench_results.spread(values), fmt)


def format_table(runs: List[Run], generation_s: Dict[int, float], limits: Dict[int, List[float]]) -> str:
    ok_scales = [r.scale for r in runs if r.status == "ok"]
    base = f"{min(ok_scales)}x" if ok_scales else "base"

    def num(value: Optional[float], fmt: str) -> str:
        return "-" if value is None or math.isnan(value) else format(value, fmt)

    def ratio(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.2f}x"

    repeated = any(r.repeat > 1 for r in runs)
    header = (f"{'scale':>5s} {'examples':>9s} {'mode':<19s} " + (f"{'rep':>3s} " if repeated else "")
              + f"{'stats s':>8s} {'transform s':>11s} "
              f"{'total s':>8s} {'ex/s':>8s} {'of limit':>8s} {'vs in_memory':>12s} {'time vs ' + base:>11s}")
    stage_runs = [r for r in runs if r.pipeline == "stages"]
    # A whole-pipeline-only run gets no empty stage table.
    lines = ["StatisticsGen + Transform, Beam DirectRunner (stage times from LocalDagRunner logs)",
             header, "-" * len(header)] if stage_runs else []
    for r in stage_runs:
        mode = r.mode_label
        share = r.of_limit
        row = (f"{str(r.scale) + 'x':>5s} {r.total_examples:>9,d} {mode:<19s} "
               + (f"{r.repeat:>3d} " if repeated else "") +
               f"{num(r.statistics_gen_s, '.1f'):>8s} {num(r.transform_s, '.1f'):>11s} {num(r.total_s, '.1f'):>8s} "
               f"{num(r.examples_per_s, ',.0f'):>8s} {'-' if share is None else f'{share:.1%}':>8s} "
               f"{ratio(r.vs_in_memory):>12s} {ratio(r.time_vs_base):>11s}")
        lines.append(row + (f"  [{r.variant}]" if r.variant else "")
                     + ("" if r.status == "ok" else f"  {r.status}: {r.log}"))
    lines.append("Raw read + tf.io.parse_example limit (tf.data, same files): " + ", ".join(
        f"{scale}x {_spread(rates, ',.0f')} ex/s" for scale, rates in limits.items())
                 + ("; min / median / max over the repeats" if repeated else "")
                 + "; `of limit`: ex/s vs half that (the two stages each read every example)")
    whole = [r for r in runs if r.pipeline == "whole"]
    if whole:
        lines += ["", format_whole_table(whole, base, repeated)]
    if repeated:
        lines += ["", format_summary(runs, base)]
    lines.append("Data generation (not counted above): " + ", ".join(
        f"{scale}x {seconds:.1f}s" for scale, seconds in generation_s.items()))
    return "\n".join(lines)


# The whole pipeline's table: the components whose cost can grow with the data, then the rest.
WHOLE_COLUMNS = (("StatisticsGen", "stats"), ("Transform", "transform"), ("Tuner", "tuner"),
                 ("Trainer", "trainer"), ("Evaluator", "evaluator"), ("EdgeExport", "edge"))


def format_whole_table(runs: List[Run], base: str, repeated: bool = False) -> str:
    header = (f"{'scale':>5s} {'examples':>9s} {'mode':<19s} " + (f"{'rep':>3s} " if repeated else "")
              + " ".join(f"{title + ' s':>11s}" for _, title in WHOLE_COLUMNS)
              + f" {'other s':>8s} {'total s':>8s} {'time vs ' + base:>11s}")
    lines = ["Whole pipeline (every component of `make run`; times from the same LocalDagRunner logs)",
             header, "-" * len(header)]
    for r in runs:
        mode = r.mode_label
        if r.status != "ok":
            lines.append(f"{str(r.scale) + 'x':>5s} {r.total_examples:>9,d} {mode:<19s}  {r.status}: {r.log}")
            continue
        named = [r.stage_s.get(component, float("nan")) for component, _ in WHOLE_COLUMNS]
        other = r.total_s - sum(v for v in named if not math.isnan(v))
        lines.append(f"{str(r.scale) + 'x':>5s} {r.total_examples:>9,d} {mode:<19s} "
                     + (f"{r.repeat:>3d} " if repeated else "")
                     + " ".join(f"{v:>11.1f}" for v in named)
                     + f" {other:>8.1f} {r.total_s:>8.1f} "
                     + (f"{r.time_vs_base:>10.2f}x" if r.time_vs_base is not None else f"{'-':>11s}"))
    return "\n".join(lines)


def format_summary(runs: List[Run], base: str) -> str:
    """min / median / max over the repeats of each (pipeline, scale, mode, variant) that succeeded."""
    groups: Dict[Tuple[str, int, str, str], List[Run]] = {}
    for r in runs:
        if r.status == "ok":
            groups.setdefault((r.pipeline, r.scale, r.mode_label, r.variant), []).append(r)
    header = (f"{'pipeline':<8s} {'scale':>5s} {'mode':<19s} {'n':>2s} {'total s':>22s} "
              f"{'of limit':>22s} {'per ex vs ' + base:>20s}")
    lines = ["Over the repeats (min / median / max)", header, "-" * len(header)]
    for (kind, scale, mode, variant), group in groups.items():
        # A whole-pipeline run reads every example many more times than twice: no share of the limit.
        shares = [r.of_limit * 100 for r in group if r.of_limit is not None] if kind == "stages" else []
        per_example = [r.per_example_vs_base for r in group if r.per_example_vs_base is not None]
        lines.append(f"{kind:<8s} {str(scale) + 'x':>5s} {mode:<19s} {len(group):>2d} "
                     f"{_spread([r.total_s for r in group], '.1f'):>22s} "
                     f"{_spread(shares, '.1f') + ('%' if shares else ''):>22s} "
                     f"{_spread(per_example, '.2f') + ('x' if per_example else ''):>20s}"
                     + (f"  [{variant}]" if variant else ""))
    return "\n".join(lines)


def positive_ints(text: str) -> List[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,10,50, got {text!r}")
    return values


def pipelines(text: str) -> List[str]:
    kinds = [v.strip() for v in text.split(",") if v.strip()]
    unknown = set(kinds) - set(PIPELINES)
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"unknown pipelines {sorted(unknown)}; use {','.join(PIPELINES)}")
    return kinds


def modes(text: str) -> List[str]:
    modes = [v.strip() for v in text.split(",") if v.strip()]
    unknown = set(modes) - {"in_memory", "multi_processing", "multi_threading"}
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"unknown modes {sorted(unknown)}; use in_memory, multi_processing")
    return modes


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data_stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=positive_ints, default=[1, 10, 50],
                        help="copies of the bundled data, comma-separated (default 1,10,50)")
    parser.add_argument("--modes", type=modes, default=["in_memory", "multi_processing"],
                        help="Beam DirectRunner modes, comma-separated (default in_memory,multi_processing)")
    parser.add_argument("--workers", type=int, default=2,
                        help="beam.direct_num_workers for the modes other than in_memory (default 2)")
    parser.add_argument("--pipelines", type=pipelines, default=["stages"],
                        help="stages (StatisticsGen + Transform) and/or whole (all of make run), comma-separated")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every (scale, mode, variant), each with its own limit (min/median/max)")
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="where data_stages.json goes")
    parser.add_argument("--keep", action="store_true", help="keep the generated data, pipeline outputs and logs")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="also run every (scale, mode) with these settings, e.g. transform.statistics=true")
    parser.add_argument("--variant-scales", type=positive_ints, default=None,
                        help="scales the variants run at (default: all)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    variants = [[]] + [[v for v in text.split(",") if v] for text in args.variant]

    # Generating data imports TensorFlow here too; its start-up chatter would bury the progress lines.
    prologue.prepare()
    started = time.monotonic()
    work_root = tempfile.mkdtemp(prefix="data_stages-")
    print(f"Work directory: {work_root}", flush=True)
    runs: List[Run] = []
    generation_s: Dict[int, float] = {}
    limits: Dict[int, List[float]] = {}
    schema_file = PipelineConfig().schema_file
    for scale in args.scales:
        data_dir = os.path.join(work_root, f"data-{scale}x")
        t0 = time.monotonic()
        examples = build_dataset(data_dir, scale)
        generation_s[scale] = time.monotonic() - t0
        print(f"{scale}x: wrote {examples} examples in {generation_s[scale]:.1f}s", flush=True)
        limits[scale] = []
        for repeat in range(1, args.repeats + 1):
            limit = parse_limit(data_dir, schema_file)
            limits[scale].append(limit)
            print(f"  {f'repeat {repeat}: ' if args.repeats > 1 else ''}raw read + parse limit: "
                  f"{limit:,.0f} examples/s", flush=True)
            # One after the other: side by side the runs would compete for the CPUs they are timed on.
            for kind, mode, variant in ((k, m, v) for k in args.pipelines for m in args.modes for v in variants
                                        if not v or args.variant_scales is None or scale in args.variant_scales):
                print(f"  {'' if kind == 'stages' else kind + ' pipeline, '}{mode} {' '.join(variant)} ...",
                      flush=True)
                run = run_one(data_dir, work_root, scale, mode, args.workers, examples, variant, kind, repeat, limit)
                runs.append(run)
                if run.status == "ok":
                    print(f"    StatisticsGen {run.statistics_gen_s:.1f}s, Transform {run.transform_s:.1f}s"
                          + (f", all components {run.total_s:.1f}s" if kind == "whole" else ""), flush=True)
                else:
                    print(f"    {run.status}\n--- last {LOG_TAIL_LINES} lines of {run.log} ---\n{_tail(run.log)}",
                          file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(data_dir)  # 50x is hundreds of MB; the runs that needed it are done.
    compare(runs)
    wall_s = time.monotonic() - started

    failed = [r for r in runs if r.status != "ok"]
    report = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m bench.data_stages " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu_count": os.cpu_count(),
        "benchmark_wall_s": wall_s,
        "data_generation_s": {str(k): v for k, v in generation_s.items()},
        "repeats": args.repeats,
        "parse_limit_examples_per_s": {str(k): v for k, v in limits.items()},
        "runs": [{**dataclasses.asdict(r), "total_examples": r.total_examples, "total_s": r.total_s,
                  "of_limit": r.of_limit} for r in runs],
    }
    json_path = bench_results.write(args.out_dir, "data_stages", report)
    print(format_table(runs, generation_s, limits))
    print(f"Benchmark wall time: {wall_s:.0f}s")
    print(f"Results: {json_path}")
    if args.keep or failed:
        print(f"Pipeline outputs and logs kept in {work_root}")
    else:
        shutil.rmtree(work_root)
        print("Pipeline outputs and logs deleted (--keep keeps them)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
