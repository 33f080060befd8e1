"""Edge model vs SavedModel: size, quality, and per-example latency at batch 1 from raw features.

    python -m bench.edge_latency [--config FILE] [--set k=v ...] [--model DIR] [--examples N]
    make bench-edge

Needs a pushed edge version (run the pipeline first: `make run`). Reads the raw eval
split of the configured data, in its format (`--config` of a Parquet or CSV dataset works
too). Latency is per example, one at a time, *including* raw-feature preprocessing: the
edge runtime gets a raw record (dict) and encodes it itself (a text column: tokenized,
its n-grams looked up and weighed); the SavedModel's `serving_default` gets one
serialized raw tf.Example and runs parsing and the Transform graph in-process. The SavedModel is the baseline
measured in the same run; targets: int8 <= 0.35x float size, binary AUC drop <= 0.002,
end-to-end <= 50 us per example. Quality is the task's headline metric (`Task.headline`): AUC,
accuracy or RMSE. `measure` is shared with `bench.tasks`.
"""

import argparse
import glob
import time
from typing import Dict, List

from bench import results as bench_results
from cli import prologue


def per_example_seconds(fn, items, repeat: int) -> float:
    for item in items[:20]:
        fn(item)
    start = time.perf_counter()
    for _ in range(repeat):
        for item in items:
            fn(item)
    return (time.perf_counter() - start) / (repeat * len(items))


def measure(version_dir: str, serialized: List[bytes], spec, repeat: int, rounds: int = 1) -> Dict:
    """Sizes, quality of SavedModel / float / int8 on `serialized` raw examples, latencies (min/median/max of
    `rounds` rounds of `repeat` passes each)."""
    import tensorflow as tf

    from edge import export
    from edge.runtime import EdgeModel

    edge = {variant: EdgeModel(version_dir, variant=variant) for variant in ("int8", "float")}
    manifest = edge["int8"].manifest
    loaded = tf.saved_model.load(manifest["source_model"])
    serve = loaded.signatures["serving_default"]
    records = export.raw_records(serialized, spec)
    labels = export.labels_of(serialized, spec)
    reference = export.serving_predictions(loaded, serialized, spec)
    quality = {"SavedModel": spec.task_type.quality(labels, reference)}
    for variant, model in edge.items():
        quality[variant] = spec.task_type.quality(labels, model.predict(records), reference)

    def saved_model_one(example):
        serve(examples=tf.constant([example]))

    encoder = edge["int8"].encoder

    def encode(record):
        """What the runtime does to a raw record before the interpreter: text tokenized and weighed too."""
        encoder.encode(record)
        encoder.encode_bags(record)

    timings: Dict[str, List[float]] = {"SavedModel": [], "float": [], "int8": [], "encode": []}
    for _ in range(rounds):
        timings["SavedModel"].append(per_example_seconds(saved_model_one, serialized, 1))
        for variant, model in edge.items():
            timings[variant].append(per_example_seconds(model.predict_one, records, repeat))
        timings["encode"].append(per_example_seconds(encode, records, repeat))
    seconds = {k: bench_results.spread(v) for k, v in timings.items()}
    return {"version_dir": version_dir, "task": spec.task, "examples": len(serialized), "io_type": manifest["io_type"],
            "sizes": {v: manifest["files"][v]["bytes"] for v in ("float", "int8")},
            "sizes_without_metadata": {v: manifest["sizes"][f"{v}_without_metadata"] for v in ("float", "int8")},
            "weights": {v: manifest["sizes"][f"{v}_weights"] for v in ("float", "int8")},
            "quality": quality, "seconds": seconds}


def main(argv=None) -> int:
    prologue.prepare(tensorflow_log_level="2")
    parser = argparse.ArgumentParser(prog="python -m bench.edge_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model", help="edge version or model directory (default: <edge_dir>/<model_name>)")
    parser.add_argument("--examples", type=int, default=2000, help="eval examples for quality and latency")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --repeat passes: min / median / max")
    args = parser.parse_args(argv)

    import formats
    from contract.config import load_config
    from edge.runtime import resolve_version_dir
    from formats.spans import latest_pattern

    config = load_config(args.config, args.set)
    version_dir = resolve_version_dir(args.model or config.model_edge_dir)
    spec = config.features
    patterns = config.split_patterns  # one hash-split pattern: its files hold the eval examples too
    # In the data's own format (formats/, as its ExampleGen converts it); the latest span of a span pattern.
    files = sorted(glob.glob(latest_pattern(config.input_base, patterns.get("eval", next(iter(patterns.values()))))))
    serialized = formats.read_all(formats.get(config.data.format), files)[:args.examples]
    result = measure(version_dir, serialized, spec, args.repeat, args.rounds)
    sizes, quality, seconds = result["sizes"], result["quality"], result["seconds"]
    key, label = spec.task_type.headline.key, spec.task_type.headline.label
    versus, versus_label = spec.task_type.versus_saved_model.key, spec.task_type.versus_saved_model.label
    print(f"edge model: {version_dir} (io {result['io_type']}); {len(serialized)} raw eval examples")
    print(f"size      float {sizes['float']:9d} B   int8 {sizes['int8']:9d} B   "
          f"int8/float {sizes['int8'] / sizes['float']:.2f}x (target <= 0.35x)")
    bare = result["sizes_without_metadata"]
    print(f"  without metadata: float {bare['float']:9d} B   int8 {bare['int8']:9d} B   "
          f"int8/float {bare['int8'] / bare['float']:.2f}x")
    weights = result["weights"]
    print(f"  weights only:     float {weights['float']:9d} B   int8 {weights['int8']:9d} B   "
          f"int8/float {weights['int8'] / weights['float']:.2f}x")
    change = quality["SavedModel"][key] - quality["int8"][key]
    print(f"{label:9s} SavedModel {quality['SavedModel'][key]:.4f}   float {quality['float'][key]:.4f}   "
          f"int8 {quality['int8'][key]:.4f}   {'drop' if spec.task_type.headline.higher_is_better else 'change'} "
          f"{change:+.4f}" + (" (target <= 0.002)" if key == "auc" else ""))
    print(f"{versus_label}: float {quality['float'][versus]:.4f}, int8 {quality['int8'][versus]:.4f}")
    print(f"latency per example, batch 1, raw features in (preprocessing included); min / median / max of "
          f"{args.rounds} rounds:")
    base = seconds["SavedModel"]["median"]
    micro = {name: {k: v * 1e6 for k, v in values.items()} for name, values in seconds.items()}
    for name in ("SavedModel", "float", "int8"):
        text = name if name == "SavedModel" else f"edge {name} TFLite"
        ratio = "(baseline)" if name == "SavedModel" else \
            f"{base / seconds[name]['median']:6.1f}x faster than SavedModel (medians)"
        print(f"  {text:18s} {bench_results.format_spread(micro[name], '9.1f')} us   {ratio}")
    print(f"  of which raw-feature encoding (edge/encoder.py): {bench_results.format_spread(micro['encode'], '.1f')} "
          "us   (target end-to-end <= 50 us)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
