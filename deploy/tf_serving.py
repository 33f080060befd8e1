"""TF Serving's own files and flags: models.config, batching parameters, the monitoring page, `docker run`.

The same settings as the local server (`serving:`), so a model behaves the same
on both: batching, poll interval, the Prometheus path (`/monitoring/prometheus/metrics`).
"""


import os
import shlex
from typing import List

from contract.config import PipelineConfig, is_remote
from serving.metrics import METRICS_PATH

GRPC_PORT = 8500
REST_PORT = 8501
ARM_HEADER = "x-serving-arm"
FLEET_CONFIG_DIR = "/etc/tf-serving"  # where the fleet's ConfigMap (models.config, monitoring, batching) is mounted


def kubernetes_path(config: PipelineConfig) -> str:
    return os.path.join(config.serving_dir, "kubernetes.yaml")


def monitoring_path(config: PipelineConfig) -> str:
    return os.path.join(config.serving_dir, "monitoring.config")


def monitoring_config() -> str:
    return f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'


def arm_config_path(config: PipelineConfig, arm: str) -> str:
    return os.path.join(config.serving_dir, f"models-{arm}.config")


def batching_parameters(config: PipelineConfig) -> str:
    serving = config.serving
    return (f"max_batch_size {{ value: {serving.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {serving.batch_timeout_micros} }}\n"
            f"num_batch_threads {{ value: {serving.num_batch_threads} }}\n"
            f"max_enqueued_batches {{ value: 1000 }}\n")


def server_args(config: PipelineConfig, models_config_path: str = "", files_dir: str = "") -> List[str]:
    """tensorflow_model_server flags: the same config files and poll interval as the local server.

    `files_dir`: where the monitoring and batching files are (default serving_dir; a fleet's ConfigMap mount).
    """
    files_dir = files_dir or config.serving_dir
    poll = max(1, round(config.serving.poll_interval_seconds))
    args = [f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}",
            f"--model_config_file={models_config_path or config.models_config_path}",
            f"--monitoring_config_file={os.path.join(files_dir, 'monitoring.config')}",
            f"--model_config_file_poll_wait_seconds={poll}",
            f"--file_system_poll_wait_seconds={poll}",
            "--enable_signature_method_name_check="
            + str(config.serving.enable_signature_method_name_check).lower()]
    if config.serving.enable_batching:
        args += ["--enable_batching=true",
                 f"--batching_parameters_file={os.path.join(files_dir, 'batching_parameters.txt')}"]
    return args


def docker_run(config: PipelineConfig) -> str:
    """One command; the gRPC port is published on loopback only, like the local server's default."""
    mount = [] if is_remote(config.serving_dir) else [
        "-v", f"{config.serving_dir}:{config.serving_dir}:ro"]
    command = ["docker", "run", "--rm", "--name", f"tf-serving-{config.model_name}",
               "-p", f"127.0.0.1:{config.serving.port}:{GRPC_PORT}",
               "-p", f"127.0.0.1:{config.serving.rest_port}:{REST_PORT}", *mount,
               config.serving.tf_serving_image, *server_args(config)]
    return " ".join(shlex.quote(part) for part in command)


