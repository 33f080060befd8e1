"""Edge model vs SavedModel: size, AUC, and per-example latency at batch 1 from raw features.

    python -m bench.edge_latency [--config FILE] [--set k=v ...] [--model DIR] [--examples N]
    make bench-edge

Needs a pushed edge version (run the pipeline first: `make run`). Reads the raw eval
split of the configured data. Latency is per example, one at a time, *including*
raw-feature preprocessing: the edge runtime gets a raw record (dict) and encodes it
itself; the SavedModel's `serving_default` gets one serialized raw tf.Example and
runs parsing and the Transform graph in-process. The SavedModel is the baseline
measured in the same run; targets: int8 <= 0.3x float size, AUC drop <= 0.002,
end-to-end <= 50 us per example.
"""

import os


import argparse
import glob
import time

import numpy as np

from contract import cli


def per_example_seconds(fn, items, repeat: int) -> float:
    for item in items[:20]:
        fn(item)
    start = time.perf_counter()
    for _ in range(repeat):
        for item in items:
            fn(item)
    return (time.perf_counter() - start) / (repeat * len(items))


def main(argv=None) -> int:
    cli.prepare(tensorflow_log_level="2")
    parser = argparse.ArgumentParser(prog="python -m bench.edge_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model", help="edge version or model directory (default: <edge_dir>/<model_name>)")
    parser.add_argument("--examples", type=int, default=2000, help="eval examples for AUC and latency")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from edge import export
    from edge.runtime import EdgeModel, resolve_version_dir
    from contract.config import load_config

    config = load_config(args.config, args.set)
    version_dir = resolve_version_dir(args.model or config.model_edge_dir)
    spec = config.features
    patterns = config.split_patterns  # one hash-split pattern: its files hold the eval examples too
    pattern = os.path.join(config.input_base, patterns.get("eval", next(iter(patterns.values()))))
    files = sorted(glob.glob(pattern))
    serialized = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(args.examples):
        serialized.append(record.numpy())
    records = export.raw_records(serialized, spec)
    labels = export.labels_of(serialized, spec)

    edge = {variant: EdgeModel(version_dir, variant=variant) for variant in ("int8", "float")}
    manifest = edge["int8"].manifest
    loaded = tf.saved_model.load(manifest["source_model"])
    serve = loaded.signatures["serving_default"]
    reference = export.serving_predictions(loaded, serialized)
    scores = {v: m.predict(records) for v, m in edge.items()}

    def saved_model_one(example):
        serve(examples=tf.constant([example]))

    seconds = {"SavedModel": per_example_seconds(saved_model_one, serialized, 1)}
    for variant, model in edge.items():
        seconds[variant] = per_example_seconds(model.predict_one, records, args.repeat)
    encode = per_example_seconds(edge["int8"].encoder.encode, records, args.repeat)

    sizes = {v: manifest["files"][v]["bytes"] for v in ("float", "int8")}
    auc = {"SavedModel": export.auc(labels, reference), **{v: export.auc(labels, s) for v, s in scores.items()}}
    agree = {v: float(np.mean((s > 0.5) == (reference > 0.5))) for v, s in scores.items()}
    print(f"edge model: {version_dir} (io {manifest['io_type']}); {len(serialized)} raw eval examples")
    print(f"size      float {sizes['float']:9d} B   int8 {sizes['int8']:9d} B   "
          f"int8/float {sizes['int8'] / sizes['float']:.2f}x (target <= 0.30x)")
    bare = manifest.get("sizes", {})
    if "int8_without_metadata" in bare:
        small, large = bare["int8_without_metadata"], bare["float_without_metadata"]
        print(f"  without metadata: float {large:9d} B   int8 {small:9d} B   int8/float {small / large:.2f}x")
    print(f"AUC       SavedModel {auc['SavedModel']:.4f}   float {auc['float']:.4f}   int8 {auc['int8']:.4f}   "
          f"drop {auc['SavedModel'] - auc['int8']:+.4f} (target <= 0.002)")
    print(f"decisions agreeing with SavedModel: float {agree['float']:.2%}, int8 {agree['int8']:.2%}")
    print("latency per example, batch 1, raw features in (preprocessing included):")
    base = seconds["SavedModel"]
    for name in ("SavedModel", "float", "int8"):
        label = name if name == "SavedModel" else f"edge {name} TFLite"
        ratio = "(baseline)" if name == "SavedModel" else f"{base / seconds[name]:6.1f}x faster than SavedModel"
        print(f"  {label:18s} {seconds[name] * 1e6:9.1f} us   {ratio}")
    print(f"  of which raw-feature encoding (edge/encoder.py): {encode * 1e6:.1f} us   (target end-to-end <= 50 us)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
