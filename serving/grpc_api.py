"""TF Serving's gRPC services over the request core: PredictionService and ModelService.

`tensorflow_serving.apis` PredictionService (Predict, Classify, Regress,
GetModelMetadata) and ModelService (GetModelStatus), as TF Serving's own model
server answers them; a refused request is aborted with the `RequestError`'s code
and message.
"""

from typing import Dict, List

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow_serving.apis import (classification_pb2,
                                     get_model_metadata_pb2,
                                     get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc,
                                     regression_pb2)

from contract.serving import CLASSIFY_METHOD, EXAMPLES_INPUT, REGRESS_METHOD
from serving.core import (GRPC, Answer, ServingCore, classification_result,
                          dtype_name)
from serving.errors import RequestError


def examples_of(request_input) -> List[bytes]:
    """The serialized examples of a Classify/Regress `Input`; with a context, each is context + example bytes,
    which proto parsing merges exactly as TF Serving does (the example's own features win)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request_input.example_list.examples]
    if kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
        return [context + e.SerializeToString() for e in request_input.example_list_with_context.examples]
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       "input is empty; put the tf.Examples in input.example_list (or example_list_with_context)")



# A TensorProto holding one value and a large shape expands to that many values (TF's broadcast rule); a gRPC
# message (4 MB by default) cannot carry more than a few million values otherwise. Found by fuzzing: one
# request declaring 2^30 floats allocated 4 GB.
MAX_INPUT_ELEMENTS = 1 << 24


def _check_declared_size(name: str, proto) -> None:
    """Refuses a negative dimension, or more values than any real request carries, before they are allocated."""
    elements = 1
    for dim in proto.tensor_shape.dim:
        if dim.size < 0:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input {name!r} has a negative dimension ({dim.size}) in its tensor_shape")
        elements *= dim.size
    if elements > MAX_INPUT_ELEMENTS:
        shape = [d.size for d in proto.tensor_shape.dim]
        raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"input {name!r} declares {elements} values (tensor_shape {shape}); this server builds "
                           f"at most {MAX_INPUT_ELEMENTS} per input: send smaller batches")


def _fill_tensor(proto, array: np.ndarray) -> None:
    """Numeric outputs as raw `tensor_content`, as TF Serving writes them; tf.make_tensor_proto's generic path
    costs about 0.1 ms a call, a tenth of a batch-1 request."""
    if array.dtype == object or array.dtype.kind in "SU":
        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = tf.as_dtype(array.dtype).as_datatype_enum
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape)
    proto.tensor_content = np.ascontiguousarray(array).tobytes()


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def _key(self, context) -> str:
        header = self._core.serving.experiment_key_header.lower()
        return next((value for name, value in context.invocation_metadata() if name == header), "")

    @staticmethod
    def _arrays(request, signature_def) -> Dict[str, np.ndarray]:
        arrays = {}
        expected = {name: info.dtype for name, info in signature_def.inputs.items()}
        for name, proto in request.inputs.items():
            if name in expected and proto.dtype != expected[name]:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {name!r} has dtype {dtype_name(proto.dtype)}; the signature expects "
                                   f"{dtype_name(expected[name])}"
                                   + (" (serialized tf.Example protos)" if name == EXAMPLES_INPUT else ""))
            _check_declared_size(name, proto)
            try:
                arrays[name] = tf.make_ndarray(proto)
            except Exception as error:  # noqa: BLE001 - malformed TensorProto
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {name!r} is not a valid TensorProto: {error}") from None
        return arrays

    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        def call():
            return self._core.predict(request.model_spec, lambda signature_def: self._arrays(request, signature_def),
                                      list(request.output_filter), self._key(context))

        try:
            answer = self._core.observe("Predict", GRPC, request.model_spec.name, call)
        except RequestError as error:
            context.abort(error.code, str(error))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = answer.loaded.name
        response.model_spec.version.value = answer.loaded.version
        response.model_spec.signature_name = answer.signature
        for name, value in answer.outputs.items():
            _fill_tensor(response.outputs[name], np.asarray(value))
        return response

    def _examples(self, request, method: str, api: str, context) -> Answer:
        def call():
            return self._core.examples_call(request.model_spec, method, examples_of(request.input),
                                            self._key(context))

        try:
            return self._core.observe(api, GRPC, request.model_spec.name, call)
        except RequestError as error:
            context.abort(error.code, str(error))

    def Classify(self, request: classification_pb2.ClassificationRequest, context):
        answer = self._examples(request, CLASSIFY_METHOD, "Classify", context)
        response = classification_pb2.ClassificationResponse()
        response.model_spec.name, response.model_spec.signature_name = answer.loaded.name, answer.signature
        response.model_spec.version.value = answer.loaded.version
        classification_result(answer.outputs, response.result)
        return response

    def Regress(self, request: regression_pb2.RegressionRequest, context):
        answer = self._examples(request, REGRESS_METHOD, "Regress", context)
        response = regression_pb2.RegressionResponse()
        response.model_spec.name, response.model_spec.signature_name = answer.loaded.name, answer.signature
        response.model_spec.version.value = answer.loaded.version
        for value in np.asarray(answer.outputs["outputs"]).reshape(-1):
            response.result.regressions.add().value = float(value)
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"metadata_field {list(request.metadata_field)} is not supported; "
                                   "ask for ['signature_def']")
            return self._core.metadata(request.model_spec)
        except RequestError as error:
            context.abort(error.code, str(error))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        try:
            return self._core.status(request.model_spec)
        except RequestError as error:
            context.abort(error.code, str(error))
