"""Edge TPU readiness: would `edgetpu_compiler` map every op of the model to the TPU?

The compiler itself only exists for Debian/Ubuntu x86-64 and is not installed here,
so this check reads the model through the interpreter (no TensorFlow) and applies
the compiler's documented rules: every op in the supported set, int8/uint8 tensors
(int32 only for biases and for the parameters of shape ops: slice bounds, shapes, axes),
static shapes. Any op that fails a rule is named: the
compiler would cut the graph there and run it and everything after it on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np

from edge.runtime import interpreter_module

# https://coral.ai/docs/edgetpu/models-intro/#supported-operations (TFLite builtin names).
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD",
    "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
    "DEQUANTIZE", "GATHER", "BATCH_MATMUL", "UNPACK",
})
_INTEGER = (np.int8, np.uint8)
# Ops whose inputs after the first are parameters (begin/end/strides, shapes, axes, paddings, indices): int32 in
# every TFLite model, the Edge TPU's compiled MobileNets included; only their data input must be 8-bit.
PARAMETER_OPS = frozenset({"STRIDED_SLICE", "SLICE", "RESHAPE", "PAD", "TRANSPOSE", "MEAN", "SUM", "REDUCE_MAX",
                           "REDUCE_MIN", "EXPAND_DIMS", "SPLIT", "GATHER", "SQUEEZE"})


@dataclass
class Readiness:
    ops: List[str]
    cpu_ops: List[str] = field(default_factory=list)  # "OP #i: reason"
    dynamic_inputs: List[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.cpu_ops and not self.dynamic_inputs

    def report(self) -> str:
        lines = [f"ops: {', '.join(self.ops)}"]
        if self.ready:
            lines.append("Edge TPU ready: every op is supported with int8 tensors and every shape is static")
        for reason in self.dynamic_inputs:
            lines.append(f"dynamic shape: {reason}")
        for reason in self.cpu_ops:
            lines.append(f"would run on the CPU: {reason}")
        return "\n".join(lines)

    def to_dict(self):
        return {"ready": self.ready, "ops": self.ops, "cpu_ops": self.cpu_ops, "dynamic_inputs": self.dynamic_inputs}


def check(model_path: str = "", model_content: bytes = b"") -> Readiness:
    module = interpreter_module()
    # Without default delegates: XNNPACK would replace the ops under inspection with one DELEGATE node.
    interpreter = module.Interpreter(
        model_path=model_path or None, model_content=model_content or None,
        experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    readiness = Readiness(ops=[])
    for detail in interpreter.get_input_details() + interpreter.get_output_details():
        if (np.asarray(detail["shape_signature"]) < 0).any():
            readiness.dynamic_inputs.append(f"{detail['name']} has shape {detail['shape_signature'].tolist()}")
    for op in interpreter._get_ops_details():  # The interpreter's only op listing; stable since TF 2.5.
        name = op["op_name"]
        readiness.ops.append(name)
        where = f"{name} #{op['index']}"
        if name not in EDGETPU_OPS:
            readiness.cpu_ops.append(f"{where}: not in the Edge TPU's supported ops")
            continue
        parameters = set(list(op["inputs"])[1:]) if name in PARAMETER_OPS else set()
        for index in list(op["inputs"]) + list(op["outputs"]):
            if index < 0 or (index in parameters and np.dtype(tensors[index]["dtype"]) == np.int32):
                continue
            tensor = tensors[index]
            dtype = np.dtype(tensor["dtype"])
            # Biases of FULLY_CONNECTED/CONV are int32 in full-integer models; that is what the TPU expects.
            if dtype not in _INTEGER and not (dtype == np.int32 and tensor["quantization"][0]):
                readiness.cpu_ops.append(f"{where}: tensor {tensor['name']} is {dtype.name}, not int8")
                break
    readiness.ops = sorted(set(readiness.ops), key=readiness.ops.index)
    return readiness
