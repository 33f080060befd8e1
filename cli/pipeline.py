"""One command line for every runner.

    tfx-edge pipeline run [--runner local|beam] [--wait] [--config FILE] [--set KEY=VALUE ...]
    tfx-edge pipeline compile [--runner kubeflow_v2] [--out pipeline.json] [--config FILE] [--set ...]
    tfx-edge pipeline submit [--runner kubeflow_v2] [--out pipeline.json] [--param NAME=JSON ...] [--wait]
    tfx-edge pipeline dataflow-args [--config FILE] [--set ...]

Every command builds its settings the same way: defaults, then --config, then
--set. Exit status: 0 done, 1 the pipeline or Google Cloud failed, 2 a setting
is missing or wrong, 3 the anomaly gate stopped the run, 4 another run of the
same pipeline is under way (`run --wait` waits for it).
"""

import argparse
import os
import textwrap
import time
import traceback
from typing import Optional

from cli import prologue
from contract.errors import ConfigError
from runners import local

EPILOG = """\
settings: every KEY=VALUE names a field of pipeline/config.py, e.g.
  --set training.train_steps=500 --set beam.direct_running_mode=multi_processing
  --set gcp.project=my-project --set gcp.region=us-central1 --set gcp.image=REGISTRY/taxi:TAG
  --set pipeline_root=gs://BUCKET/taxi/root --set serving_dir=gs://BUCKET/taxi/serving
  --set data.input_base=gs://BUCKET/taxi/data --set dataflow.temp_location=gs://BUCKET/tmp
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfx-edge pipeline", description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the pipeline on this machine",
        description="Run the pipeline on this machine: progress per component, then a summary read from MLMD. "
                    "Logs go to <log_dir>/run-<time>.log.")
    run.add_argument("--runner", choices=["local", "beam"], default="local",
                     help="local: TFX LocalDagRunner (default). beam: TFX BeamDagRunner; with both, the components' "
                          "Beam jobs use beam.direct_running_mode and beam.direct_num_workers")
    prologue.add_settings_arguments(run)
    run.add_argument("--wait", action="store_true",
                     help="when another run of this pipeline (same pipeline_name and ML Metadata store) is under "
                          "way, wait for it to end, then run; without --wait such a run is refused (exit 4)")
    run.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")

    for name, text in (("compile", "write the Vertex AI Pipelines / KFP v2 PipelineJob JSON"),
                       ("submit", "compile, then start the pipeline on Vertex AI Pipelines")):
        sub = commands.add_parser(
            name, help=text, description=textwrap.fill(
                text[0].upper() + text[1:] + ". Needs gcp.image and gs:// pipeline_root, serving_dir and "
                "data.input_base; compiling uploads the module wheels to <pipeline_root>/_wheels." +
                (" Submitting also needs gcp.project, gcp.region and Application Default Credentials."
                 if name == "submit" else "")),
            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--runner", choices=["kubeflow_v2"], default="kubeflow_v2",
                         help="kubeflow_v2: TFX KubeflowV2DagRunner (the only compiler; default)")
        sub.add_argument("--out", default="pipeline.json", metavar="FILE",
                         help="where to write the compiled PipelineJob JSON (default: pipeline.json)")
        prologue.add_settings_arguments(sub)
    submit = commands.choices["submit"]
    submit.add_argument("--param", action="append", default=[], metavar="NAME=JSON",
                        help="runtime parameter for this job, e.g. --param 'train_args={\"num_steps\": 5000}'; "
                             "names: train_args, eval_args (default: training.* as compiled)")
    submit.add_argument("--wait", action="store_true", help="wait until the Vertex AI job ends")

    args = commands.add_parser(
        "dataflow-args", help="print the Beam options that send Beam jobs to Dataflow",
        description=textwrap.fill(
            "Print the Beam options, one per line, that send the components' Beam jobs to Dataflow "
            "(from gcp.* and dataflow.*). Vertex AI runs use them with --set kubeflow.use_dataflow=true."),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    prologue.add_settings_arguments(args)
    return parser


def _compile(config, out_path: str) -> Optional[dict]:
    """Compiles with the wheel builds' output in a log file rather than on the terminal.

    Returns None after reporting a failure other than a ConfigError.
    """
    from runners import kubeflow_v2

    kubeflow_v2.check(config)  # before any log file: a settings error needs no log
    os.makedirs(config.log_dir, exist_ok=True)
    log_path = os.path.join(config.log_dir, time.strftime("compile-%Y%m%d-%H%M%S.log"))
    with local.output_to_log(log_path) as terminal:
        try:
            job = kubeflow_v2.compile_pipeline(config, out_path)
        except ConfigError:
            raise
        except Exception as error:
            traceback.print_exc()  # into the log: fd 2 is the log file here
            terminal.write(f"FAILED to compile: {local.one_line_reason(error)}\nFull traceback: {log_path}\n")
            return None
    runtime = job["runtimeConfig"].get("parameterValues", {})
    print(f"Compiled {config.pipeline_name} for Vertex AI Pipelines: {out_path}\n"
          f"  image:      {config.gcp.image}\n"
          f"  root:       {config.pipeline_root}\n"
          f"  parameters: {', '.join(f'{k}={v}' for k, v in sorted(runtime.items()))}\n"
          f"  log:        {log_path}")
    return job


@prologue.command
def main(argv=None) -> int:
    prologue.prepare(tensorflow_log_level="2")  # `run` and `compile` send fd 2 to their log file
    args = build_parser().parse_args(argv)
    config = prologue.load_settings(args)
    if args.command == "run":
        if args.print_config:
            print(config.to_yaml())
            return 0
        if args.runner == "beam":
            from runners import beam

            return beam.run(config, wait=args.wait)
        return local.run(config, wait=args.wait)
    if args.command == "dataflow-args":
        from pipeline.dataflow import dataflow_beam_args

        print("\n".join(dataflow_beam_args(config)))
        return 0
    from runners import kubeflow_v2

    parameters = kubeflow_v2.parse_parameters(getattr(args, "param", []))
    if args.command == "submit":
        kubeflow_v2.check_submit(config)  # before compiling uploads anything
    if _compile(config, args.out) is None:
        return 1
    if args.command == "submit":
        print(f"Submitted: {kubeflow_v2.submit(config, args.out, parameters, wait=args.wait)}")
    return 0
