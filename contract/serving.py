"""The serving contract: what the exported SavedModel offers and what TF Serving (or `serving/`) reads.

The Trainer exports to it, the Pusher writes its warm-up file, the servers,
clients, batch scorer and edge export read it. Names only: no TensorFlow here.

Outputs of `serving_default` per task (`features.task`; the primary one is `contract.tasks.Task.primary_output`):
- binary: PREDICTION_KEY [batch, 1] (probability of the positive class), SCORES [batch, 2],
  CLASSES [batch, 2] and PREDICTED_CLASS [batch];
- multiclass: SCORES [batch, classes], CLASSES [batch, classes] (class names aligned with
  the scores, as TF Serving's Classify returns them) and PREDICTED_CLASS [batch];
- regression: VALUE_KEY [batch, 1].
"""

import os

# Signatures of every exported SavedModel.
SERVING_SIGNATURE = "serving_default"  # serialized raw tf.Examples -> the task's outputs (above)
TRANSFORM_SIGNATURE = "transform_features"  # serialized tf.Examples -> transformed features (TFMA's label)
EXAMPLES_INPUT = "examples"  # the input tensor of both: a [batch] string tensor of serialized tf.Examples
PREDICTION_KEY = "probabilities"  # binary: [batch, 1] probability of the positive class
SCORES = "scores"  # classification: [batch, classes] probability of each class
CLASSES = "classes"  # classification: [batch, classes] class names, aligned with SCORES
PREDICTED_CLASS = "predicted_class"  # classification: [batch] name of the most probable class
VALUE_KEY = "predictions"  # regression: [batch, 1] predicted value, in the label's unit

# TF Serving's Classify API: serialized tf.Examples in `inputs`, `classes` + `scores` [batch, classes] out.
CLASSIFY_SIGNATURE = "classify"
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = CLASSES
CLASSIFY_SCORES = SCORES
# TF Serving's Regress API: serialized tf.Examples in `inputs`, `outputs` [batch, 1] out.
REGRESS_SIGNATURE = "regress"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"

# TF Serving's signature method names (SignatureDef.method_name), as its Classify/Regress/Predict APIs check them.
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

# Files inside a pushed version directory. TF Serving replays the warm-up PredictionLogs before serving a version.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
PUSH_INFO = os.path.join("assets.extra", "push_info.json")
