"""The device runtime: a pushed edge version in, predictions for raw records out.

Per task (manifest `task`): binary models answer the probability of the positive
class, multiclass models one probability per class (`classes` names them, in order),
regression models the predicted value in the label's unit.

Depends on numpy and a TFLite interpreter only (`ai-edge-litert`, or `tflite-runtime`
on 32-bit Raspberry Pi OS), never on TensorFlow; from this project, on `edge/` and the
task rules in `contract/tasks.py` (copy both to a device). A version directory
(`<edge_dir>/<model_name>/<version>/`) holds `manifest.json`, the mapping of raw
features (`edge_mapping.json`) and the `.tflite` files the manifest lists.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, TextIO

import numpy as np

from contract import tasks
from edge.encoder import FeatureEncoder

MANIFEST = "manifest.json"
EDGETPU_LIBRARY = "libedgetpu.so.1"


def interpreter_module():
    """The TFLite interpreter module this machine has.

    Returns:
        `ai_edge_litert.interpreter` (LiteRT), else `tflite_runtime.interpreter`.

    Raises:
        ImportError: neither is installed (`pip install -r edge/requirements.txt`).
    """
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter  # type: ignore[no-redef]
        except ImportError:
            raise ImportError(
                "no TFLite interpreter: install one with `pip install -r edge/requirements.txt` "
                "(ai-edge-litert, or tflite-runtime on 32-bit ARM)") from None
    return interpreter


def read_manifest(version_dir: str) -> Dict[str, Any]:
    """Reads an edge version's `manifest.json`.

    Args:
        version_dir: `<edge_dir>/<model_name>/<version>`.

    Returns:
        The manifest: task and class names, source model, files with sha256 and size, metrics, Edge TPU report.

    Raises:
        FileNotFoundError: the directory holds no manifest.
    """
    path = os.path.join(version_dir, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: pass an edge version directory (<edge_dir>/<model_name>/<version>) "
            "or a model directory <edge_dir>/<model_name> to use its latest version")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve_version_dir(path: str) -> str:
    """Finds the edge version directory a path means.

    Args:
        path: a version directory, or a model directory `<edge_dir>/<model_name>`.

    Returns:
        The version directory as given, or the latest numbered version under the model directory.

    Raises:
        FileNotFoundError: the path holds neither a manifest nor numbered versions.
    """
    if os.path.exists(os.path.join(path, MANIFEST)):
        return path
    versions = sorted(int(n) for n in os.listdir(path) if n.isdigit()) if os.path.isdir(path) else []
    if not versions:
        raise FileNotFoundError(f"{path} holds neither {MANIFEST} nor numbered edge versions")
    return os.path.join(path, str(versions[-1]))


class EdgeModel:
    """One pushed edge model loaded in a TFLite interpreter, scoring raw feature records.

    A record is a mapping of raw feature name -> value, as a client has it (`{"fare": 12.25,
    "company": "Flash Cab"}`; one-element lists as in tf.Example are accepted too). Missing features get
    Transform's defaults and unseen categories the out-of-vocabulary id, exactly as in training.

    Args:
        path: an edge version directory, or a model directory (its latest version).
        variant: `int8` (the model to deploy) or `float` (the float reference).
        edgetpu: load the Edge TPU delegate and the compiled `model_int8_edgetpu.tflite`; when either is
            missing it says so on `log` and runs on the CPU.
        num_threads: interpreter threads.
        log: where notes about the device go.

    Raises:
        FileNotFoundError: no edge version at `path`.
        ValueError: `variant` is not in the version, or the mapping and the model do not belong together.
        ImportError: no TFLite interpreter is installed.
    """

    def __init__(self, path: str, variant: str = "int8", edgetpu: bool = False, num_threads: int = 1,
                 log: TextIO = sys.stderr):
        self.version_dir = resolve_version_dir(path)
        self.manifest = read_manifest(self.version_dir)
        files = self.manifest["files"]
        if variant not in files or variant == "mapping":
            raise ValueError(f"variant {variant!r} is not in {self.version_dir}; choose one of "
                             f"{sorted(k for k in files if k != 'mapping')}")
        with open(os.path.join(self.version_dir, files["mapping"]["path"]), encoding="utf-8") as f:
            self.encoder = FeatureEncoder(json.load(f))
        self.model_path = os.path.join(self.version_dir, files[variant]["path"])
        self.task = tasks.task(self.manifest["task"])
        self.classes = list(self.manifest["classes"])
        self.device = "cpu"
        module = interpreter_module()
        delegates = []
        if edgetpu:
            compiled = self.model_path.replace(".tflite", "_edgetpu.tflite")
            try:
                # Probing with ctypes first: a failed load_delegate leaves a half-built object behind
                # whose destructor prints a traceback.
                ctypes.CDLL(EDGETPU_LIBRARY)
                delegates = [module.load_delegate(EDGETPU_LIBRARY)]
                if os.path.exists(compiled):
                    self.model_path, self.device = compiled, "edgetpu"
                else:
                    log.write(f"edge: {compiled} not found (compile it with edgetpu_compiler, see README); "
                              "the delegate is loaded but every op runs on the CPU\n")
            except (ValueError, OSError) as error:
                log.write(f"edge: Edge TPU delegate {EDGETPU_LIBRARY} could not be loaded ({error}); "
                          "running on the CPU\n")
                delegates = []
        self.interpreter = module.Interpreter(model_path=self.model_path, experimental_delegates=delegates,
                                              num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self._bind()

    def _bind(self) -> None:
        signature = next(iter(self.interpreter.get_signature_list()))
        runner = self.interpreter.get_signature_runner(signature)
        inputs = runner.get_input_details()
        missing = [n for n in self.encoder.input_names if n not in inputs]
        if missing:
            raise ValueError(f"{self.model_path}: inputs {missing} of the feature mapping are not in the "
                             f"model (it has {sorted(inputs)}); the mapping and the model do not belong together")
        # The packed numeric input: tensor index, a reusable [1, n] buffer, 1/scale, zero point, integer limits.
        self._numeric = None
        if self.encoder.numeric_input:
            detail = inputs[self.encoder.numeric_input]
            scale, zero = detail["quantization"]
            limits = (np.iinfo(detail["dtype"]).min, np.iinfo(detail["dtype"]).max) if scale else (0, 0)
            self._numeric = (detail["index"], np.zeros((1, len(self.encoder.numeric)), detail["dtype"]),
                             1.0 / scale if scale else 0.0, zero, *limits)
        self._one_hot_index = None
        if self.encoder.one_hot_input:
            one_hot = inputs[self.encoder.one_hot_input]
            self._one_hot_index, dtype = one_hot["index"], one_hot["dtype"]
            scale, zero = one_hot["quantization"]
            self._one_hot_values = (self._quantize(0.0, dtype, scale, zero), self._quantize(1.0, dtype, scale, zero))
            self._one_hot = np.full((1, self.encoder.one_hot_size), self._one_hot_values[0], dtype=dtype)
        self._bags_index = None
        if self.encoder.bags_input:
            bags = inputs[self.encoder.bags_input]
            self._bags_index, dtype = bags["index"], bags["dtype"]
            scale, zero = bags["quantization"]
            self._bags_zero = self._quantize(0.0, dtype, scale, zero)
            self._bags = np.full((1, self.encoder.bags_size), self._bags_zero, dtype=dtype)
            # Weight -> input level, as for the numeric input: 1/scale, zero point, integer limits (0: float input).
            limits = (np.iinfo(dtype).min, np.iinfo(dtype).max) if scale else (0, 0)
            self._bags_levels = (1.0 / scale if scale else 0.0, zero, *limits)
        output = next(iter(runner.get_output_details().values()))
        self._output_index = output["index"]
        self._output_scale, self._output_zero = output["quantization"]
        self._output_dtype = output["dtype"]
        self.input_type = np.dtype(next(iter(inputs.values()))["dtype"]).name

    @staticmethod
    def _quantize(value: float, dtype, scale: float, zero: int):
        if not scale:
            return np.asarray(value, dtype=dtype)
        info = np.iinfo(dtype)
        return np.asarray(min(max(round(value / scale) + zero, info.min), info.max), dtype=dtype)

    def _invoke(self, record: Mapping[str, Any]) -> np.ndarray:
        """Encodes one raw record into the input tensors, runs the model, returns the raw output tensor."""
        numeric, hot = self.encoder.encode(record)
        set_tensor = self.interpreter.set_tensor
        if self._numeric is not None:
            index, buffer, inverse_scale, zero, low, high = self._numeric
            if inverse_scale:
                # Plain Python beats numpy's per-call overhead here: 1.3 vs 5.5 us for 4 values, 4.7 vs 6.2 for 30.
                levels = [round(z * inverse_scale) + zero for z in numeric]
                buffer[0] = [low if q < low else high if q > high else q for q in levels]
            else:
                buffer[0] = numeric
            set_tensor(index, buffer)
        if self._one_hot_index is not None:
            one_hot = self._one_hot
            one_hot[0, hot] = self._one_hot_values[1]
            set_tensor(self._one_hot_index, one_hot)
            one_hot[0, hot] = self._one_hot_values[0]
        if self._bags_index is not None:
            weighted = self.encoder.encode_bags(record)
            bags = self._bags
            inverse_scale, zero, low, high = self._bags_levels
            for position, weight in weighted:
                if inverse_scale:
                    level = round(weight * inverse_scale) + zero
                    bags[0, position] = low if level < low else high if level > high else level
                else:
                    bags[0, position] = weight
            set_tensor(self._bags_index, bags)
            for position, _ in weighted:
                bags[0, position] = self._bags_zero
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output_index).reshape(-1)

    def scores(self, record: Mapping[str, Any]) -> np.ndarray:
        """The model's output for one raw record, dequantized.

        Args:
            record: raw feature name -> value.

        Returns:
            A 1-D array: one value (binary probability, regression value) or one score per class.

        Raises:
            ValueError: a value cannot be encoded (e.g. text for a numeric feature; the feature is named).
        """
        out = self._invoke(record).astype(np.float64)
        return (out - self._output_zero) * self._output_scale if self._output_scale else out

    def at_output_resolution(self, values: np.ndarray) -> np.ndarray:
        """Rounds values to the levels this model's integer output can take.

        Args:
            values: scores, e.g. the SavedModel's on the same records.

        Returns:
            `values` at this output tensor's resolution: the best any model with this output could answer.
            Unchanged for a float model.
        """
        if not self._output_scale:
            return np.asarray(values, dtype=np.float64)
        info = np.iinfo(self._output_dtype)
        levels = np.clip(np.rint(np.asarray(values) / self._output_scale) + self._output_zero, info.min, info.max)
        return (levels - self._output_zero) * self._output_scale

    def predict_one(self, record: Mapping[str, Any]):
        """The prediction for one raw record.

        Args:
            record: raw feature name -> value.

        Returns:
            Binary: the probability of the positive class; regression: the value; multiclass: the array of
            class scores.
        """
        if self.task.per_class_scores:
            return self.scores(record)
        value = float(self._invoke(record)[0])
        return (value - self._output_zero) * self._output_scale if self._output_scale else value

    def predict(self, records: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """The predictions for several raw records.

        Args:
            records: raw feature mappings.

        Returns:
            An array of shape `[records]` (binary, regression) or `[records, classes]` (multiclass).
        """
        return np.array([self.predict_one(r) for r in records], dtype=np.float64)

    def answer(self, record: Mapping[str, Any]) -> Dict[str, Any]:
        """One record's prediction as a person or a JSON consumer reads it.

        Args:
            record: raw feature name -> value.

        Returns:
            Binary `{"probability", "decision"}`, multiclass `{"class", "scores"}`, regression `{"value"}`.
        """
        return self.task.device_answer(self.scores(record), self.classes)


def read_records(path: str, limit: int = 0) -> List[Dict[str, Any]]:
    """Reads raw records.

    Args:
        path: JSON lines (one object per line) or CSV with a header row; `-` reads standard input.
        limit: at most this many records (0: all).

    Returns:
        One dict per record: feature name -> value (CSV values as text; the encoder types them).

    Raises:
        ValueError: no records, or a line that is not a JSON object.
    """
    import csv

    stream = sys.stdin if path == "-" else open(path, encoding="utf-8", newline="")
    try:
        first = stream.readline()
        rest = stream
        if first.lstrip().startswith("{"):
            records = [json.loads(first)] + [json.loads(line) for line in rest if line.strip()]
            for number, record in enumerate(records, 1):
                if not isinstance(record, dict):
                    raise ValueError(f"{path}: line {number} is not a JSON object of feature -> value")
        else:
            reader = csv.DictReader([first] + list(rest))
            records = [dict(row) for row in reader]
    finally:
        if stream is not sys.stdin:
            stream.close()
    if not records:
        raise ValueError(f"{path}: no records (expected JSON lines or CSV with a header row)")
    return records[:limit] if limit else records


def describe(model: EdgeModel, extra: Optional[Dict[str, Any]] = None) -> str:
    """One line naming a loaded model: name, version, file, input type, device, and `extra` facts.

    Args:
        model: a loaded edge model.
        extra: more `name value` pairs for the line.

    Returns:
        The line, e.g. `model taxi version 1796461191, model_int8.tflite, io int8, device cpu`.
    """
    m = model.manifest
    parts = [f"model {m['model_name']} version {m['version']}", os.path.basename(model.model_path),
             f"io {model.input_type}", f"device {model.device}"]
    parts += [f"{k} {v}" for k, v in (extra or {}).items()]
    return ", ".join(parts)
