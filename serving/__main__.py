"""Online serving from the command line.

    python -m serving serve                      local TF Serving-compatible gRPC server (make serve)
    python -m serving predict --input ROWS       scores for JSON lines / CSV / TFRecords of raw features
    python -m serving classify --input ROWS      class ids (1 = big tipper)
    python -m serving status                     versions loaded by the server, labels in models.config
    python -m serving rollout [--version V] [--label stable|canary]
    python -m serving rollback [--to V] [--retire]
    python -m serving follow-latest              drop the labels: every new push serves
    python -m serving deploy-files               models.config, batching, docker run, Kubernetes
    python -m serving score [--input DATA] --out DIR   batch scoring on Beam RunInference (make score)

Settings come from the pipeline config (--config FILE, --set serving.port=8600 ...).
Exit status: 0 done, 1 the server refused or failed, 2 a setting or input is wrong,
3 `score --strict` refused a batch that failed validation (the report path is printed).
"""

import os

# Before TensorFlow is imported: the exported model was built with tf_keras; quiet C++ logs.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Optional  # noqa: E402

from pipeline.config import ConfigError, PipelineConfig, load_config  # noqa: E402

GIL_SWITCH_SECONDS = 0.0005


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", metavar="FILE", help="YAML settings (pipeline/configs/default.yaml)")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a setting, e.g. --set serving.port=8600")
        return sub

    command("serve", "run the local gRPC server until Ctrl-C / SIGTERM")
    for name in ("predict", "classify", "status"):
        sub = command(name, {"predict": "scores from the server", "classify": "class ids from the server",
                             "status": "versions the server has loaded"}[name])
        sub.add_argument("--target", help="host:port of TF Serving or the local server "
                                          "(default serving.host:serving.port)")
        sub.add_argument("--label", default="", help="version label to ask for, e.g. stable")
        sub.add_argument("--version", type=int, help="version number to ask for")
        if name != "status":
            sub.add_argument("--input", required=True, help=".jsonl/.csv of raw features or TFRecords of tf.Example")
            sub.add_argument("--timeout", type=float, default=10.0, help="deadline per call, seconds")
            sub.add_argument("--retries", type=int, default=3, help="retries on UNAVAILABLE")
    sub = command("rollout", "point a label (default stable) at a version (default the newest pushed)")
    sub.add_argument("--version", type=int)
    sub.add_argument("--label", default="stable", choices=["stable", "canary"])
    sub = command("rollback", "move stable back (default: to the previous version)")
    sub.add_argument("--to", type=int, dest="to_version")
    sub.add_argument("--retire", action="store_true",
                     help="also move the bad version out of the model base path for good")
    command("follow-latest", "drop the labels; every new push serves on the next poll")
    command("deploy-files", "write models.config, batching parameters, docker run line, Kubernetes manifests")
    sub = command("score", "score a file offline with pushed models (Beam RunInference), write ids + predictions")
    sub.add_argument("--input", default="",
                     help="TFRecord file/dir/glob of tf.Example (gzip or plain), or CSV files with a header "
                          "(default: the bundled taxi data's unlabelled split)")
    sub.add_argument("--out", required=True, help="output directory (local or gs://)")
    sub.add_argument("--model", action="append", default=[], dest="models", metavar="MODEL",
                     help="latest (default), a pushed version, a label (stable, canary) or a path to a SavedModel "
                          "or an edge version; repeat to score with several models in one pass")
    sub.add_argument("--id", action="append", default=[], dest="id_columns", metavar="COLUMN",
                     help="column passed through to the output (repeatable); default: source file and record")
    sub.add_argument("--format", default="parquet", dest="output_format", choices=["parquet", "csv", "tfrecord"])
    sub.add_argument("--shards", type=int, default=0, help="output files (0: the runner decides)")
    sub.add_argument("--strict", action="store_true", help="do not score a batch that fails validation (exit 3)")
    sub.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    sub.add_argument("--runner", default="direct", choices=["direct", "dataflow"],
                     help="direct: beam.direct_running_mode on this machine; dataflow: dataflow.* and gcp.*")
    sub.add_argument("--report-dir", default="", help="validation report (default <output_dir>/batch_reports/...)")
    sub.add_argument("--training-stats", default="",
                     help="FeatureStats.pb to measure drift against (default: the newest in ML Metadata)")
    return parser


