"""A fleet on Vertex AI schedules (`tfx-edge fleet vertex`): one compiled pipeline and one schedule per model.

Per tenant model: the compiled PipelineJob (runners/kubeflow_v2.py, the same compile as `pipeline compile`)
and an `aiplatform_v1.CreateScheduleRequest` (cron from the fleet file, one run at a time) as JSON, built and
validated offline: the cron parses, the PipelineSpec loads as a KFP proto, display names are unique.
Create them with `gcloud`/the API (`ScheduleServiceClient.create_schedule(request=...)`) from CI.
"""

import json
import os
from typing import Any, Dict, List

from croniter import croniter

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
