"""ExampleGen + StatisticsGen per data format against the raw read limit of that format, on the same rows.

    python -m bench.formats [--scale 100] [--formats tfrecord,parquet,csv] [--repeats 3]
                            [--out-dir bench/results] [--keep] [--data WORK_DIR]
    make bench-formats

Why: `data.format` lets a pipeline read a data lake's Parquet or a warehouse's CSV where it lives. What
that costs against TFRecords, and how close each format's ExampleGen and StatisticsGen come to what this
machine can read of that format at all, decides whether a team converts or not.

How: `--scale` copies of the bundled taxi data (100: 1.5 M rows; bench.data_stages writes them, jittered,
as gzip TFRecords), then the same rows as Parquet (one file per shard, pyarrow, snappy) and as CSV (one file
per shard, a header row, pyarrow.csv). Writing is not timed. Per repeat and format, first the format's read
limit, then in a fresh child process the project's own ExampleGen for the format (`pipeline.example_gen`:
ImportExampleGen, CsvExampleGen, FileBasedExampleGen with the Parquet executor) and StatisticsGen, with
LocalDagRunner, caching off, Beam in_memory; a stage's time is from its "is running" to its "is finished"
log line, as `make run` prints it.

The read limits, each the fastest plain read of the same files there is here:
- tfrecord: tf.data reading the gzip shards in parallel and `tf.io.parse_example` on the schema's spec;
- parquet: pyarrow reading every file into Arrow tables (its own thread pool);
- csv: pyarrow.csv reading every file into Arrow tables (its own thread pool; faster than the csv module).
`of limit` is the pair's rows/s against half the limit (both stages read every row once).
Results also go to `<out-dir>/formats.json`.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from bench import results as bench_results
from bench.data_stages import REPO_ROOT, build_dataset, child_env, parse_limit
from cli import prologue

DEFAULT_OUT_DIR = os.path.join(REPO_ROOT, "bench", "results")
FORMATS = ("tfrecord", "parquet", "csv")
STAGES = ("ExampleGen", "StatisticsGen")
SPLIT_DIRS = ("Split-train", "Split-eval")


def write_formats(tfrecord_root: str, root: str) -> Dict[str, str]:
    """The TFRecord shards of `tfrecord_root` once more as Parquet and CSV files, shard for shard; format -> root."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    roots = {"tfrecord": tfrecord_root}
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    for data_format in ("parquet", "csv"):
        roots[data_format] = os.path.join(root, data_format)
    names = None
    for split in SPLIT_DIRS:
        for shard in sorted(glob.glob(os.path.join(tfrecord_root, split, "*"))):
            records = [r.numpy() for r in tf.data.TFRecordDataset(shard, compression_type="GZIP")]
            batch = decoder.DecodeBatch(records)
            # Every feature holds at most one value: the lists become scalar columns, a missing value null.
            columns = {}
            for name, column in zip(batch.schema.names, batch.columns):
                if pa.types.is_null(column.type):
                    continue
                scalar = pa.array([values[0] if values else None for values in column.to_pylist()],
                                  column.type.value_type)
                columns[name] = scalar.cast(pa.string()) if pa.types.is_large_binary(scalar.type) else scalar
            names = names or sorted(columns)
            table = pa.table({n: columns[n] for n in names})
            stem = os.path.basename(shard).split(".")[0]
            for data_format, suffix in (("parquet", ".parquet"), ("csv", ".csv")):
                path = os.path.join(roots[data_format], split, stem + suffix)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if data_format == "parquet":
                    pq.write_table(table, path)
                else:
                    pa_csv.write_csv(table, path)
    return roots


def read_limit(data_format: str, root: str, schema_file: str) -> float:
    """Rows/s of the fastest plain read of the format's files here (module docstring)."""
    files = sorted(glob.glob(os.path.join(root, "Split-*", "*")))
    if data_format == "tfrecord":
        return parse_limit(root, schema_file)
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    started, rows = time.monotonic(), 0
    for path in files:
        rows += (pq.read_table(path) if data_format == "parquet" else pa_csv.read_csv(path)).num_rows
    return rows / (time.monotonic() - started)


def run_stages(data_dir: str, work_dir: str, data_format: str, result_path: str) -> int:
    """Child process entry: the format's ExampleGen and StatisticsGen on `data_dir`; timings to `result_path`."""
    import logging

    from absl import logging as absl_logging
    from tfx import v1 as tfx

    from bench.data_stages import counted_examples, stage_config
    from pipeline.pipeline import beam_pipeline_args, example_gen
    from runners.local import ProgressHandler

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s:%(name)s:%(message)s")
    absl_logging.set_verbosity(absl_logging.INFO)
    config = stage_config(data_dir, work_dir, "in_memory", 0, [f"data.format={data_format}"])
    ingest = example_gen(config)
    statistics = tfx.components.StatisticsGen(examples=ingest.outputs["examples"])
    dag = tfx.dsl.Pipeline(
        pipeline_name="formats_bench", pipeline_root=config.pipeline_root, components=[ingest, statistics],
        enable_cache=False, beam_pipeline_args=beam_pipeline_args(config),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path))
    progress = ProgressHandler(sys.stdout, total=len(dag.components))
    logging.getLogger().addHandler(progress)
    sys.argv = sys.argv[:1]  # Beam executors parse sys.argv as absl flags
    tfx.orchestration.LocalDagRunner().run(dag)
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"stage_s": {"ExampleGen": progress.timings[ingest.id],
                               "StatisticsGen": progress.timings["StatisticsGen"]},
                   "counted_examples": counted_examples(config.pipeline_root)}, f)
    return 0


