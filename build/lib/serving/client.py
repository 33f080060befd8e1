"""A TF Serving gRPC client: raw feature rows in, probabilities out.

It uses only `tensorflow_serving.apis` Predict and GetModelStatus, so the same
code talks to the local server (`python -m serving serve`) and to real TF
Serving. Rows come from JSON lines, CSV or tf.Example TFRecords; JSON and CSV
values are typed by the schema (`schema_file`), the same schema the pipeline
validates training data against, so a client sends exactly what training saw.
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
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2, \
    prediction_service_pb2_grpc

from contract.serving import EXAMPLES_INPUT, PREDICTION_KEY, SERVING_SIGNATURE

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
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel).Predict
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
        batch: List[bytes] = []
        for example in examples:
            batch.append(example.SerializeToString())
            if len(batch) == self.batch_size:
                yield self.send(self.predict_request(batch))
                batch = []
        if batch:
            yield self.send(self.predict_request(batch))

    def predict(self, examples: Iterable[tf.train.Example], output: str = PREDICTION_KEY) -> np.ndarray:
        """One score per example, in order (`probabilities` for the taxi model)."""
        scores = [tf.make_ndarray(response.outputs[output]).reshape(-1)
                  for response in self.predict_response(examples)]
        return np.concatenate(scores) if scores else np.zeros([0], np.float32)

    def classify(self, examples: Iterable[tf.train.Example], threshold: float = 0.5) -> np.ndarray:
        """Class ids (1 = big tipper) from Predict, so it needs no classification signature."""
        return (self.predict(examples) > threshold).astype(np.int64)

    def status(self) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        return self._call(self._status, request)
