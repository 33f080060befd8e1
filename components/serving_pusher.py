"""Pusher for TF Serving that never exposes a half-written version.

Differences from the stock Pusher, all for the people operating TF Serving:
- the version directory is written under a hidden temporary name and renamed
  into place, so TF Serving's file watcher never sees a partial SavedModel;
- versions only increase (max(unix time, latest + 1)), even with clock skew;
- a model that is already the latest version is not pushed again, so re-running
  an unchanged pipeline does not make TF Serving reload the same model;
- `assets.extra/push_info.json` in each version records what was pushed, from where.
"""

import json
import os
import time
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

PUSH_INFO = os.path.join("assets.extra", "push_info.json")


def serving_versions(base_directory: str) -> List[int]:
    """Versions TF Serving would see under a model base path, ascending."""
    if not fileio.exists(base_directory):
        return []
    return sorted(int(name.rstrip("/")) for name in fileio.listdir(base_directory)
                  if name.rstrip("/").isdigit())


def read_push_info(version_dir: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(version_dir, PUSH_INFO)
    if not fileio.exists(path):
        return None
    return json.loads(io_utils.read_string_file(path))


def next_version(existing: List[int], now: Optional[float] = None) -> int:
    return max(int(now if now is not None else time.time()), (existing[-1] + 1) if existing else 0)


def push_atomically(model_path: str, base_directory: str, version: int, info: Dict[str, Any]) -> str:
    """Copies a SavedModel to `<base>/<version>` via a temporary directory and a rename."""
    if not fileio.exists(os.path.join(model_path, "saved_model.pb")):
        # io_utils.copy_dir would silently create an empty version from a missing source.
        raise ValueError(f"no SavedModel at {model_path} (saved_model.pb missing); nothing was pushed")
    final = os.path.join(base_directory, str(version))
    staging = os.path.join(base_directory, f".incomplete-{version}-{os.getpid()}")
    if fileio.exists(staging):
        fileio.rmtree(staging)
    fileio.makedirs(base_directory)
    try:
        io_utils.copy_dir(model_path, staging)
        io_utils.write_string_file(os.path.join(staging, PUSH_INFO), json.dumps(info, indent=2))
        fileio.rename(staging, final)
    except BaseException:
        if fileio.exists(staging):
            fileio.rmtree(staging)
        raise
    return final


class ServingPusherExecutor(pusher_executor.Executor):
    """Stock blessing checks, atomic and monotonic filesystem push."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise ValueError("ServingPusher pushes to a filesystem destination (TF Serving model base path)")
        base = destination.filesystem.base_directory

        existing = serving_versions(base)
        if existing:
            latest_info = read_push_info(os.path.join(base, str(existing[-1]))) or {}
            if latest_info.get("source_model") == model_path:
                logging.info("Model %s is already serving as version %d; not pushing it again.",
                             model_path, existing[-1])
                self._MarkNotPushed(model_push)
                model_push.set_string_custom_property("already_serving_version", str(existing[-1]))
                return

        version = next_version(existing)
        info = {"source_model": model_path, "version": version,
                "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        serving_path = push_atomically(model_path, base, version, info)
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=str(version))
        logging.info("Model pushed to %s.", serving_path)


class ServingPusher(pusher_component.Pusher):
    """`tfx.components.Pusher` with the atomic, monotonic executor above."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ServingPusherExecutor)