def run_one(data_dir: str, work_dir: str, data_format: str) -> Dict:
    os.makedirs(work_dir)
    result_path, log = os.path.join(work_dir, "result.json"), os.path.join(work_dir, "run.log")
    with open(log, "wb") as out:
        status = subprocess.run(
            [sys.executable, "-c",
             "import sys; from bench.formats import run_stages; sys.exit(run_stages(*sys.argv[1:]))",
             data_dir, work_dir, data_format, result_path],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=child_env(), check=False).returncode
    if status != 0 or not os.path.exists(result_path):
        raise RuntimeError(f"the {data_format} run failed (exit {status}); its log: {log}")
    with open(result_path, encoding="utf-8") as f:
        return json.load(f)


def main(argv=None) -> int:
    prologue.prepare(tensorflow_log_level="2")
    parser = argparse.ArgumentParser(prog="python -m bench.formats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=100, help="copies of the bundled data (100: 1.5 M rows)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR)
    parser.add_argument("--keep", action="store_true", help="keep the data and the runs' logs")
    parser.add_argument("--data", help="the work directory of an earlier --keep run: its data, not written again")
    args = parser.parse_args(argv)
    chosen = [f for f in args.formats.split(",") if f]

    import pyarrow.parquet as pq

    from contract.config import DEFAULT_SCHEMA

    started = time.monotonic()
    if args.data:
        work = args.data
        roots = {f: os.path.join(work, f) for f in FORMATS}
    else:
        work = tempfile.mkdtemp(prefix="bench-formats-")
        build_dataset(os.path.join(work, "tfrecord"), args.scale)
        roots = write_formats(os.path.join(work, "tfrecord"), work)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(os.path.join(roots["parquet"], "*", "*")))
    print(f"{rows:,} rows in {', '.join(chosen)}; written in {time.monotonic() - started:.0f}s (not timed); "
          f"work dir {work}", flush=True)
    runs = tempfile.mkdtemp(prefix="runs-", dir=work)
    measured: Dict[str, Dict[str, List[float]]] = {f: {"limit": [], "ExampleGen": [], "StatisticsGen": []}
                                                   for f in chosen}
    for repeat in range(1, args.repeats + 1):
        for data_format in chosen:
            limit = read_limit(data_format, roots[data_format], DEFAULT_SCHEMA)
            result = run_one(roots[data_format], os.path.join(runs, f"{data_format}-r{repeat}"), data_format)
            counted = sum(result["counted_examples"].values())
            if counted != rows:
                raise RuntimeError(f"{data_format}: StatisticsGen counted {counted:,} rows, not {rows:,}")
            measured[data_format]["limit"].append(limit)
            for stage in STAGES:
                measured[data_format][stage].append(result["stage_s"][stage])
            pair = sum(result["stage_s"].values())
            print(f"repeat {repeat} {data_format:8s} limit {limit:10,.0f} rows/s   ExampleGen "
                  f"{result['stage_s']['ExampleGen']:7.1f}s   StatisticsGen {result['stage_s']['StatisticsGen']:7.1f}s"
                  f"   {rows / pair:9,.0f} rows/s   of limit {rows / pair / (limit / 2):.3f}", flush=True)
    report = {"rows": rows, "repeats": args.repeats, "formats": {}}
    header = (f"{'format':8s} {'read limit rows/s':>26s} {'ExampleGen s':>22s} {'StatisticsGen s':>22s} "
              f"{'rows/s (both)':>26s} {'of limit':>20s} {'vs tfrecord':>20s}")
    lines = [f"ExampleGen + StatisticsGen, {rows:,} rows, Beam in_memory; min / median / max of {args.repeats}",
             header, "-" * len(header)]
    pair_rate = {f: [rows / (e + s) for e, s in zip(m["ExampleGen"], m["StatisticsGen"])] for f, m in measured.items()}
    for data_format, values in measured.items():
        of_limit = [rate / (limit / 2) for rate, limit in zip(pair_rate[data_format], values["limit"])]
        versus = ([rate / base for rate, base in zip(pair_rate[data_format], pair_rate["tfrecord"])]
                  if "tfrecord" in pair_rate else [])
        report["formats"][data_format] = {
            "limit_rows_per_s": bench_results.spread(values["limit"]),
            "example_gen_s": bench_results.spread(values["ExampleGen"]),
            "statistics_gen_s": bench_results.spread(values["StatisticsGen"]),
            "rows_per_s": bench_results.spread(pair_rate[data_format]),
            "of_limit": bench_results.spread(of_limit),
            "vs_tfrecord": bench_results.spread(versus) if versus else None}
        lines.append(
            f"{data_format:8s} {bench_results.format_spread(bench_results.spread(values['limit']), ',.0f'):>26s} "
            f"{bench_results.format_spread(bench_results.spread(values['ExampleGen']), '.1f'):>22s} "
            f"{bench_results.format_spread(bench_results.spread(values['StatisticsGen']), '.1f'):>22s} "
            f"{bench_results.format_spread(bench_results.spread(pair_rate[data_format]), ',.0f'):>26s} "
            f"{bench_results.format_spread(bench_results.spread(of_limit), '.3f'):>20s} "
            f"{bench_results.format_spread(bench_results.spread(versus), '.2f') if versus else '-':>20s}")
    print("\n".join(lines))
    print(f"results: {bench_results.write(args.out_dir, 'formats', report)}")
    if args.keep or args.data:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
