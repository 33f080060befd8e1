"""The serving contract: what the exported SavedModel offers and what TF Serving (or `serving/`) reads.

The Trainer exports to it, the Pusher writes its warm-up file, the servers,
clients, batch scorer and edge export read it. Names only: no TensorFlow here.
"""

import os

# Signatures of every exported SavedModel.
SERVING_SIGNATURE = "serving_default"  # serialized raw tf.Examples -> PREDICTION_KEY
TRANSFORM_SIGNATURE = "transform_features"  # serialized tf.Examples -> transformed features (TFMA's label)
EXAMPLES_INPUT = "examples"  # the input tensor of both: a [batch] string tensor of serialized tf.Examples
PREDICTION_KEY = "probabilities"  # serving_default's output: [batch, 1] probability of the positive class
# TF Serving's Classify API: serialized tf.Examples in `inputs`, `classes` + `scores` [batch, classes] out.
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
# Class labels of the binary task in the classify signature, as tf.estimator's classifiers exported them.
BINARY_CLASS_LABELS = ("0", "1")

# TF Serving's signature method names (SignatureDef.method_name), as its Classify/Regress/Predict APIs check them.
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# Files inside a pushed version directory. TF Serving replays the warm-up PredictionLogs before serving a version.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
PUSH_INFO = os.path.join("assets.extra", "push_info.json")
