"""`models.config`: TF Serving's ModelServerConfig, the one file that says which versions serve.

TF Serving (`--model_config_file`) and the local server (`serving/manager.py`) read
the same text proto and re-read it every poll interval, so moving a version label
is a file rewrite, never a restart. Two modes per model:

- follow latest (no labels): `latest { num_versions: 1 }`, every blessed push
  goes live on the next poll;
- pinned: `specific { versions: [stable, canary] }` with `version_labels`
  `stable` (and `canary`); new pushes wait for `rollout`.

A traffic split between the labels is not part of TF Serving's config; it lives
in the sidecar `experiments.json` (`experiments.py`), written by the same
commands: `rollout --weight`, `promote` and `rollback` keep both files in step.

Every write goes to a temporary file renamed over the old one, so a reader never
sees half a config.
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from tfx.dsl.io import fileio

from contract.versions import list_versions
from serving import experiments
from serving.experiments import Experiment

STABLE = "stable"
CANARY = "canary"
RETIRED_DIR = ".retired"


class RolloutError(ValueError):
    """A rollout or rollback that would leave clients without the version they ask for."""


def new_config(model_name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """A config that serves the newest pushed version of one model."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    model.model_version_policy.latest.num_versions = 1
    return config


def read(path: str) -> model_server_config_pb2.ModelServerConfig:
    if not fileio.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist; write it with `tfx-edge serving deploy-files` (or push a model first)")
    with fileio.open(path, "r") as f:
        text = f.read()
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:
        raise ValueError(f"{path}: Error parsing text-format tensorflow.serving.ModelServerConfig: {error} (the "
                         "file must be a TF Serving ModelServerConfig text proto; `tfx-edge serving deploy-files` "
                         "writes one)") from None


def write(path: str, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Atomic replace: write `<path>.tmp-<pid>`, then rename over `path`."""
    fileio.makedirs(os.path.dirname(path))
    staging = f"{path}.tmp-{os.getpid()}"
    with fileio.open(staging, "w") as f:
        f.write("# TF Serving ModelServerConfig; rewritten by `tfx-edge serving rollout|rollback`.\n")
        f.write(text_format.MessageToString(config))
    fileio.rename(staging, path, overwrite=True)


def ensure(path: str, model_name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config at `path`, created (follow-latest) if missing, with `model_name` present."""
    config = read(path) if fileio.exists(path) else model_server_config_pb2.ModelServerConfig()
    if not any(m.name == model_name for m in config.model_config_list.config):
        config.model_config_list.config.append(new_config(model_name, base_path).model_config_list.config[0])
        write(path, config)
    return config


def model_entry(config: model_server_config_pb2.ModelServerConfig, model_name: str):
    for model in config.model_config_list.config:
        if model.name == model_name:
            return model
    names = ", ".join(m.name for m in config.model_config_list.config) or "none"
    raise RolloutError(f"model {model_name!r} is not in models.config (models there: {names})")


@dataclass
class Rollout:
    """What a rollout/rollback changed, for the lines the CLI prints."""

    model_name: str
    labels: Dict[str, int]
    versions: List[int]
    retired: Optional[int] = None
    experiment: Optional[Experiment] = None
    ended_experiment: bool = False

    def describe(self) -> str:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items())) or "none (follows latest)"
        line = f"{self.model_name}: labels {labels}; versions served: {self.versions}"
        if self.retired is not None:
            line += f"; retired version {self.retired}"
        if self.experiment is not None:
            line += "\n" + describe_experiment(self.model_name, self.experiment)
        elif self.ended_experiment:
            line += f"\n{self.model_name}: experiment ended; requests without a label go to the newest version served"
        return line


def describe_experiment(model_name: str, experiment: Experiment) -> str:
    split = ", ".join(f"{k} {v:g}%" for k, v in sorted(experiment.split.items()))
    line = f"{model_name}: experiment split {split} of requests without a version or label"
    if experiment.sticky_feature:
        line += f", sticky by feature {experiment.sticky_feature!r} (or the key header)"
    if experiment.shadow_label:
        line += f"; shadow {experiment.shadow_percent:g}% to {experiment.shadow_label}"
    return line


def _pin(model, labels: Dict[str, int]) -> Rollout:
    model.model_version_policy.Clear()
    model.version_labels.clear()
    versions = sorted(set(labels.values()))
    model.model_version_policy.specific.versions.extend(versions)
    for label, version in labels.items():
        model.version_labels[label] = version
    return Rollout(model.name, dict(labels), versions)


def _available(model) -> List[int]:
    versions = list_versions(model.base_path)
    if not versions:
        raise RolloutError(f"no versions under {model.base_path}; push a model first")
    return versions


def split_weights(weights: Dict[str, float], labels: Dict[str, int]) -> Dict[str, float]:
    """`canary=10` alone means the one other label takes the rest (stable 90)."""
    missing = sorted(set(labels) - set(weights))
    if len(missing) == 1 and sum(weights.values()) < 100:
        return {**weights, missing[0]: 100.0 - sum(weights.values())}
    return dict(weights)


