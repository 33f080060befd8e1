"""Pusher for TF Serving that never exposes a half-written version.

Differences from the stock Pusher, all for the people operating TF Serving:
- the version directory is written under a hidden temporary name and renamed
  into place, so TF Serving's file watcher never sees a partial SavedModel;
- versions only increase (max(unix time, latest + 1)), even with clock skew;
- a model that is already the latest version is not pushed again, so re-running
  an unchanged pipeline does not make TF Serving reload the same model;
- `assets.extra/push_info.json` in each version records what was pushed, from where;
- `assets.extra/tf_serving_warmup_requests` holds Predict requests built from real
  eval examples, and one Classify (classification) or Regress (regression) request,
  which TF Serving (and `serving/`) replays before a version takes traffic, so the
  first real requests of either API do not pay for graph initialisation.
"""

import json
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import io_utils, json_utils, proto_utils

from contract import tasks, versions
from contract.serving import EXAMPLES_INPUT, PUSH_INFO, SERVING_SIGNATURE, WARMUP_FILE

EXAMPLES_KEY = "examples"
WARMUP_SPLIT = "eval"


def read_eval_examples(split_uri: str, limit: int) -> List[tf.train.Example]:
    """The first `limit` examples of an ExampleGen split (gzip TFRecords)."""
    files = sorted(fileio.glob(os.path.join(split_uri, "*")))
    if not files:
        raise ValueError(f"no TFRecord files in {split_uri}; cannot build TF Serving warm-up requests")
    examples = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit):
        examples.append(tf.train.Example.FromString(record.numpy()))
    return examples


def warmup_records(examples: Sequence[tf.train.Example], model_name: str,
                   drop_features: Iterable[str] = (), task: str = "binary") -> List[bytes]:
    """Serialized PredictionLogs: Predict requests with batch sizes 1, 2, 4, ..., then one Classify or Regress.

    Several batch sizes, because TF Serving compiles and caches per input shape.
    Label-only columns are dropped so the requests look like serving traffic.
    """
    copies = []
    for example in examples:
        copy = tf.train.Example()
        copy.CopyFrom(example)
        for name in drop_features:
            copy.features.feature.pop(name, None)
        copies.append(copy)
    stripped = [copy.SerializeToString() for copy in copies]
    records, start, size = [], 0, 1
    while start < len(stripped):
        batch = stripped[start:start + size]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = SERVING_SIGNATURE
        request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
        records.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
        start, size = start + size, size * 2
    if copies:
        records.append(_examples_api_log(copies[:1], model_name, task))
    return records


def _examples_api_log(examples: Sequence[tf.train.Example], model_name: str, task: str) -> bytes:
    """A ClassifyLog (classification) or RegressLog (regression) on the model's classify/regress signature."""
    api = tasks.task(task).examples_api
    log = prediction_log_pb2.PredictionLog()
    request = getattr(log, api.log_field).request
    request.model_spec.name, request.model_spec.signature_name = model_name, api.signature
    request.input.example_list.examples.extend(examples)
    return log.SerializeToString()


def push_atomically(model_path: str, base_directory: str, version: int, info: Dict[str, Any],
                    warmup: Sequence[bytes] = ()) -> str:
    """Publishes a SavedModel (plus push info and warm-up requests) as `<base>/<version>`, whole or not at all."""
    if not fileio.exists(os.path.join(model_path, "saved_model.pb")):
        # io_utils.copy_dir would silently create an empty version from a missing source.
        raise ValueError(f"no SavedModel at {model_path} (saved_model.pb missing); nothing was pushed")

    def fill(staging: str) -> None:
        io_utils.copy_dir(model_path, staging)
        io_utils.write_string_file(os.path.join(staging, PUSH_INFO), json.dumps(info, indent=2))
        if warmup:
            with tf.io.TFRecordWriter(os.path.join(staging, WARMUP_FILE)) as writer:
                for record in warmup:
                    writer.write(record)

    return versions.publish_version(base_directory, version, fill)


class ServingPusherExecutor(pusher_executor.Executor):
    """Stock blessing checks (the Evaluator's ModelBlessing and the serving check's InfraBlessing), atomic and
    monotonic filesystem push."""

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

        serving = versions.latest_if_same_source(base, PUSH_INFO, model_path)
        if serving is not None:
            logging.info("Model %s is already serving as version %d; not pushing it again.", model_path, serving)
            self._MarkNotPushed(model_push)
            model_push.set_string_custom_property("already_serving_version", str(serving))
            return

        version = versions.next_version(versions.list_versions(base))
        info = {"source_model": model_path, "version": version,
                "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        serving_path = push_atomically(model_path, base, version, info,
                                       self._warmup(input_dict, exec_properties))
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=str(version))
        logging.info("Model pushed to %s.", serving_path)


    @staticmethod
    def _warmup(input_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> List[bytes]:
        custom_config = json_utils.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
                                         or "null") or {}
        count = int(custom_config["warmup_requests"])
        if not input_dict.get(EXAMPLES_KEY) or count <= 0:
            return []
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        split_uri = artifact_utils.get_split_uri([examples], WARMUP_SPLIT)
        # Batch sizes 1, 2, 4, ...: `count` requests need 2**count - 1 examples.
        eval_examples = read_eval_examples(split_uri, 2 ** count - 1)
        return warmup_records(eval_examples, custom_config["model_name"], custom_config["label_only_columns"],
                              custom_config["task"])


class ServingPusherSpec(standard_component_specs.PusherSpec):
    """The Pusher's spec plus the examples whose eval split becomes TF Serving warm-up requests."""

    INPUTS = {
        **standard_component_specs.PusherSpec.INPUTS,
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }


class ServingPusher(pusher_component.Pusher):
    """`tfx.components.Pusher` with the atomic, monotonic executor above and warm-up requests; with
    `infra_blessing` (components/serving_check.py), only a model that passed the serving check is pushed.

    custom_config: `warmup_requests` (number of Predict PredictionLogs), `model_name`,
    `label_only_columns` (dropped from the warm-up examples), `task` (Classify or Regress warm-up).
    """

    SPEC_CLASS = ServingPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ServingPusherExecutor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
                 push_destination: pusher_pb2.PushDestination, examples: Optional[types.BaseChannel] = None,
                 custom_config: Optional[Dict[str, Any]] = None, infra_blessing: Optional[types.BaseChannel] = None):
        spec = ServingPusherSpec(
            model=model, model_blessing=model_blessing, examples=examples, infra_blessing=infra_blessing,
            push_destination=push_destination, custom_config=json_utils.dumps(custom_config),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel))
        super(pusher_component.Pusher, self).__init__(spec=spec)
