"""A TF Serving gRPC client: raw feature rows in, the model's answers out.

It uses only `tensorflow_serving.apis` (Predict, Classify, Regress, GetModelStatus),
so the same code talks to the local server (`tfx-edge serving serve`) and to real
TF Serving. Answers follow the model's task, read from what `serving_default`
returns (contract/serving.py): a probability (binary), the predicted class and a
score per class (multiclass), or a value (regression). Rows come from JSON lines,
CSV or tf.Example TFRecords; JSON and CSV values are typed by the schema
(`schema_file`), the same schema the pipeline validates training data against,
so a client sends exactly what training saw.
"""

import csv
import json
import os
import time
from typing import Dict, Iterable, Iterator, List, Optional

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_serving.apis import classification_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2, \
    prediction_service_pb2_grpc, regression_pb2

from contract import tasks
from contract.serving import CLASSIFY_SIGNATURE, EXAMPLES_INPUT, PREDICTION_KEY, REGRESS_SIGNATURE, SERVING_SIGNATURE

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


def load_schema(path: str) -> schema_pb2.Schema:
    with open(path, encoding="utf-8") as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def feature_types(schema: schema_pb2.Schema) -> Dict[str, int]:
    return {feature.name: feature.type for feature in schema.feature}


def to_example(row: Dict[str, object], types: Dict[str, int], where: str) -> tf.train.Example:
    """A tf.Example from one row of raw values; empty values become empty features (missing)."""
    example = tf.train.Example()
    for name, value in row.items():
        if name not in types:
            raise ValueError(f"{where}: column {name!r} is not a feature of the schema; known features: "
                             f"{', '.join(sorted(types))}")
        values = value if isinstance(value, list) else ([] if value in (None, "") else [value])
        feature = example.features.feature[name]
        try:
            if types[name] == schema_pb2.INT:
                feature.int64_list.value.extend(int(float(v)) for v in values)
            elif types[name] == schema_pb2.FLOAT:
                feature.float_list.value.extend(float(v) for v in values)
            else:
                feature.bytes_list.value.extend(str(v).encode() for v in values)
        except ValueError:
            kind = schema_pb2.FeatureType.Name(types[name])
            raise ValueError(f"{where}: feature {name!r} must be {kind}, got {value!r}") from None
    return example


def read_examples(path: str, schema_file: str) -> Iterator[tf.train.Example]:
    """tf.Examples from `.jsonl`/`.json` (one object per line), `.csv` (header row) or TFRecords
    (`.tfrecord`, `.tfrecord.gz`, `.gz` = gzip)."""
    if path.endswith((".jsonl", ".json", ".csv")):
        types = feature_types(load_schema(schema_file))
        with open(path, encoding="utf-8", newline="") as f:
            if path.endswith(".csv"):
                for number, row in enumerate(csv.DictReader(f), start=2):
                    yield to_example(row, types, f"{path} line {number}")
                return
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} line {number}: not a JSON object ({error.msg})") from None
                yield to_example(row, types, f"{path} line {number}")
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    compression = "GZIP" if path.endswith(".gz") else ""
    for record in tf.data.TFRecordDataset(path, compression_type=compression):
        yield tf.train.Example.FromString(record.numpy())


def task_answers(outputs: Dict[str, np.ndarray]) -> List[Dict[str, object]]:
    """serving_default's outputs for a batch -> one answer per example (`Task.client_answers`): binary
    {"probability"}, multiclass {"class", "scores": {class: score}}, regression {"value"}."""
    return tasks.of_outputs(outputs).client_answers(outputs)


class ServingClient:
    """Predict over gRPC with a deadline per call and retries (exponential backoff) on UNAVAILABLE.

    Pick the version by `version` or `label` (e.g. `stable`); neither means the
    newest version the server has loaded.
    """

    def __init__(self, target: str, model_name: str, timeout_seconds: float = 10.0, retries: int = 3,
                 version: Optional[int] = None, label: str = "", batch_size: int = 64,
                 signature: str = SERVING_SIGNATURE):
        self.target = target
        self.model_name = model_name
        self.timeout = timeout_seconds
        self.retries = retries
        self.version = version
        self.label = label
        self.batch_size = batch_size
        self.signature = signature
        self._channel = grpc.insecure_channel(target)
        service = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._predict, self._classify, self._regress = service.Predict, service.Classify, service.Regress
        self._status = model_service_pb2_grpc.ModelServiceStub(self._channel).GetModelStatus

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _spec(self, spec) -> None:
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        elif self.label:
            spec.version_label = self.label

    def _call(self, method, request):
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() not in RETRYABLE or attempt == self.retries:
                    raise
                time.sleep(min(0.1 * 2 ** attempt, 2.0))
        raise AssertionError("unreachable")

    def predict_request(self, serialized: List[bytes]) -> predict_pb2.PredictRequest:
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        request.model_spec.signature_name = self.signature
        request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
        return request

    def send(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """One prepared Predict request, with this client's deadline and retries."""
        return self._call(self._predict, request)

    def predict_response(self, examples: Iterable[tf.train.Example]) -> Iterator[predict_pb2.PredictResponse]:
        for batch in self._batches(examples):
            yield self.send(self.predict_request([example.SerializeToString() for example in batch]))

    def predict(self, examples: Iterable[tf.train.Example], output: str = PREDICTION_KEY) -> np.ndarray:
        """One score per example, in order (`probabilities` for the taxi model)."""
        scores = [tf.make_ndarray(response.outputs[output]).reshape(-1)
                  for response in self.predict_response(examples)]
        return np.concatenate(scores) if scores else np.zeros([0], np.float32)

    def classify(self, examples: Iterable[tf.train.Example], threshold: float = 0.5) -> np.ndarray:
        """Binary class ids (1 = big tipper) from Predict, so it needs no classification signature."""
        return (self.predict(examples) > threshold).astype(np.int64)

    def answers(self, examples: Iterable[tf.train.Example]) -> Iterator[Dict[str, object]]:
        """One answer per example from Predict, shaped by the model's task (module docstring)."""
        for response in self.predict_response(examples):
            outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
            yield from task_answers(outputs)

    def _examples_request(self, request, examples: Iterable[tf.train.Example], signature: str) -> None:
        self._spec(request.model_spec)
        request.model_spec.signature_name = signature
        request.input.example_list.examples.extend(examples)

    def _batches(self, examples: Iterable[tf.train.Example]) -> Iterator[List[tf.train.Example]]:
        batch: List[tf.train.Example] = []
        for example in examples:
            batch.append(example)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def classify_api(self, examples: Iterable[tf.train.Example],
                     signature: str = CLASSIFY_SIGNATURE) -> Iterator[Dict[str, float]]:
        """TF Serving's Classify API: per example, class label -> score, in the model's class order."""
        for batch in self._batches(examples):
            request = classification_pb2.ClassificationRequest()
            self._examples_request(request, batch, signature)
            for result in self._call(self._classify, request).result.classifications:
                yield {c.label: c.score for c in result.classes}

    def regress_api(self, examples: Iterable[tf.train.Example], signature: str = REGRESS_SIGNATURE) -> np.ndarray:
        """TF Serving's Regress API: one value per example."""
        values: List[float] = []
        for batch in self._batches(examples):
            request = regression_pb2.RegressionRequest()
            self._examples_request(request, batch, signature)
            values += [r.value for r in self._call(self._regress, request).result.regressions]
        return np.array(values, dtype=np.float64)

    def status(self) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        return self._call(self._status, request)
