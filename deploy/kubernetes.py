"""Kubernetes manifests for TF Serving: one model (and its Istio arms), or a fleet's one multi-model server.

One Deployment, Service and HorizontalPodAutoscaler per model; with an experiment
(`experiments.json`), one Deployment per arm, each serving only its arm's version
(`models-<arm>.config`), and Istio's DestinationRule (a subset per arm) and
VirtualService: the split's weights, `mirror` + `mirrorPercentage` for shadow
traffic, and REST paths that name a label or version routed to its arm. gRPC
carries the label inside the message, where Istio cannot see it: gRPC clients that
must reach one arm send the header `x-serving-arm: <label>`.

A fleet (`tfx-edge fleet k8s`) gets one multi-model server instead: a ConfigMap
holding the fleet's models.config (every served tenant model) with the monitoring
and batching files, mounted into one Deployment that polls it, and its Service.
"""


import os
from typing import Dict, List, Optional, Tuple

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from tfx.dsl.io import fileio

from contract.config import PipelineConfig, is_remote
from contract.files import write_text
from contract.versions import list_versions
from deploy.tf_serving import (ARM_HEADER, FLEET_CONFIG_DIR, GRPC_PORT,
                               REST_PORT, arm_config_path, batching_parameters,
                               monitoring_config, server_args)
from serving import experiments, model_config
from serving.experiments import Experiment
from serving.metrics import METRICS_PATH


def _deployment(config: PipelineConfig, name: str, labels: Dict[str, str], replicas: int,
                models_config_path: str = "", config_map: str = "", ready_model: str = "") -> Dict:
    """`config_map`: the server's config files come from this ConfigMap, mounted at FLEET_CONFIG_DIR."""
    files_dir = FLEET_CONFIG_DIR if config_map else ""
    container = {
        "name": "tf-serving",
        "image": config.serving.tf_serving_image,
        "args": server_args(config, models_config_path, files_dir),
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT}, {"name": "http", "containerPort": REST_PORT}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        # TF Serving answers REST on the model status path once the model is AVAILABLE (after warm-up).
        "readinessProbe": {"httpGet": {"path": f"/v1/models/{ready_model or config.model_name}", "port": REST_PORT},
                           "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": GRPC_PORT}, "initialDelaySeconds": 10, "periodSeconds": 10},
    }
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(REST_PORT), "prometheus.io/path": METRICS_PATH}
    pod = {"metadata": {"labels": labels, "annotations": scrape}, "spec": {"containers": [container]}}
    mounts, volumes = [], []
    if not is_remote(config.serving_dir):
        mounts.append({"name": "serving", "mountPath": config.serving_dir, "readOnly": True})
        volumes.append({"name": "serving", "hostPath": {"path": config.serving_dir}})
    if config_map:
        # The whole ConfigMap as a directory, never `subPath`: only then does Kubernetes swap in an edited
        # models.config, which TF Serving re-reads every --model_config_file_poll_wait_seconds.
        mounts.append({"name": "server-config", "mountPath": FLEET_CONFIG_DIR, "readOnly": True})
        volumes.append({"name": "server-config", "configMap": {"name": config_map}})
    if mounts:
        container["volumeMounts"] = mounts
        pod["spec"]["volumes"] = volumes
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": pod}}


def _autoscaler(name: str, replicas: int, max_replicas: int, target_cpu_percent: int) -> Dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": replicas, "maxReplicas": max_replicas,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": target_cpu_percent}}}]}}


def _integer_weights(split: Dict[str, float]) -> Dict[str, int]:
    """Istio's weights are integers summing to 100: largest remainders get the rounding."""
    floors = {arm: int(weight) for arm, weight in sorted(split.items())}
    rest = 100 - sum(floors.values())
    for arm in sorted(split, key=lambda a: split[a] - floors[a], reverse=True)[:rest]:
        floors[arm] += 1
    return floors


def _istio(config: PipelineConfig, name: str, experiment: Experiment, labels: Dict[str, int]) -> List[Dict]:
    """DestinationRule (a subset per arm) and VirtualService (label/version paths to their arm, then the split)."""
    arms = sorted(set(experiment.split) | ({experiment.shadow_label} if experiment.shadow_label else set()))
    model = config.model_name
    routes = []
    for arm in arms:
        paths = f"/v1/models/{model}/(labels/{arm}|versions/{labels[arm]})([:/].*)?"
        routes.append({"name": f"pinned-{arm}", "match": [{"uri": {"regex": paths}},
                                                          {"headers": {ARM_HEADER: {"exact": arm}}}],
                       "route": [{"destination": {"host": name, "subset": arm}}]})
    split = {"name": "experiment",
             "route": [{"destination": {"host": name, "subset": arm}, "weight": weight}
                       for arm, weight in _integer_weights(experiment.split).items()]}
    if experiment.shadow_label:
        split["mirror"] = {"host": name, "subset": experiment.shadow_label}
        split["mirrorPercentage"] = {"value": float(experiment.shadow_percent)}
    routes.append(split)
    return [
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": name},
         "spec": {"host": name, "subsets": [{"name": arm, "labels": {"arm": arm}} for arm in arms]}},
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": name},
         "spec": {"hosts": [name], "http": routes}},
    ]


def experiment_of(config: PipelineConfig) -> Optional[Experiment]:
    return experiments.read(experiments.experiments_path(config.models_config_path)).get(config.model_name)


