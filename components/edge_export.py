"""EdgeExport: the blessed model as a gated full-int8 TFLite for Coral Edge TPU / Raspberry Pi.

Runs after the Evaluator and the serving Pusher. Nothing happens unless the
Evaluator blessed the model and, when it ran, the serving check passed it. The work is in `edge/export.py`: calibrate on
Transform's transformed training examples, convert the Trainer's `edge` signature
(float and full-int8), evaluate both through the device runtime on the raw eval
split against the SavedModel's `serving_default`, and push atomically to
`<edge_dir>/<model_name>/<version>/` only when the int8 AUC drop is within
`edge.max_auc_drop`. A gated-out model completes the component with `pushed=0`
and the reason: the run (and the serving push) stay valid, the previous edge
version stays in place.
"""

import json
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, path_utils

from contract.config import EdgeConfig, FeaturesConfig, section_from_dict
from edge import export

REPORT_FILE = "edge_export.json"


class EdgeExportSpec(types.ComponentSpec):
    PARAMETERS = {
        "settings": ExecutionParameter(type=str),  # JSON of the edge: section (contract.config.EdgeConfig)
        "features": ExecutionParameter(type=str),  # JSON of the features: section (FeaturesConfig)
        "model_name": ExecutionParameter(type=str),
        "base_directory": ExecutionParameter(type=str),  # <edge_dir>/<model_name>
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph),
        "transformed_examples": ChannelParameter(type=standard_artifacts.Examples),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "pushed_model": ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
        "infra_blessing": ChannelParameter(type=standard_artifacts.InfraBlessing, optional=True),
    }
    OUTPUTS = {"edge_model": ChannelParameter(type=standard_artifacts.PushedModel)}


def _serving_version(input_dict: Dict[str, List[types.Artifact]]) -> str:
    """The TF Serving version this model was pushed as (or already served as), if known."""
    for pushed in input_dict.get("pushed_model", []):
        for name in ("pushed_version", "already_serving_version"):
            if pushed.has_custom_property(name):
                return str(pushed.get_custom_property(name))
    return ""


class EdgeExportExecutor(base_executor.BaseExecutor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        output = artifact_utils.get_single_instance(output_dict["edge_model"])
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        if not model_utils.is_model_blessed(blessing):
            logging.info("Model not blessed; no edge export.")
            self._record(output, export.EdgeResult(False, "model not blessed"))
            return
        for infra in input_dict.get("infra_blessing", []):
            if not model_utils.is_infra_validated(infra):
                reason = infra.get_string_custom_property("reason") if infra.has_custom_property("reason") else ""
                logging.info("Model failed the serving check; no edge export.")
                self._record(output, export.EdgeResult(False, f"the serving check refused the model: {reason}"))
                return
        model = artifact_utils.get_single_instance(input_dict["model"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        transform_graph = artifact_utils.get_single_instance(input_dict["transform_graph"])
        result = export.export(
            saved_model_dir=path_utils.serving_model_path(model.uri),
            transform_graph_dir=transform_graph.uri,
            # One artifact per span when training on a window of spans.
            transformed_train_pattern=[os.path.join(uri, "*") for uri in artifact_utils.get_split_uris(
                input_dict["transformed_examples"], "train")],
            raw_eval_pattern=os.path.join(artifact_utils.get_split_uri([examples], "eval"), "*"),
            spec=section_from_dict(FeaturesConfig, json.loads(exec_properties["features"])),
            settings=section_from_dict(EdgeConfig, json.loads(exec_properties["settings"])),
            model_base_dir=exec_properties["base_directory"],
            model_name=exec_properties["model_name"],
            source={"source_model_artifact_id": model.id, "serving_version": _serving_version(input_dict)})
        logging.info("Edge export: %s", result.reason)
        self._record(output, result)

    @staticmethod
    def _record(output: types.Artifact, result) -> None:
        from dataclasses import asdict

        io_utils.write_string_file(os.path.join(output.uri, REPORT_FILE), json.dumps(asdict(result), indent=2))
        output.set_int_custom_property("pushed", int(result.pushed))
        output.set_string_custom_property("reason", result.reason)
        if result.pushed:
            output.set_string_custom_property("pushed_destination", result.version_dir)
            output.set_string_custom_property("pushed_version", os.path.basename(result.version_dir))


class EdgeExport(base_component.BaseComponent):
    """Full-int8 TFLite export of a blessed model, gated on its accuracy cost (see module docstring)."""

    SPEC_CLASS = EdgeExportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(EdgeExportExecutor)

    def __init__(self, model, model_blessing, transform_graph, transformed_examples, examples, settings: Dict,
                 features: Dict, model_name: str, base_directory: str, pushed_model=None, infra_blessing=None):
        super().__init__(spec=EdgeExportSpec(
            model=model, model_blessing=model_blessing, infra_blessing=infra_blessing, transform_graph=transform_graph,
            transformed_examples=transformed_examples, examples=examples, pushed_model=pushed_model,
            settings=json.dumps(settings, sort_keys=True), features=json.dumps(features, sort_keys=True),
            model_name=model_name, base_directory=base_directory,
            edge_model=types.Channel(type=standard_artifacts.PushedModel)))
