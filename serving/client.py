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
    """Reads a TFMD schema.

    Args:
        path: a `schema.pbtxt` text proto, e.g. the config's `schema_file`.

    Returns:
        The parsed schema.
    """
    with open(path, encoding="utf-8") as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def feature_types(schema: schema_pb2.Schema) -> Dict[str, int]:
    """The type of every feature of a schema.

    Args:
        schema: a schema from `load_schema`.

    Returns:
        Feature name -> `schema_pb2.FeatureType` value (INT, FLOAT or BYTES).
    """
    return {feature.name: feature.type for feature in schema.feature}


def to_example(row: Dict[str, object], types: Dict[str, int], where: str) -> tf.train.Example:
    """A tf.Example from one row of raw values, each typed by the schema.

    Args:
        row: column -> raw value (a scalar, or a list of values); `None` and `""` become an empty
            feature, which the model scores as a missing value.
        types: feature name -> schema type, from `feature_types`.
        where: where the row came from (file and line), for the error message.

    Returns:
        The tf.Example the model's `serving_default` parses.

    Raises:
        ValueError: a column is not a feature of the schema, or a value does not fit its type.
    """
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
    """Reads rows of raw features as tf.Examples, lazily.

    Args:
        path: `.jsonl`/`.json` (one JSON object per line), `.csv` (a header row) or TFRecords of
            tf.Example (`.tfrecord`; `.gz` or `.tfrecord.gz` for gzip).
        schema_file: the schema that types JSON and CSV values (the config's `schema_file`); unused for
            TFRecords.

    Returns:
        An iterator over the tf.Examples, in file order.

    Raises:
        ValueError: a line is not a JSON object, or a value does not fit the schema (the line is named).
        FileNotFoundError: a TFRecord path that does not exist.
    """
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
    """Turns `serving_default`'s outputs for a batch into one answer per example, shaped by the task.

    Args:
        outputs: output name -> array, as a Predict response holds them.

    Returns:
        One dict per example: binary `{"probability"}`, multiclass `{"class", "scores": {class: score}}`,
        regression `{"value"}`.
    """
    return tasks.of_outputs(outputs).client_answers(outputs)


class ServingClient:
    """A gRPC client of one model on TF Serving or the local server.

    Every call has a deadline and is retried with exponential backoff on UNAVAILABLE. Use it as a
    context manager, or call `close()`.

    Args:
        target: `host:port` of the gRPC server, e.g. `127.0.0.1:8500`.
        model_name: the served model's name (the config's `model_name`).
        timeout_seconds: deadline of each call.
        retries: retries of a call that failed with UNAVAILABLE.
        version: ask for this version number; takes precedence over `label`.
        label: ask for the version with this label in `models.config` (e.g. `stable`); with neither,
            the newest version the server has loaded answers.
        batch_size: examples per request.
        signature: the signature Predict calls (`serving_default`).
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
        """Closes the gRPC channel."""
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
        """Builds a Predict request for this client's model, version and signature.

        Args:
            serialized: serialized tf.Examples.

        Returns:
            The request, ready for `send`.
        """
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        request.model_spec.signature_name = self.signature
        request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(serialized, dtype=tf.string))
        return request

    def send(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Sends one prepared Predict request with this client's deadline and retries.

        Args:
            request: a request from `predict_request`.

        Returns:
            The server's response.

        Raises:
            grpc.RpcError: the call failed (UNAVAILABLE after every retry, or any other status).
        """
        return self._call(self._predict, request)

    def predict_response(self, examples: Iterable[tf.train.Example]) -> Iterator[predict_pb2.PredictResponse]:
        """Sends the examples in batches of `batch_size`.

        Args:
            examples: raw tf.Examples (without the label).

        Returns:
            An iterator over the Predict responses, one per batch, in order.
        """
        for batch in self._batches(examples):
            yield self.send(self.predict_request([example.SerializeToString() for example in batch]))

    def predict(self, examples: Iterable[tf.train.Example], output: str = PREDICTION_KEY) -> np.ndarray:
        """One output value per example, from Predict.

        Args:
            examples: raw tf.Examples.
            output: the output to read (`probabilities` for a binary model).

        Returns:
            A 1-D array with one value per example, in order.
        """
        scores = [tf.make_ndarray(response.outputs[output]).reshape(-1)
                  for response in self.predict_response(examples)]
        return np.concatenate(scores) if scores else np.zeros([0], np.float32)

    def classify(self, examples: Iterable[tf.train.Example], threshold: float = 0.5) -> np.ndarray:
        """Binary class ids from Predict (it needs no classification signature).

        Args:
            examples: raw tf.Examples.
            threshold: a probability above it is the positive class.

        Returns:
            A 1-D int64 array: 1 for the positive class (a big tipper for the taxi model), else 0.
        """
        return (self.predict(examples) > threshold).astype(np.int64)

    def answers(self, examples: Iterable[tf.train.Example]) -> Iterator[Dict[str, object]]:
        """One answer per example from Predict, shaped by the model's task.

        Args:
            examples: raw tf.Examples.

        Returns:
            An iterator over one dict per example: binary `{"probability"}`, multiclass
            `{"class", "scores"}`, regression `{"value"}`.
        """
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
        """Calls TF Serving's Classify API on the model's classification signature.

        Args:
            examples: raw tf.Examples.
            signature: the signature exported for Classify (`classify`).

        Returns:
            An iterator over one dict per example: class label -> score, in the model's class order.
        """
        for batch in self._batches(examples):
            request = classification_pb2.ClassificationRequest()
            self._examples_request(request, batch, signature)
            for result in self._call(self._classify, request).result.classifications:
                yield {c.label: c.score for c in result.classes}

    def regress_api(self, examples: Iterable[tf.train.Example], signature: str = REGRESS_SIGNATURE) -> np.ndarray:
        """Calls TF Serving's Regress API on the model's regression signature.

        Args:
            examples: raw tf.Examples.
            signature: the signature exported for Regress (`regress`).

        Returns:
            A 1-D array with one value per example, in the label's unit.
        """
        values: List[float] = []
        for batch in self._batches(examples):
            request = regression_pb2.RegressionRequest()
            self._examples_request(request, batch, signature)
            values += [r.value for r in self._call(self._regress, request).result.regressions]
        return np.array(values, dtype=np.float64)

    def status(self) -> get_model_status_pb2.GetModelStatusResponse:
        """Asks the server which versions of the model it has loaded (ModelService GetModelStatus).

        Returns:
            The status response: one entry per version with its state.
        """
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        return self._call(self._status, request)