def _commit(path: str, config, result: Rollout, experiment: Optional[Experiment]) -> Rollout:
    """Writes models.config and the experiment sidecar, the experiment checked before either file changes.

    An experiment that no longer fits the new labels (its canary was promoted or
    rolled back) ends.
    """
    sidecar = experiments.experiments_path(path)
    current = experiments.read(sidecar)
    previous = current.pop(result.model_name, None)
    if experiment is None and previous is not None:
        try:
            previous.check(result.model_name, result.labels, sidecar)
            experiment = previous
        except experiments.ExperimentError:
            result.ended_experiment = True
    if experiment is not None:
        current[result.model_name] = experiment
    labels_by_model = {m.name: dict(m.version_labels) for m in config.model_config_list.config}
    for name, each in current.items():
        each.check(name, labels_by_model.get(name, {}), sidecar)
    write(path, config)
    if current or fileio.exists(sidecar):
        experiments.write(sidecar, current, labels_by_model)
    result.experiment = experiment
    return result


def rollout(path: str, model_name: str, version: Optional[int] = None, label: str = STABLE,
            experiment: Optional[Experiment] = None) -> Rollout:
    """Points `label` at `version` (default: the newest pushed) and writes models.config.

    `stable` moved onto the canary version ends the canary. A version that is not on
    disk is refused: TF Serving would otherwise fail to load it. With `experiment`,
    its split (checked against the new labels) is written to the sidecar too.
    """
    config = read(path)
    model = model_entry(config, model_name)
    available = _available(model)
    version = available[-1] if version is None else version
    if version not in available:
        raise RolloutError(f"version {version} of {model_name} is not under {model.base_path} "
                           f"(pushed versions: {available})")
    labels = dict(model.version_labels)
    if not labels and label != STABLE:
        # A canary needs a stable version beside it: pin the one serving now (the newest other).
        older = [v for v in available if v != version]
        if not older:
            raise RolloutError(f"{model_name} has only version {version}; roll it out as {STABLE}")
        labels[STABLE] = older[-1]
    labels[label] = version
    if label == STABLE and labels.get(CANARY) == version:
        del labels[CANARY]
    if experiment is not None:
        experiment.split = split_weights(experiment.split, labels)
    return _commit(path, config, _pin(model, labels), experiment)


def set_experiment(path: str, model_name: str, experiment: Experiment) -> Rollout:
    """A new split (or shadow) between the labels models.config already has; the labels do not move."""
    config = read(path)
    model = model_entry(config, model_name)
    labels = dict(model.version_labels)
    if not labels:
        raise RolloutError(f"{model_name} has no version labels to split between; roll a version out first "
                           "(tfx-edge serving rollout --label canary --version V --weight canary=10)")
    experiment.split = split_weights(experiment.split, labels)
    return _commit(path, config, Rollout(model_name, labels, sorted(set(labels.values()))), experiment)


def promote(path: str, model_name: str) -> Rollout:
    """The canary becomes stable, in one step: the canary label and the experiment end."""
    config = read(path)
    model = model_entry(config, model_name)
    labels = dict(model.version_labels)
    if CANARY not in labels:
        raise RolloutError(f"{model_name} has no {CANARY} to promote (labels: "
                           f"{', '.join(f'{k}={v}' for k, v in sorted(labels.items())) or 'none'})")
    return _commit(path, config, _pin(model, {STABLE: labels[CANARY]}), None)


def rollback(path: str, model_name: str, to_version: Optional[int] = None, retire: bool = False) -> Rollout:
    """With a canary: ends it (canary label and experiment removed, stable untouched). Without: moves
    `stable` back to `to_version` (default: the newest version older than stable).

    With `retire`, the version rolled back from (the canary, or the old stable) is also
    moved out of the model base path (to `<serving_dir>/.retired/<model>/<version>`), so
    neither this server, TF Serving nor a later rollout can load it again.
    """
    config = read(path)
    model = model_entry(config, model_name)
    available = _available(model)
    labels = dict(model.version_labels)
    if CANARY in labels and to_version is None:
        current = labels.pop(CANARY)
        if labels.get(STABLE) == current:
            retire = False  # the stable version keeps serving
    else:
        current = labels.get(STABLE, available[-1])
        if to_version is None:
            older = [v for v in available if v < current]
            if not older:
                raise RolloutError(f"no version of {model_name} older than {current} to roll back to "
                                   f"(pushed versions: {available})")
            to_version = older[-1]
        if to_version not in available:
            raise RolloutError(f"version {to_version} of {model_name} is not under {model.base_path} "
                               f"(pushed versions: {available})")
        if to_version == current:
            raise RolloutError(f"version {to_version} is already {STABLE} for {model_name}")
        labels[STABLE] = to_version
        if retire and labels.get(CANARY) == current:
            del labels[CANARY]
    result = _commit(path, config, _pin(model, labels), None)
    if retire:
        retired_parent = os.path.join(os.path.dirname(model.base_path.rstrip("/")), RETIRED_DIR, model_name)
        fileio.makedirs(retired_parent)
        fileio.rename(os.path.join(model.base_path, str(current)), os.path.join(retired_parent, str(current)))
        result.retired = current
    return result


def follow_latest(path: str, model_name: str) -> Rollout:
    """Drops the labels (and any experiment): every new push serves again as soon as it lands."""
    config = read(path)
    model = model_entry(config, model_name)
    model.model_version_policy.Clear()
    model.version_labels.clear()
    model.model_version_policy.latest.num_versions = 1
    return _commit(path, config, Rollout(model_name, {}, _available(model)[-1:]), None)


def versions_to_serve(model, on_disk: List[int]) -> List[int]:
    """The versions a server must load for this entry, given what is on disk (TF Serving's semantics)."""
    policy = model.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(on_disk)
    if which == "specific":
        return sorted(v for v in set(policy.specific.versions) if v in on_disk)
    count = policy.latest.num_versions if which == "latest" else 1
    return list(on_disk[-max(count, 1):]) if on_disk else []
