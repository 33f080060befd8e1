"""Online serving from the command line.

    python -m serving serve                      local TF Serving-compatible gRPC server (make serve)
    python -m serving predict --input ROWS       answers for JSON lines / CSV / TFRecords of raw features
                                                 (probability, class and scores, or value: the model's task)
    python -m serving classify --input ROWS      TF Serving's Classify API: the top class and a score per class
    python -m serving regress --input ROWS       TF Serving's Regress API: one value per row
    python -m serving status                     versions loaded by the server, labels in models.config
    python -m serving rollout [--version V] [--label stable|canary]
    python -m serving rollback [--to V] [--retire]
    python -m serving follow-latest              drop the labels: every new push serves
    python -m serving deploy-files               models.config, batching, docker run, Kubernetes

Settings come from the pipeline config (--config FILE, --set serving.port=8600 ...).
Exit status: 0 done, 1 the server refused or failed, 2 a setting or input is wrong.
"""

import argparse
import json
import logging
import sys
from typing import Optional

from contract import cli
from contract.config import PipelineConfig

GIL_SWITCH_SECONDS = 0.0005


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        cli.add_settings_arguments(sub)
        return sub

    command("serve", "run the local gRPC server until Ctrl-C / SIGTERM")
    for name in ("predict", "classify", "regress", "status"):
        sub = command(name, {"predict": "the model's answers (Predict)", "classify": "classes and scores (Classify)",
                             "regress": "values (Regress)", "status": "versions the server has loaded"}[name])
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
    return parser


def _serve(config: PipelineConfig) -> int:
    from serving import model_config
    from serving.server import ModelServer, serve_forever

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
    settings = config.serving
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
            for scores in client.classify_api(examples):
                print(json.dumps({"class": max(scores, key=scores.get),
                                  "scores": {k: round(v, 6) for k, v in scores.items()}}))
        elif args.command == "regress":
            for value in client.regress_api(examples):
                print(json.dumps({"value": round(float(value), 6)}))
        else:
            for answer in client.answers(examples):
                print(json.dumps(answer))
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


@cli.command
def main(argv: Optional[list] = None) -> int:
    cli.prepare()
    args = _parser().parse_args(argv)
    config = cli.load_settings(args)
    cli.log_to_file(config, "serving")  # library logs; the server's own events still go to the terminal
    import grpc

    from serving import deploy, model_config

    try:
        if args.command == "serve":
            return _serve(config)
        if args.command in ("predict", "classify", "regress"):
            return _predict(config, args)
        if args.command == "status":
            return _status(config, args)
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
