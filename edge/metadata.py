"""TFLite model metadata (tflite-support schema) for the exported edge models.

Imports `tensorflow_lite_support.metadata` directly: importing the `tflite_support`
package after TensorFlow crashes the process. The metadata makes the `.tflite`
self-describing for any TFLite tool: name, version, what each input holds and how
it was normalized (per channel of the packed numeric input), the vocabularies behind
the one-hot input, the output's meaning (with the class names of a multiclass model).
The full raw-feature mapping (bucket boundaries, missing-value defaults) is not
embedded: it ships beside the model as `edge_mapping.json`, its sha256 in the
manifest. Embedding it cost both files the same ~10 KB, which on a small model
(30 numeric columns) held the int8 file at 0.43x the float one instead of 0.34x.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import flatbuffers
from tensorflow_lite_support.metadata import metadata_schema_py_generated as schema
from tensorflow_lite_support.metadata.python import metadata as tflite_metadata

from contract import tasks


LABELS_FILE = "labels.txt"


def _tensor(name: str, description: str, low=None, high=None) -> Any:
    """Tensor metadata; `low`/`high` a number (the whole tensor) or a list (per channel)."""
    tensor = schema.TensorMetadataT()
    tensor.name = name
    tensor.description = description
    tensor.content = schema.ContentT()
    tensor.content.contentProperties = schema.FeaturePropertiesT()
    tensor.content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    if low is not None:
        tensor.stats = schema.StatsT()
        tensor.stats.min = [float(v) for v in (low if isinstance(low, list) else [low])]
        tensor.stats.max = [float(v) for v in (high if isinstance(high, list) else [high])]
    return tensor


def _vocabulary_file(feature: str) -> str:
    return f"vocabulary_{feature}.txt"


def _vocabulary_entry(feature: str) -> Any:
    vocabulary = schema.AssociatedFileT()
    vocabulary.name = _vocabulary_file(feature)
    vocabulary.description = f"vocabulary of {feature} (id = line number)"
    vocabulary.type = schema.AssociatedFileType.VOCABULARY
    return vocabulary


def populate(model: bytes, input_order: List[str], mapping: Dict[str, Any], info: Dict[str, str]) -> bytes:
    """`model` with metadata; `input_order` is the subgraph's input tensor order (names as in the mapping)."""
    clip = mapping.get("clip", {})
    numeric = mapping["numeric"]
    one_hot = mapping["one_hot"]
    inputs = []
    for name in input_order:
        if name == mapping["numeric_input"]:
            tensor = _tensor(
                name, f"z-scores of the {len(numeric)} numeric features, in the order of edge_mapping.json: per "
                      "channel z = (sign(x)*log1p(|x|) - mean) / std, clipped to the calibrated range",
                [clip[e["input"]][0] for e in numeric] if clip else None,
                [clip[e["input"]][1] for e in numeric] if clip else None)
            # The z-score is applied before the model; recorded as the standard normalization unit, per channel.
            unit = schema.ProcessUnitT()
            unit.optionsType = schema.ProcessUnitOptions.NormalizationOptions
            unit.options = schema.NormalizationOptionsT()
            unit.options.mean = [float(e["mean"]) for e in numeric]
            unit.options.std = [float(e["std"]) for e in numeric]
            tensor.processUnits = [unit]
        elif name == mapping.get("bags", {}).get("input"):
            bags = mapping["bags"]["features"]
            blocks = ", ".join(f"{f['feature']}[{f['offset']}:{f['offset'] + f['size']}] ({f['weighting']})"
                               for f in bags)
            tensor = _tensor(name, f"bags of vocabulary ids of text and list features: {blocks}; at each id its "
                                   "TF-IDF weight, or 1 where present; text is tokenized as edge_mapping.json says, "
                                   "the id after the last vocabulary entry is out-of-vocabulary")
            tensor.associatedFiles = [_vocabulary_entry(f["feature"]) for f in bags]
        else:
            blocks = ", ".join(f"{f['input']}[{f['offset']}:{f['offset'] + f['size']}]"
                               for f in one_hot["features"])
            tensor = _tensor(name, f"one-hot ids of bucketized and categorical features: {blocks}; "
                                   "categorical ids index the associated vocabulary files, the id after "
                                   "the last entry is out-of-vocabulary", 0.0, 1.0)
            tensor.associatedFiles = [_vocabulary_entry(f["feature"]) for f in one_hot["features"]
                                      if f["kind"] == "categorical"]
        inputs.append(tensor)
    task = tasks.task(mapping["task"])
    bounded = task.is_classification  # probabilities lie in [0, 1]
    output = _tensor(task.edge_output_name, info["output"], 0.0 if bounded else None, 1.0 if bounded else None)
    if task.per_class_scores:
        labels = schema.AssociatedFileT()
        labels.name = LABELS_FILE
        labels.description = "class names, one per line, in the order of the scores"
        labels.type = schema.AssociatedFileType.TENSOR_AXIS_LABELS
        output.associatedFiles = [labels]

    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata = inputs
    subgraph.outputTensorMetadata = [output]
    model_metadata = schema.ModelMetadataT()
    model_metadata.name = info["name"]
    model_metadata.version = info["version"]
    model_metadata.description = info["description"]
    model_metadata.author = info.get("author", "")
    model_metadata.subgraphMetadata = [subgraph]

    builder = flatbuffers.Builder(0)
    builder.Finish(model_metadata.Pack(builder), tflite_metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER)
    populator = tflite_metadata.MetadataPopulator.with_model_buffer(model)
    populator.load_metadata_buffer(builder.Output())
    files = {}
    if task.per_class_scores:
        files[LABELS_FILE] = "\n".join(mapping["classes"]).encode("utf-8") + b"\n"
    for f in one_hot["features"] + mapping.get("bags", {}).get("features", []):
        if "vocabulary" in f:
            files[_vocabulary_file(f["feature"])] = "\n".join(f["vocabulary"]).encode("utf-8") + b"\n"
    populator.load_associated_file_buffers(files)
    populator.populate()
    return populator.get_model_buffer()


def read(model: bytes) -> Dict[str, Any]:
    """The metadata as JSON (for tests and `python -m edge check`)."""
    displayer = tflite_metadata.MetadataDisplayer.with_model_buffer(model)
    return {"metadata": json.loads(displayer.get_metadata_json()),
            "associated_files": sorted(displayer.get_packed_associated_file_list())}
