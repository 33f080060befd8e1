"""TF Serving's Classify and Regress rules: which signatures fit them and how their outputs become results.

Written from TF Serving's `servables/tensorflow/classifier.cc` and `regressor.cc`
(`PreProcessClassification`/`PreProcessRegression`, `PostProcess...Result`) and
`multi_inference.cc`, with their error texts: a signature fits Classify when it has
one input, `inputs`, fed with the serialized tf.Examples, and one or two outputs
among `classes` ([batch, classes] strings) and `scores` ([batch, classes] floats);
it fits Regress with one input `inputs` and one output `outputs` ([batch] or
[batch, 1] floats). The method name (`tensorflow/serving/classify`) is checked only
with `serving.enable_signature_method_name_check` (TF Serving's
`--enable_signature_method_name_check`, off by default), so the signatures that
`tf.saved_model.save` marks as predict signatures serve too.

Each refusal starts with TF Serving's own text and adds, where it helps, which
signatures of the version would fit.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from contract.serving import (CLASSIFY_CLASSES, CLASSIFY_INPUTS, CLASSIFY_METHOD, CLASSIFY_SCORES, PREDICT_METHOD,
                              REGRESS_INPUTS, REGRESS_METHOD, REGRESS_OUTPUTS)
from serving.errors import RequestError


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _debug(signature_def) -> str:
    """TF Serving quotes `signature.DebugString()`; the same text on one line."""
    return text_format.MessageToString(signature_def, as_one_line=True)


def _shape(array: np.ndarray) -> str:
    """TensorShape::DebugString: [2,3]."""
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _dtype(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "DT_STRING"
    return types_pb2.DataType.Name(tf.as_dtype(array.dtype).as_datatype_enum)


def _classification_outputs(signature_def, check_method: bool) -> List[str]:
    """PreProcessClassification: the outputs Classify reads, or TF Serving's refusal."""
    if check_method and signature_def.method_name != CLASSIFY_METHOD:
        raise _invalid(f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
                       f"Was: {signature_def.method_name}")
    if len(signature_def.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    if len(signature_def.outputs) not in (1, 2):
        raise _invalid(f"Expected one or two output Tensors, found {len(signature_def.outputs)}")
    if CLASSIFY_INPUTS not in signature_def.inputs:
        raise _invalid(f"No classification inputs found in SignatureDef: {_debug(signature_def)}")
    outputs = [key for key in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if key in signature_def.outputs]
    if not outputs:
        raise _invalid(f'Expected classification signature outputs to contain at least one of "{CLASSIFY_CLASSES}" '
                       f'or "{CLASSIFY_SCORES}". Signature was: {_debug(signature_def)}')
    return outputs


def _regression_outputs(signature_def, check_method: bool) -> List[str]:
    """PreProcessRegression: the output Regress reads, or TF Serving's refusal."""
    if check_method and signature_def.method_name != REGRESS_METHOD:
        raise _invalid(f"Expected regression signature method_name to be {REGRESS_METHOD}. "
                       f"Was: {signature_def.method_name}")
    if len(signature_def.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    if len(signature_def.outputs) != 1:
        raise _invalid("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature_def.inputs:
        raise _invalid(f"No regression inputs found in SignatureDef: {_debug(signature_def)}")
    if REGRESS_OUTPUTS not in signature_def.outputs:
        raise _invalid(f"No regression outputs found in SignatureDef: {_debug(signature_def)}")
    return [REGRESS_OUTPUTS]


def classification_result(outputs: Dict[str, np.ndarray], examples: int) -> classification_pb2.ClassificationResult:
    """PostProcessClassificationResult: one Classifications per example, its classes in the model's order."""
    classes, scores = outputs.get(CLASSIFY_CLASSES), outputs.get(CLASSIFY_SCORES)
    for name, array, dtype in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if array is None:
            continue
        if array.ndim != 2:
            raise _invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(array)}")
        if _dtype(array) != dtype:
            raise _invalid(f"Expected {name} Tensor of {dtype}. Got: {_dtype(array)}")
        if array.shape[0] != examples:
            raise _invalid(f"Expected {name} output batch size of {examples}. Got: {array.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise _invalid(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                       f"{scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    labels = classes.tolist() if classes is not None else None
    values = scores.tolist() if scores is not None else None
    for row in range(examples):
        classifications = result.classifications.add()
        for column in range(width):
            item = classifications.classes.add()
            if labels is not None:
                item.label = labels[row][column].decode("utf-8", "replace")
            if values is not None:
                item.score = values[row][column]
    return result


def regression_result(outputs: Dict[str, np.ndarray], examples: int) -> regression_pb2.RegressionResult:
    """PostProcessRegressionResult: one value per example, from a [batch] or [batch, 1] float output."""
    values = outputs[REGRESS_OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise _invalid(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                       f"{_shape(values)}")
    if values.shape[0] != examples:
        raise _invalid(f"Input batch size did not match output batch size: {examples} vs. {values.shape[0]}")
    if _dtype(values) != "DT_FLOAT":
        raise _invalid(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype(values)}")
    result = regression_pb2.RegressionResult()
    for value in values.reshape(-1).tolist():
        result.regressions.add().value = value
    return result


@dataclass(frozen=True)
class Method:
    """Classify or Regress: its method name, which outputs a fitting signature gives, and its result."""

    api: str  # Classify | Regress
    method_name: str
    inputs: str  # the one input, fed the serialized tf.Examples
    outputs: Callable  # (signature_def, check_method) -> output keys, or RequestError
    result: Callable  # (outputs, examples) -> ClassificationResult | RegressionResult

    def check(self, loaded, name: str, check_method: bool) -> List[str]:
        """The outputs to read from signature `name` of `loaded`; a refusal names the signatures that fit."""
        signature_def = loaded.signature_defs[name]
        try:
            outputs = self.outputs(signature_def, check_method)
        except RequestError as error:
            raise _invalid(f"{error} ({loaded.name} version {loaded.version}, signature {name!r}). "
                           f"{self.hint(loaded, check_method)}") from None
        dtype = signature_def.inputs[self.inputs].dtype
        if dtype != types_pb2.DT_STRING:
            raise _invalid(f"Signature {name!r} of {loaded.name} version {loaded.version} takes "
                           f"{types_pb2.DataType.Name(dtype)} '{self.inputs}'; {self.api} feeds it "
                           f"serialized tf.Examples (DT_STRING): use Predict for this signature. "
                           f"{self.hint(loaded, check_method)}")
        return outputs

    def fitting(self, loaded, check_method: bool) -> List[str]:
        fits = []
        for key, definition in sorted(loaded.signature_defs.items()):
            try:
                self.outputs(definition, check_method)
            except RequestError:
                continue
            if definition.inputs[self.inputs].dtype == types_pb2.DT_STRING:
                fits.append(key)
        return fits

    def hint(self, loaded, check_method: bool) -> str:
        fits = self.fitting(loaded, check_method)
        if fits:
            return f"Signatures that fit {self.api}: {', '.join(repr(k) for k in fits)}."
        return f"No signature of {loaded.name} version {loaded.version} fits {self.api}; use Predict."


CLASSIFY = Method("Classify", CLASSIFY_METHOD, CLASSIFY_INPUTS, _classification_outputs, classification_result)
REGRESS = Method("Regress", REGRESS_METHOD, REGRESS_INPUTS, _regression_outputs, regression_result)
METHODS = {CLASSIFY_METHOD: CLASSIFY, REGRESS_METHOD: REGRESS}
PREDICTION_METHODS = (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD)
