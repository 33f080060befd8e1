"""TF Serving's gRPC services over the request core: PredictionService and ModelService.

`tensorflow_serving.apis` PredictionService (Predict, Classify, Regress,
MultiInference, GetModelMetadata) and ModelService (GetModelStatus), as TF
Serving's own model server answers them; a refused request is aborted with the
`RequestError`'s code and message. Predict, Classify, Regress and MultiInference send back an
`x-request-id` in the initial metadata: the caller's own, else a new one; the request log records the
request under it.
"""

from typing import Dict, List

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow_serving.apis import (classification_pb2,
                                     get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc,
                                     regression_pb2)

from contract import request_log
from contract.serving import CLASSIFY_METHOD, EXAMPLES_INPUT, REGRESS_METHOD
from serving.core import GRPC, Answer, ServingCore, dtype_name
from serving.errors import RequestError


def examples_of(request_input) -> List[bytes]:
    """The serialized examples of a Classify/Regress `Input`; with a context, each is context + example bytes,
    which proto parsing merges exactly as TF Serving does (the example's own features win). No examples: an
    empty list, refused as TF Serving refuses it ("Input is empty.") once the signature is checked."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in request_input.example_list.examples]
    if kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
        return [context + e.SerializeToString() for e in request_input.example_list_with_context.examples]
    return []


# TensorProto's repeated value field per dtype, as TF's Tensor::AsProtoField fills it (tensor.cc ProtoHelper).
_VALUE_FIELDS = {np.dtype(np.float32): "float_val", np.dtype(np.float64): "double_val",
                 np.dtype(np.int32): "int_val", np.dtype(np.int16): "int_val", np.dtype(np.int8): "int_val",
                 np.dtype(np.uint8): "int_val", np.dtype(np.uint16): "int_val", np.dtype(np.int64): "int64_val",
                 np.dtype(np.uint32): "uint32_val", np.dtype(np.uint64): "uint64_val", np.dtype(np.bool_): "bool_val",
                 np.dtype(np.complex64): "scomplex_val", np.dtype(np.complex128): "dcomplex_val",
                 np.dtype(np.float16): "half_val"}
# Fields whose packed wire form is the array's own little-endian bytes (fixed-width floats, 0/1 bytes for bool):
# parsing one length-delimited record fills them at memcpy speed, where extend() converts value by value
# (5.4 ms for 64k floats on this machine, against 24 us).
_PACKED_AS_BYTES = {"float_val": (5, np.dtype("<f4")), "double_val": (6, np.dtype("<f8")),
                    "scomplex_val": (9, np.dtype("<f4")), "dcomplex_val": (12, np.dtype("<f8")),
                    "bool_val": (11, np.dtype(np.uint8))}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def fill_tensor(proto, array: np.ndarray) -> None:
    """An output as TF Serving's Predict writes it (`Tensor::AsProtoField`): dtype, shape and the typed value
    field (`float_val`, `string_val`, ...), which clients read directly (`outputs['y'].float_val[0]`) and
    `tf.make_ndarray` reads too. A dtype without such a field is written as `tensor_content`."""
    array = np.asarray(array)
    is_string = array.dtype == object or array.dtype.kind in "SU"
    proto.dtype = tf.string.as_datatype_enum if is_string else tf.as_dtype(array.dtype).as_datatype_enum
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape)
    flat = np.ascontiguousarray(array).reshape(-1)
    if is_string:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat.tolist())
        return
    field = _VALUE_FIELDS.get(array.dtype) or ("half_val" if array.dtype.name == "bfloat16" else None)
    if field is None:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    elif field in _PACKED_AS_BYTES:
        number, wire = _PACKED_AS_BYTES[field]
        values = flat.view(flat.real.dtype) if flat.dtype.kind == "c" else flat  # complex: real, imag, ...
        payload = np.ascontiguousarray(values, dtype=wire).tobytes()
        proto.MergeFromString(_varint(number << 3 | 2) + _varint(len(payload)) + payload)
    elif field == "half_val":  # the 16 bits of each half or bfloat16, as int32 values
        getattr(proto, field).extend(flat.view(np.uint16).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def _key(self, context) -> str:
        header = self._core.serving.experiment_key_header.lower()
        return next((value for name, value in context.invocation_metadata() if name == header), "")

    @staticmethod
    def _request_id(context) -> str:
        """The caller's `x-request-id` metadata, else a new id; sent back at once in the initial metadata, so
        the caller has it whether the call succeeds or fails."""
        given = next((value for name, value in context.invocation_metadata()
                      if name == request_log.REQUEST_ID_HEADER), "")
        request_id = given or request_log.new_request_id()
        if not request_log.request_id_problem(request_id):
            context.send_initial_metadata(((request_log.REQUEST_ID_HEADER, request_id),))
        return request_id

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
            answer = self._core.observe("Predict", GRPC, request.model_spec.name, call, self._request_id(context))
        except RequestError as error:
            context.abort(error.code, str(error))
        response = predict_pb2.PredictResponse()
        _model_spec(response.model_spec, answer, answer.signature)
        for name, value in answer.outputs.items():
            fill_tensor(response.outputs[name], value)
        return response

    def _examples(self, request, method: str, api: str, context) -> Answer:
        def call():
            return self._core.examples_call(request.model_spec, method, examples_of(request.input),
                                            self._key(context))

        try:
            return self._core.observe(api, GRPC, request.model_spec.name, call, self._request_id(context))
        except RequestError as error:
            context.abort(error.code, str(error))

    def Classify(self, request: classification_pb2.ClassificationRequest, context):
        answer = self._examples(request, CLASSIFY_METHOD, "Classify", context)
        response = classification_pb2.ClassificationResponse(result=answer.result)
        _model_spec(response.model_spec, answer, answer.signature)
        return response

    def Regress(self, request: regression_pb2.RegressionRequest, context):
        answer = self._examples(request, REGRESS_METHOD, "Regress", context)
        response = regression_pb2.RegressionResponse(result=answer.result)
        _model_spec(response.model_spec, answer, answer.signature)
        return response

    def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context):
        def call():
            return self._core.multi_inference([(task.model_spec, task.method_name) for task in request.tasks],
                                              examples_of(request.input), self._key(context))

        name = request.tasks[0].model_spec.name if request.tasks else ""
        try:
            answer = self._core.observe("MultiInference", GRPC, name, call, self._request_id(context))
        except RequestError as error:
            context.abort(error.code, str(error))
        response = inference_pb2.MultiInferenceResponse()
        for signature, result in answer.results:
            item = response.results.add()
            _model_spec(item.model_spec, answer, signature)
            if isinstance(result, classification_pb2.ClassificationResult):
                item.classification_result.CopyFrom(result)
            else:
                item.regression_result.CopyFrom(result)
        return response

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        try:  # TF Serving's GetModelMetadataImpl checks, with its texts
            if not request.HasField("model_spec"):
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            if not request.metadata_field:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "GetModelMetadataRequest must specify at least one metadata_field "
                                   "(signature_def)")
            for field in request.metadata_field:
                if field != "signature_def":
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Metadata field {field} is not supported; ask for signature_def")
            return self._core.metadata(request.model_spec)
        except RequestError as error:
            context.abort(error.code, str(error))


def _model_spec(spec, answer: Answer, signature: str) -> None:
    """TF Serving's MakeModelSpec: the model, the signature that ran, the version that answered."""
    spec.name, spec.signature_name = answer.loaded.name, signature
    spec.version.value = answer.loaded.version


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self._core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        try:
            if not request.HasField("model_spec"):
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
            return self._core.status(request.model_spec)
        except RequestError as error:
            context.abort(error.code, str(error))
