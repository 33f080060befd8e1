"""The TensorFlow ops a SavedModel needs beyond TensorFlow's own, registered before the model is loaded.

A `gbdt` model (TensorFlow Decision Forests) holds TF-DF's inference ops
(`SimpleMLInferenceOpWithHandle`, `SimpleMLCreateModelResource`, ...). They are
registered by importing `tensorflow_decision_forests`; a process that loads
such a model without that import fails with "Op type not registered". Every
in-process loader of a served model calls `register_for(saved_model_dir)` first:
the local server, batch scoring, the Evaluator (TFMA, also in Beam worker
processes), the edge export and BulkInferrer. The ops are read from the model's
graph, so the import happens only for models that need it (importing TF-DF costs
about a second and a few hundred MB). TF Serving >= 2.11 has these ops built in.
"""

import importlib
import os
from typing import Set

# Op name prefix -> the package whose import registers those ops.
PROVIDERS = {"SimpleML": "tensorflow_decision_forests", "YggdrasilDecisionForests": "tensorflow_decision_forests"}


def op_names(saved_model_dir: str) -> Set[str]:
    """Every op type in the SavedModel's graphs and their function libraries."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    found = set()
    for meta_graph in saved_model.meta_graphs:
        found.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            found.update(node.op for node in function.node_def)
    return found


def providers_for(saved_model_dir: str) -> Set[str]:
    """The packages whose ops the SavedModel uses."""
    return {package for op in op_names(saved_model_dir) for prefix, package in PROVIDERS.items()
            if op.startswith(prefix)}


def register_for(saved_model_dir: str) -> Set[str]:
    """Imports the packages that register the ops the SavedModel needs; returns their names."""
    packages = providers_for(saved_model_dir)
    for package in sorted(packages):
        importlib.import_module(package)
    return packages


def load(saved_model_dir: str):
    """`tf.saved_model.load`, after registering the ops the model needs."""
    import tensorflow as tf

    register_for(saved_model_dir)
    return tf.saved_model.load(saved_model_dir)
