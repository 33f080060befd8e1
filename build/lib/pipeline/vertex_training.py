"""Trainer and Tuner on Vertex AI training pools, from the same pipeline definition (`vertex.enabled`).

`tfx.extensions.google_cloud_ai_platform` Trainer/Tuner run the same module
files as a Vertex AI CustomJob. The job's `worker_pool_specs` follow
`training.strategy`:

- default, mirrored: pool 0 only, the chief (with `vertex.accelerator_*` GPUs,
  which mirrored training uses all of);
- parameter_server: pool 0 chief (the coordinator), pool 1 `training.workers`
  workers, pool 2 `training.parameter_servers` parameter servers. Vertex AI
  sets TF_CONFIG in every replica; `models/strategies.py` then serves ps and
  worker tasks and coordinates from the chief.

The Tuner's search runs on the chief pool alone: its trials are small and
sequential.
"""

from typing import Any, Dict, List

from contract.config import PipelineConfig, require


def check(config: PipelineConfig) -> None:
    require(config, "Training on Vertex AI (vertex.enabled)", required=("gcp.project", "gcp.region", "gcp.image"))


def _pool(config: PipelineConfig, machine_type: str, replicas: int, accelerators: bool = False) -> Dict[str, Any]:
    machine: Dict[str, Any] = {"machine_type": machine_type}
    if accelerators and config.vertex.accelerator_count:
        machine.update(accelerator_type=config.vertex.accelerator_type,
                       accelerator_count=config.vertex.accelerator_count)
    # TFX replaces the container command with its own executor entry point; the image is ours.
    return {"machine_spec": machine, "replica_count": replicas, "container_spec": {"image_uri": config.gcp.image}}


def worker_pool_specs(config: PipelineConfig) -> List[Dict[str, Any]]:
    """Vertex AI worker pools for the Trainer: [chief] or [chief, workers, parameter servers]."""
    chief = _pool(config, config.vertex.machine_type, 1, accelerators=True)
    if config.training.strategy != "parameter_server":
        return [chief]
    return [chief,
            _pool(config, config.vertex.machine_type, config.training.workers),
            _pool(config, config.vertex.ps_machine_type, config.training.parameter_servers)]


def _job_config(config: PipelineConfig, args_key: str, pools: List[Dict[str, Any]]) -> Dict[str, Any]:
    from tfx import v1 as tfx

    job_spec: Dict[str, Any] = {"worker_pool_specs": pools}
    if config.gcp.service_account:
        job_spec["service_account"] = config.gcp.service_account
    return {
        tfx.extensions.google_cloud_ai_platform.ENABLE_VERTEX_KEY: True,
        tfx.extensions.google_cloud_ai_platform.VERTEX_REGION_KEY: config.gcp.region,
        args_key: {"project": config.gcp.project, "job_spec": job_spec},
    }


def trainer_custom_config(config: PipelineConfig) -> Dict[str, Any]:
    """The keys the Vertex AI Trainer reads from custom_config, added to the module's own."""
    from tfx import v1 as tfx

    check(config)
    return _job_config(config, tfx.extensions.google_cloud_ai_platform.TRAINING_ARGS_KEY, worker_pool_specs(config))


def tuner_custom_config(config: PipelineConfig) -> Dict[str, Any]:
    from tfx import v1 as tfx

    check(config)
    return _job_config(config, tfx.extensions.google_cloud_ai_platform.experimental.TUNING_ARGS_KEY,
                       [_pool(config, config.vertex.machine_type, 1, accelerators=True)])


def components():
    """(Trainer, Tuner) classes that run as Vertex AI custom jobs."""
    from tfx import v1 as tfx

    return tfx.extensions.google_cloud_ai_platform.Trainer, tfx.extensions.google_cloud_ai_platform.Tuner
