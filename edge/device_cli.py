"""Edge runtime CLI (numpy + a TFLite interpreter; no TensorFlow).

    python -m edge predict MODEL INPUT [--variant int8|float] [--edgetpu] [--limit N]
    python -m edge bench   MODEL INPUT [--variant int8|float] [--edgetpu] [--repeat N]
    python -m edge check   MODEL

MODEL is an edge version directory (<edge_dir>/<model_name>/<version>) or a model
directory (its latest version). INPUT holds raw records: JSON lines or CSV with a
header, `-` for stdin. predict prints one JSON line per record (binary: probability
and decision; multiclass: class and scores per class; regression: value); bench prints the
per-example latency including raw-feature preprocessing; check verifies the files
against the manifest and reports Edge TPU readiness. Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

from edge.encoder import FeatureError


def _load(args):
    from edge.runtime import EdgeModel

    return EdgeModel(args.model, variant=args.variant, edgetpu=args.edgetpu)


def _warn_columns(model, records) -> None:
    unused, absent = model.encoder.unused_and_absent(records[0].keys())
    if absent:
        sys.stderr.write(f"edge: the first record has no {', '.join(absent)}; missing values get Transform's "
                         "defaults\n")
    if unused:
        sys.stderr.write(f"edge: ignoring fields the model does not use: {', '.join(unused)}\n")


def predict(args) -> int:
    from edge.runtime import read_records

    model = _load(args)
    records = read_records(args.input, args.limit)
    _warn_columns(model, records)
    for number, record in enumerate(records, 1):
        try:
            answer = model.answer(record)
        except FeatureError as error:
            raise FeatureError(f"{args.input}: record {number}: {error}") from None
        print(json.dumps(answer))
    return 0


def bench(args) -> int:
    from edge.runtime import describe, read_records

    model = _load(args)
    records = read_records(args.input, args.limit)
    for record in records[:50]:  # warm-up
        model.predict_one(record)
    timings = []
    for _ in range(args.repeat):
        for record in records:
            start = time.perf_counter()
            model.predict_one(record)
            timings.append(time.perf_counter() - start)
    timings.sort()
    mean = sum(timings) / len(timings)
    print(describe(model, {"examples": len(timings)}))
    print(f"per example (preprocessing + interpreter): mean {mean * 1e6:.1f} us, "
          f"p50 {timings[len(timings) // 2] * 1e6:.1f} us, p99 {timings[int(len(timings) * 0.99)] * 1e6:.1f} us")
    return 0


def check(args) -> int:
    from edge import edgetpu
    from contract import tasks
    from edge.runtime import read_manifest, resolve_version_dir

    version_dir = resolve_version_dir(args.model)
    manifest = read_manifest(version_dir)
    problems = []
    for name, entry in manifest["files"].items():
        path = os.path.join(version_dir, entry["path"])
        if not os.path.exists(path):
            problems.append(f"{entry['path']} is missing")
            continue
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != entry["sha256"]:
                problems.append(f"{entry['path']} does not match its sha256 in the manifest")
    print(f"{version_dir}: model {manifest['model_name']} version {manifest['version']}, "
          f"from {manifest.get('source_model', '?')}")
    metrics = manifest.get("metrics", {})
    task = tasks.task(manifest["task"])
    headline, versus = task.headline, task.versus_saved_model
    for variant in ("float", "int8"):
        entry = manifest["files"][variant]
        print(f"  {variant:5s} {entry['bytes']:8d} bytes  {headline.label} "
              f"{metrics.get(variant, {}).get(headline.key, float('nan')):.4f}"
              f"  {versus.label} {versus.format(metrics.get(variant, {}).get(versus.key))}")
    print(f"  SavedModel {headline.label} {metrics.get('saved_model', {}).get(headline.key, float('nan')):.4f} on "
          f"{manifest.get('eval_examples', '?')} eval examples")
    print("  files: " + ("all match the manifest" if not problems else "; ".join(problems)))
    readiness = edgetpu.check(model_path=os.path.join(version_dir, manifest["files"]["int8"]["path"]))
    print("  " + readiness.report().replace("\n", "\n  "))
    return 1 if problems or not readiness.ready else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edge", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("predict", "score raw records"), ("bench", "latency per example"),
                           ("check", "verify files and Edge TPU readiness")):
        command = commands.add_parser(name, help=helptext)
        command.add_argument("model", help="edge version directory, or model directory (latest version)")
        if name == "check":
            continue
        command.add_argument("input", help="raw records: JSON lines or CSV with header; - for stdin")
        command.add_argument("--variant", default="int8", choices=("int8", "float"))
        command.add_argument("--edgetpu", action="store_true",
                             help="run through the Edge TPU delegate (libedgetpu.so.1), CPU if unavailable")
        command.add_argument("--limit", type=int, default=0, help="first N records only")
        if name == "bench":
            command.add_argument("--repeat", type=int, default=3)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"predict": predict, "bench": bench, "check": check}[args.command](args)
    except (FeatureError, FileNotFoundError, ValueError, ImportError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