def _serve(config: PipelineConfig) -> int:
    from serving import model_config
    from serving.server import ModelServer, ServerSettings, serve_forever

    # A request crosses threads twice (gRPC handler -> batcher -> handler); with Python's default 5 ms
    # GIL switch interval each crossing can wait that long, which dwarfs a 1-2 ms model call.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    # Loads, unloads and bad configs are what an operator watches for: one timestamped line each.
    events = logging.StreamHandler(sys.stdout)
    events.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    server_log = logging.getLogger("absl")
    server_log.addHandler(events)
    server_log.setLevel(logging.INFO)
    server_log.propagate = False
    model_config.ensure(config.models_config_path, config.model_name, config.model_serving_dir)
    settings = ServerSettings.from_config(config.serving)
    server = ModelServer(config.models_config_path, settings)
    port = server.start()
    batching = (f"batching max {settings.max_batch_size} / {settings.batch_timeout_micros} us"
                if settings.enable_batching else "no batching")
    print(f"serving {config.models_config_path} on {settings.host}:{port} ({batching}; "
          f"polling every {settings.poll_interval_seconds:g}s); Ctrl-C stops", flush=True)
    serve_forever(server)
    print("stopped")
    return 0


def _client(config: PipelineConfig, args):
    from serving.client import ServingClient

    target = args.target or f"{config.serving.host}:{config.serving.port}"
    return ServingClient(target, config.model_name, timeout_seconds=getattr(args, "timeout", 10.0),
                         retries=getattr(args, "retries", 3), version=args.version, label=args.label,
                         batch_size=config.serving.max_batch_size)


def _predict(config: PipelineConfig, args) -> int:
    from serving.client import read_examples

    examples = read_examples(args.input, config.schema_file)
    with _client(config, args) as client:
        if args.command == "classify":
            for value in client.classify(examples):
                print(json.dumps({"class": int(value)}))
        else:
            for value in client.predict(examples):
                print(json.dumps({"probability": round(float(value), 6)}))
    return 0


def _status(config: PipelineConfig, args) -> int:
    from tensorflow_serving.apis import get_model_status_pb2

    from serving import model_config

    with _client(config, args) as client:
        response = client.status()
    for status in response.model_version_status:
        state = get_model_status_pb2.ModelVersionStatus.State.Name(status.state)
        print(f"{config.model_name} version {status.version}: {state}")
    try:
        entry = model_config.model_entry(model_config.read(config.models_config_path), config.model_name)
        labels = ", ".join(f"{k}={v}" for k, v in sorted(entry.version_labels.items()))
        print(f"labels in {config.models_config_path}: {labels or 'none (follows the latest push)'}")
    except (FileNotFoundError, model_config.RolloutError):
        pass
    return 0


def _score(config: PipelineConfig, args) -> int:
    from serving import batch

    # TFDV and Beam log at INFO/WARNING, and a failed job's worker error at length; the job's own lines,
    # its report and one error line are the output.
    logging.getLogger().setLevel(logging.CRITICAL)
    job = batch.ScoreJob(**{name: getattr(args, name) for name in batch.ScoreJob.__dataclass_fields__})
    try:
        result = batch.score(config, job)
    except batch.ScoringJobError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return batch.EXIT_REFUSED if result.status == "refused" else 0


def main(argv: Optional[list] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, args.set)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import grpc

    from serving import deploy, model_config

    try:
        if args.command == "serve":
            return _serve(config)
        if args.command in ("predict", "classify"):
            return _predict(config, args)
        if args.command == "status":
            return _status(config, args)
        if args.command == "score":
            return _score(config, args)
        if args.command == "deploy-files":
            for name, path in deploy.write_deployment_files(config).items():
                print(f"wrote {path}")
            return 0
        path = config.models_config_path
        model_config.ensure(path, config.model_name, config.model_serving_dir)
        if args.command == "rollout":
            result = model_config.rollout(path, config.model_name, args.version, args.label)
        elif args.command == "rollback":
            result = model_config.rollback(path, config.model_name, args.to_version, args.retire)
        else:
            result = model_config.follow_latest(path, config.model_name)
        print(result.describe())
        print(f"wrote {path}; servers polling it switch within serving.poll_interval_seconds")
        return 0
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
