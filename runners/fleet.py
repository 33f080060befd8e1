"""`tfx-edge fleet ...`: the fleet commands (fleet/), plus the Vertex AI schedules, which need this layer's compile.

    tfx-edge fleet vertex --fleet FILE --out DIR [--only NAME ...]

Per tenant model: the compiled PipelineJob (runners/kubeflow_v2.py, the same compile as `pipeline compile`)
and an `aiplatform_v1.CreateScheduleRequest` (cron from the fleet file, one run at a time) as JSON, built and
validated offline: the cron parses, the PipelineSpec loads as a KFP proto, display names are unique.
Create them with `gcloud`/the API (`ScheduleServiceClient.create_schedule(request=...)`) from CI.
"""

import argparse
import json
import os
import sys
from typing import Any, Dict, List

from croniter import croniter

from contract import cli
from contract.errors import ConfigError


def schedule_request(model, job: Dict[str, Any]):
    """The CreateScheduleRequest for one compiled model: its cron, its PipelineJob, at most one run at a time."""
    from google.cloud import aiplatform_v1

    config = model.config
    if not model.schedule or not croniter.is_valid(model.schedule):
        raise ConfigError(f"{model.name}: Vertex AI schedules need a cron expression in schedule, "
                          f"got {model.schedule!r}")
    parent = f"projects/{config.gcp.project}/locations/{config.gcp.region}"
    pipeline_job = aiplatform_v1.PipelineJob.from_json(json.dumps({
        "displayName": model.name, "pipelineSpec": job["pipelineSpec"], "runtimeConfig": job["runtimeConfig"],
        "labels": {"tenant": model.tenant, "model": model.model},
        "serviceAccount": config.gcp.service_account}), ignore_unknown_fields=False)
    schedule = aiplatform_v1.Schedule(
        display_name=model.name, cron=f"TZ=UTC {model.schedule}", max_concurrent_run_count=1,
        create_pipeline_job_request=aiplatform_v1.CreatePipelineJobRequest(parent=parent, pipeline_job=pipeline_job))
    return aiplatform_v1.CreateScheduleRequest(parent=parent, schedule=schedule)


def validate(requests: List[Any]) -> None:
    """Offline checks of built requests: cron, PipelineSpec as a KFP proto, unique display names."""
    from google.cloud import aiplatform_v1
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    names = [r.schedule.display_name for r in requests]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"Vertex AI schedules: duplicate display names {duplicates}")
    for request in requests:
        cron = request.schedule.cron.split(" ", 1)[1] if request.schedule.cron.startswith("TZ=") else \
            request.schedule.cron
        if not croniter.is_valid(cron):
            raise ConfigError(f"{request.schedule.display_name}: cron {request.schedule.cron!r} does not parse")
        job = request.schedule.create_pipeline_job_request.pipeline_job
        spec = json_format.ParseDict(json_format.MessageToDict(aiplatform_v1.PipelineJob.pb(job).pipeline_spec),
                                     pipeline_spec_pb2.PipelineSpec())
        if not spec.root.dag.tasks:
            raise ConfigError(f"{request.schedule.display_name}: the compiled PipelineSpec has no tasks")


def build_schedules(fleet, out_dir: str, names=None) -> List[str]:
    """Compiles and writes `<out>/<name>.pipeline.json` and `<out>/<name>.schedule.json` per model."""
    from fleet.config import find
    from runners import kubeflow_v2

    models = find(fleet.models, names)
    requests, paths = [], []
    for model in models:
        job = kubeflow_v2.compile_pipeline(model.config, os.path.join(out_dir, f"{model.name}.pipeline.json"))
        requests.append(schedule_request(model, job))
    validate(requests)
    from google.cloud import aiplatform_v1

    for model, request in zip(models, requests):
        path = os.path.join(out_dir, f"{model.name}.schedule.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(aiplatform_v1.CreateScheduleRequest.to_json(request))
        paths.append(path)
    return paths


@cli.command
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["vertex"]:
        from fleet.__main__ import main as fleet_main

        return fleet_main(argv)
    cli.prepare()
    parser = argparse.ArgumentParser(prog="tfx-edge fleet vertex", description="per tenant model: the compiled PipelineJob and a Vertex AI CreateScheduleRequest (cron), "
                                                 "built and validated offline")
    parser.add_argument("--fleet", required=True, metavar="FILE")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    args = parser.parse_args(argv[1:])
    from fleet.config import load_fleet

    for path in build_schedules(load_fleet(args.fleet), args.out, args.only):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