def kubernetes_manifests(config: PipelineConfig, replicas: int = 2, max_replicas: int = 10,
                         target_cpu_percent: int = 70) -> List[Dict]:
    """One Deployment; with an experiment, one per arm behind Istio's weights."""
    name = f"tf-serving-{config.model_name}"
    labels = {"app": name}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
               "spec": {"selector": labels, "ports": [
                   {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
                   {"name": "http", "port": REST_PORT, "targetPort": REST_PORT}]}}
    experiment = experiment_of(config)
    if experiment is None:
        return [_deployment(config, name, labels, replicas), service,
                _autoscaler(name, replicas, max_replicas, target_cpu_percent)]
    version_labels = dict(model_config.model_entry(model_config.read(config.models_config_path),
                                                   config.model_name).version_labels)
    manifests: List[Dict] = []
    for arm in sorted(set(experiment.split) | ({experiment.shadow_label} if experiment.shadow_label else set())):
        arm_name = f"{name}-{arm}"
        manifests.append(_deployment(config, arm_name, {"app": name, "arm": arm}, replicas,
                                     arm_config_path(config, arm)))
        manifests.append(_autoscaler(arm_name, replicas, max_replicas, target_cpu_percent))
    return manifests + [service] + _istio(config, name, experiment, version_labels)


def arm_configs(config: PipelineConfig) -> Dict[str, model_server_config_pb2.ModelServerConfig]:
    """Per arm of the experiment, a models.config serving only that arm's version under its label."""
    experiment = experiment_of(config)
    if experiment is None:
        return {}
    entry = model_config.model_entry(model_config.read(config.models_config_path), config.model_name)
    configs = {}
    for arm in sorted(set(experiment.split) | ({experiment.shadow_label} if experiment.shadow_label else set())):
        arm_config = model_config.new_config(config.model_name, entry.base_path)
        arm_entry = arm_config.model_config_list.config[0]
        arm_entry.model_version_policy.Clear()
        arm_entry.model_version_policy.specific.versions.append(entry.version_labels[arm])
        arm_entry.version_labels[arm] = entry.version_labels[arm]
        configs[arm] = arm_config
    return configs


def fleet_models_config(models_config_path: str, models: Dict[str, str]) -> Tuple[
        model_server_config_pb2.ModelServerConfig, List[str]]:
    """The ModelServerConfig for `models` ({name: base path}) that have a served version, and the names left out.

    A model keeps its entry of the shared models.config (rollout pins and labels); one with versions but no
    entry (pushed outside the fleet controller) follows latest. One without a version stays out: TF Serving
    opens no port until every model in its config has a version (tensorflow/serving#979).
    """
    shared = model_config.read(models_config_path) if fileio.exists(models_config_path) else \
        model_server_config_pb2.ModelServerConfig()
    entries = {m.name: m for m in shared.model_config_list.config}
    out = model_server_config_pb2.ModelServerConfig()
    missing = []
    for name, base_path in models.items():
        if not list_versions(base_path):
            missing.append(name)
        elif name in entries:
            out.model_config_list.config.append(entries[name])
        else:
            out.model_config_list.config.append(model_config.new_config(name, base_path).model_config_list.config[0])
    return out, missing


def fleet_manifests(config: PipelineConfig, models: model_server_config_pb2.ModelServerConfig,
                    name: str = "tf-serving-fleet", replicas: int = 2, max_replicas: int = 10,
                    target_cpu_percent: int = 70) -> List[Dict]:
    """One TF Serving Deployment serving every model in `models`: ConfigMap, Deployment, Service, autoscaler.

    `config` gives the shared serving settings (image, serving_dir, batching, poll interval): one server
    process has one set of them. Adding a tenant or moving a label is a ConfigMap edit, never a restart.
    """
    if not models.model_config_list.config:
        raise ValueError("no model has a served version yet; run the fleet first (`tfx-edge fleet run`)")
    labels = {"app": name}
    config_map = f"{name}-config"
    text = "# TF Serving ModelServerConfig of the fleet (tfx-edge fleet k8s)\n" + text_format.MessageToString(models)
    files = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": config_map, "labels": labels},
             "data": {"models.config": text, "monitoring.config": monitoring_config(),
                      "batching_parameters.txt": batching_parameters(config)}}
    deployment = _deployment(config, name, labels, replicas, os.path.join(FLEET_CONFIG_DIR, "models.config"),
                             config_map, ready_model=models.model_config_list.config[0].name)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
               "spec": {"selector": labels, "ports": [
                   {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_PORT},
                   {"name": "http", "port": REST_PORT, "targetPort": REST_PORT}]}}
    return [files, deployment, service, _autoscaler(name, replicas, max_replicas, target_cpu_percent)]


def write_fleet_files(config: PipelineConfig, models: model_server_config_pb2.ModelServerConfig,
                      out_dir: str) -> Dict[str, str]:
    """`<out_dir>/kubernetes.yaml` (fleet_manifests) and the models.config it holds, for reading and diffing."""
    manifests = fleet_manifests(config, models)
    texts = {"kubernetes.yaml": yaml.dump_all(manifests, Dumper=PlainDumper, sort_keys=False),
             "models.config": manifests[0]["data"]["models.config"]}
    return {name: write_text(os.path.join(out_dir, name), text) for name, text in texts.items()}


class PlainDumper(yaml.SafeDumper):
    """Repeats shared values (the pod labels) instead of writing YAML anchors, as kubectl users expect."""

    def ignore_aliases(self, data):
        return True


def _literal(dumper, text):
    """Multi-line strings (the ConfigMap's files) as YAML block literals, readable as the files they are."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


PlainDumper.add_representer(str, _literal)

