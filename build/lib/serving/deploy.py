"""Files that run the pushed models on real TF Serving: docker and Kubernetes.

`python -m serving deploy-files` writes them next to the model base paths
(`<serving_dir>/`):

- `models.config`: created if missing (follow latest), never overwritten here,
  because rollout/rollback own it;
- `batching_parameters.txt`: TF Serving's BatchingParameters text proto, from
  the `serving:` settings the local server uses too;
- `docker-run.sh`: one `docker run` of the `tensorflow/serving` image matching
  the installed tensorflow-serving-api;
- `kubernetes.yaml`: Deployment, Service and HorizontalPodAutoscaler.

Paths inside the container are the same as on the host (the serving directory is
mounted at its own path), so models.config holds one base path that is right in
both places; on Kubernetes, serving_dir is a gs:// path TF Serving reads directly.
"""

import os
import shlex
from typing import Dict, List

import yaml
from tfx.dsl.io import fileio

from contract.config import PipelineConfig, is_remote
from serving import model_config

GRPC_PORT = 8500
REST_PORT = 8501


def batching_parameters(config: PipelineConfig) -> str:
    serving = config.serving
    return (f"max_batch_size {{ value: {serving.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {serving.batch_timeout_micros} }}\n"
            f"num_batch_threads {{ value: {serving.num_batch_threads} }}\n"
            f"max_enqueued_batches {{ value: 1000 }}\n")


def server_args(config: PipelineConfig) -> List[str]:
    """tensorflow_model_server flags: the same config files and poll interval as the local server."""
    poll = max(1, round(config.serving.poll_interval_seconds))
    args = [f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}",
            f"--model_config_file={config.models_config_path}",
            f"--model_config_file_poll_wait_seconds={poll}",
            f"--file_system_poll_wait_seconds={poll}"]
    if config.serving.enable_batching:
        args += ["--enable_batching=true",
                 f"--batching_parameters_file={os.path.join(config.serving_dir, 'batching_parameters.txt')}"]
    return args


def docker_run(config: PipelineConfig) -> str:
    """One command; the gRPC port is published on loopback only, like the local server's default."""
    mount = [] if is_remote(config.serving_dir) else [
        "-v", f"{config.serving_dir}:{config.serving_dir}:ro"]
    command = ["docker", "run", "--rm", "--name", f"tf-serving-{config.model_name}",
               "-p", f"127.0.0.1:{config.serving.port}:{GRPC_PORT}", *mount,
               config.serving.tf_serving_image, *server_args(config)]
    return " ".join(shlex.quote(part) for part in command)


def kubernetes_manifests(config: PipelineConfig, replicas: int = 2, max_replicas: int = 10,
                         target_cpu_percent: int = 70) -> List[Dict]:
    name = f"tf-serving-{config.model_name}"
    labels = {"app": name}
    container = {
        "name": "tf-serving",
        "image": config.serving.tf_serving_image,
        "args": server_args(config),
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "http", "containerPort": REST_PORT}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        # TF Serving answers REST on the model status path once the model is AVAILABLE (after warm-up).
        "readinessProbe": {"httpGet": {"path": f"/v1/models/{config.model_name}", "port": REST_PORT},
                           "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": GRPC_PORT}, "initialDelaySeconds": 10, "periodSeconds": 10},
    }
    pod = {"metadata": {"labels": labels}, "spec": {"containers": [container]}}
    if not is_remote(config.serving_dir):
        container["volumeMounts"] = [{"name": "serving", "mountPath": config.serving_dir, "readOnly": True}]
        pod["spec"]["volumes"] = [{"name": "serving", "hostPath": {"path": config.serving_dir}}]
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": pod}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
         "spec": {"selector": labels, "ports": [
             {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
             {"name": "http", "port": REST_PORT, "targetPort": REST_PORT}]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                  "minReplicas": replicas, "maxReplicas": max_replicas,
                  "metrics": [{"type": "Resource", "resource": {
                      "name": "cpu", "target": {"type": "Utilization",
                                                "averageUtilization": target_cpu_percent}}}]}},
    ]


class _PlainDumper(yaml.SafeDumper):
    """Repeats shared values (the pod labels) instead of writing YAML anchors, as kubectl users expect."""

    def ignore_aliases(self, data):
        return True


def write_deployment_files(config: PipelineConfig) -> Dict[str, str]:
    """Writes the four files under serving_dir; returns {name: path}."""
    fileio.makedirs(config.serving_dir)
    model_config.ensure(config.models_config_path, config.model_name, config.model_serving_dir)
    files = {
        "models.config": config.models_config_path,
        "batching_parameters.txt": os.path.join(config.serving_dir, "batching_parameters.txt"),
        "docker-run.sh": os.path.join(config.serving_dir, "docker-run.sh"),
        "kubernetes.yaml": os.path.join(config.serving_dir, "kubernetes.yaml"),
    }
    contents = {
        "batching_parameters.txt": batching_parameters(config),
        "docker-run.sh": "#!/bin/sh\n# TF Serving on the pushed models (generated by python -m serving deploy-files)\n"
                         + docker_run(config) + "\n",
        "kubernetes.yaml": yaml.dump_all(kubernetes_manifests(config), Dumper=_PlainDumper, sort_keys=False),
    }
    for name, text in contents.items():
        with fileio.open(files[name], "w") as f:
            f.write(text)
    return files
