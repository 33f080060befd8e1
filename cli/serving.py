"""`tfx-edge serving`: online serving from the command line (and batch scoring, its offline path).

    tfx-edge serving serve                      local TF Serving-compatible server: gRPC 8500, REST 8501 (make serve)
    tfx-edge serving predict --input ROWS       answers for JSON lines / CSV / TFRecords of raw features
                                                 (probability, class and scores, or value: the model's task)
    tfx-edge serving classify --input ROWS      TF Serving's Classify API: the top class and a score per class
    tfx-edge serving regress --input ROWS       TF Serving's Regress API: one value per row
    tfx-edge serving status                     versions loaded by the server, labels and split in models.config
    tfx-edge serving rollout [--version V] [--label stable|canary] [--weight canary=10] [--shadow canary=5]
    tfx-edge serving promote                    the canary becomes stable; the experiment ends
    tfx-edge serving rollback [--to V] [--retire]   ends a canary, else moves stable back
    tfx-edge serving follow-latest              drop the labels: every new push serves
    tfx-edge serving experiment report          per arm: requests, latency, scores, AUC/accuracy, tests
    tfx-edge serving deploy-files               models.config, batching, docker run, Kubernetes (+ Istio split)
    tfx-edge serving score [--input DATA] --out DIR   batch scoring on Beam RunInference (make score)
    tfx-edge serving sidecar --upstream HOST:PORT  request ids + the request log in front of real TF Serving

Settings come from the pipeline config (--config FILE, --set serving.port=8600 ...).
Exit status: 0 done, 1 the server refused or failed, 2 a setting or input is wrong,
3 `score --strict` refused a batch that failed validation (the report path is printed).
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Optional

from cli import prologue
from contract.config import PipelineConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfx-edge serving", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        prologue.add_settings_arguments(sub)
        return sub

    command("serve", "run the local gRPC and REST server until Ctrl-C / SIGTERM")
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
    sub = command("rollout", "point a label (default stable) at a version (default the newest pushed), "
                             "optionally with a traffic split")
    sub.add_argument("--version", type=int)
    sub.add_argument("--label", choices=["stable", "canary"],
                     help="default stable; with only --weight/--shadow the labels stay where they are")
    sub.add_argument("--weight", action="append", default=[], metavar="LABEL=PERCENT",
                     help="share of requests without a version or label, e.g. canary=10 (stable takes the rest)")
    sub.add_argument("--shadow", metavar="LABEL=PERCENT",
                     help="also send this share of the other arms' requests to LABEL; its answer is only logged")
    sub.add_argument("--sticky-feature", default="",
                     help="tf.Example feature whose value keeps a client on one arm (the key header wins)")
    command("promote", "make the canary stable and end the experiment")
    sub = command("rollback", "end the canary (all traffic to stable); without a canary, move stable back")
    sub.add_argument("--to", type=int, dest="to_version")
    sub.add_argument("--retire", action="store_true",
                     help="also move the bad version out of the model base path for good")
    command("follow-latest", "drop the labels and the experiment; every new push serves on the next poll")
    sub = command("experiment", "the experiment's per-arm report from the server's experiment logs")
    sub.add_argument("action", choices=["report"])
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_argument("--since-minutes", type=float, default=0.0, help="only records this recent (0 = all)")
    command("deploy-files", "write models.config, batching parameters, docker run line, Kubernetes manifests")
    sub = command("sidecar", "gRPC proxy in front of real TF Serving on serving.host:serving.port: request ids and "
                             "the request log (serving.request_log_dir, serving.request_log_sample_rate)")
    sub.add_argument("--upstream", required=True, metavar="HOST:PORT", help="TF Serving's gRPC address")
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


def _sidecar(config: PipelineConfig, upstream: str) -> int:
    from serving.sidecar import Sidecar

    serving = config.serving
    sidecar = Sidecar(upstream, serving.host, serving.port, serving.request_log_dir, serving.request_log_sample_rate)
    port = sidecar.start()
    print(f"request-log sidecar: gRPC {serving.host}:{port} -> {upstream}; logging "
          f"{serving.request_log_sample_rate:g} of requests under {serving.request_log_dir}/<model>", flush=True)
    prologue.wait_for_signal()
    sidecar.stop()
    return 0


def _serve(config: PipelineConfig) -> int:
    from serving import model_config, workers

    model_config.ensure(config.models_config_path, config.model_name, config.model_serving_dir)
    serving = config.serving
    count = workers.worker_count(serving)
    batching = (f"batching max {serving.max_batch_size} / {serving.batch_timeout_micros} us"
                if serving.enable_batching else "no batching")
    if count > 1:
        supervisor = workers.Supervisor(config, count)
        supervisor.start()
        _banner(config, supervisor.serving, f"{count} workers, {batching}")
        supervisor.run()
        print("stopped")
        return 0
    from serving.process import ModelServer, serve_forever

    sys.setswitchinterval(workers.GIL_SWITCH_SECONDS)
    workers.configure_logging()
    server = ModelServer(config.models_config_path, serving, config.features)
    server.start()
    _banner(config, dataclasses.replace(serving, port=server.port, rest_port=server.rest_port), f"1 worker, {batching}")
    serve_forever(server)
    print("stopped")
    return 0


def _banner(config: PipelineConfig, serving, detail: str) -> None:
    print(f"serving {config.models_config_path}: gRPC {serving.host}:{serving.port}, REST http://{serving.host}:"
          f"{serving.rest_port}/v1/models/{config.model_name}, metrics /monitoring/prometheus/metrics "
          f"({detail}; polling every {serving.poll_interval_seconds:g}s); Ctrl-C stops", flush=True)


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

    from serving import experiments, model_config

    with _client(config, args) as client:
        response = client.status()
    for status in response.model_version_status:
        state = get_model_status_pb2.ModelVersionStatus.State.Name(status.state)
        print(f"{config.model_name} version {status.version}: {state}")
    try:
        entry = model_config.model_entry(model_config.read(config.models_config_path), config.model_name)
        labels = ", ".join(f"{k}={v}" for k, v in sorted(entry.version_labels.items()))
        print(f"labels in {config.models_config_path}: {labels or 'none (follows the latest push)'}")
        experiment = experiments.read(experiments.experiments_path(config.models_config_path)).get(config.model_name)
        if experiment is not None:
            print(model_config.describe_experiment(config.model_name, experiment))
    except (FileNotFoundError, model_config.RolloutError):
        pass
    return 0


def _percentages(items, option: str):
    """`label=percent` pairs of --weight/--shadow."""
    values = {}
    for item in items:
        label, sep, percent = item.partition("=")
        try:
            values[label.strip()] = float(percent)
        except ValueError:
            sep = ""
        if not sep or not label.strip():
            raise ValueError(f"{option} {item!r} must look like LABEL=PERCENT, e.g. canary=10")
    return values


def _rollout(config: PipelineConfig, args):
    from serving import model_config
    from serving.experiments import Experiment

    path = config.models_config_path
    experiment = None
    if args.weight or args.shadow or args.sticky_feature:
        shadow = _percentages([args.shadow], "--shadow") if args.shadow else {}
        experiment = Experiment(_percentages(args.weight, "--weight") or {model_config.STABLE: 100.0},
                                args.sticky_feature, *(next(iter(shadow.items())) if shadow else ("", 0.0)))
    if experiment is not None and args.version is None and args.label is None:
        return model_config.set_experiment(path, config.model_name, experiment)
    return model_config.rollout(path, config.model_name, args.version, args.label or model_config.STABLE, experiment)


def _score(config: PipelineConfig, args) -> int:
    from batch import job as batch

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


@prologue.command
def main(argv: Optional[list] = None) -> int:
    prologue.prepare()
    args = build_parser().parse_args(argv)
    config = prologue.load_settings(args)
    prologue.log_to_file(config, "serving")  # library logs; the server's own events still go to the terminal
    import grpc

    from deploy import files as deploy_files
    from deploy.tf_serving import kubernetes_path
    from serving import experiments, model_config

    try:
        if args.command == "serve":
            return _serve(config)
        if args.command in ("predict", "classify", "regress"):
            return _predict(config, args)
        if args.command == "status":
            return _status(config, args)
        if args.command == "score":
            return _score(config, args)
        if args.command == "sidecar":
            return _sidecar(config, args.upstream)
        if args.command == "deploy-files":
            for name, path in deploy_files.write_deployment_files(config).items():
                print(f"wrote {path}")
            return 0
        if args.command == "experiment":
            from serving import experiment_report

            current = experiments.read(experiments.experiments_path(config.models_config_path))
            report = experiment_report.build(config.model_experiment_log_dir, config.model_name,
                                             current.get(config.model_name), args.since_minutes)
            print(json.dumps(report, indent=2) if args.json else experiment_report.render(report))
            return 0 if report["arms"] else 1
        path = config.models_config_path
        model_config.ensure(path, config.model_name, config.model_serving_dir)
        if args.command == "rollout":
            result = _rollout(config, args)
        elif args.command == "promote":
            result = model_config.promote(path, config.model_name)
        elif args.command == "rollback":
            result = model_config.rollback(path, config.model_name, args.to_version, args.retire)
        else:
            result = model_config.follow_latest(path, config.model_name)
        print(result.describe())
        print(f"wrote {path}; servers polling it switch within serving.poll_interval_seconds")
        if os.path.exists(kubernetes_path(config)):
            deploy_files.write_deployment_files(config)
            print(f"rewrote {kubernetes_path(config)} (kubectl apply -f it to move production)")
        return 0
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
