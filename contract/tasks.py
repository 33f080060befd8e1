"""One object per task type (binary, multiclass, regression): everything that differs between them.

`features.task` names one of `TASKS`; every stage asks `task(name)` instead of
branching on the name: the label rule, the model's head, loss and metrics, the
Tuner's objective, TFMA's metrics and blessing rules, the serving outputs and the
Classify/Regress API, the edge gate and the device's answers, batch prediction
columns, the headline metric of reports and triggers, and what `init` writes.

numpy only (no TensorFlow, no YAML): the TensorFlow-free device runtime imports
it. TensorFlow code elsewhere reads the plain values here (an activation name,
a Keras loss identifier, a TFMA metric class name) and builds its own objects.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from contract import metrics as quality
from contract.serving import (CLASSES, CLASSIFY_CLASSES, PREDICTED_CLASS, CLASSIFY_INPUTS, CLASSIFY_METHOD, CLASSIFY_SCORES,
                              CLASSIFY_SIGNATURE, PREDICTION_KEY, REGRESS_INPUTS, REGRESS_METHOD, REGRESS_OUTPUTS,
                              REGRESS_SIGNATURE, SCORES, VALUE_KEY)

# A binary model decides for the positive class above this probability (device answers, batch columns, the gate).
DECISION_THRESHOLD = 0.5
# Tolerance of a "no worse than the baseline" rule: float noise in an identical candidate's difference (an
# unchanged re-run) must not fail it.
CHANGE_EPSILON = 1e-10


@dataclass(frozen=True)
class Metric:
    """A metric as people read it: its key in a metrics dict, a label, and which way is better."""

    key: str
    label: str
    higher_is_better: bool = True
    percent: bool = False  # a share, shown as a percentage

    def format(self, value: Optional[float]) -> str:
        if value is None or value != value:
            return "-"
        return f"{value:.2%}" if self.percent else f"{value:.4f}"


@dataclass(frozen=True)
class Blessing:
    """One blessing rule on the overall slice: TFMA's metric, its bound and the change allowed vs the baseline.

    The Evaluator's thresholds (`Task.tfma_metrics_specs`), the run summary's and the
    HTML report's rule texts (`texts`) all come from these, so they cannot disagree.
    """

    metric: str  # TFMA's metric class name, e.g. "AUC"
    key: str  # its key in TFMA's results, e.g. "auc", "macro_auc"
    label: str
    lower: Optional[float] = None
    upper: Optional[float] = None
    worse_by: Optional[float] = None  # how much worse than the baseline the candidate may be; None: not compared
    higher_is_better: bool = True
    macro: bool = False  # a macro average over the classes (one-vs-rest)

    def texts(self, with_baseline: bool) -> List[str]:
        """The rule in words: bounds, then the comparison with the baseline when there is one."""
        found = [f">= {self.lower:g}"] if self.lower is not None else []
        found += [f"<= {self.upper:g}"] if self.upper is not None else []
        if with_baseline and self.worse_by is not None:
            found.append(f"no more than {self.worse_by:g} {'below' if self.higher_is_better else 'above'} "
                         "the baseline")
        return found

    def threshold(self) -> Dict[str, Any]:
        """TFMA's MetricThreshold, as the JSON that `json_format.ParseDict` reads into the proto."""
        threshold: Dict[str, Any] = {}
        value = {}
        if self.lower is not None:
            value["lower_bound"] = self.lower
        if self.upper is not None:
            value["upper_bound"] = self.upper
        if value:
            threshold["value_threshold"] = value
        if self.worse_by is not None:
            threshold["change_threshold"] = {
                "direction": "HIGHER_IS_BETTER" if self.higher_is_better else "LOWER_IS_BETTER",
                "absolute": -self.worse_by - CHANGE_EPSILON if self.higher_is_better else
                self.worse_by + CHANGE_EPSILON}
        return threshold


@dataclass(frozen=True)
class ExamplesApi:
    """TF Serving's Classify or Regress API: the signature the model exports for it and how a log records it."""

    name: str  # classify | regress
    signature: str
    method: str  # the SignatureDef method name
    inputs: str  # the signature's one string input: serialized tf.Examples
    outputs: Tuple[Tuple[str, str], ...]  # (the API's output, the serving_default output it is)
    log_field: str  # PredictionLog's field: classify_log | regress_log


CLASSIFY = ExamplesApi("classify", CLASSIFY_SIGNATURE, CLASSIFY_METHOD, CLASSIFY_INPUTS,
                       ((CLASSIFY_CLASSES, CLASSES), (CLASSIFY_SCORES, SCORES)), "classify_log")
REGRESS = ExamplesApi("regress", REGRESS_SIGNATURE, REGRESS_METHOD, REGRESS_INPUTS, ((REGRESS_OUTPUTS, VALUE_KEY),),
                      "regress_log")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gated(blessing: Blessing) -> Dict[str, Any]:
    config: Dict[str, Any] = {"class_name": blessing.metric}
    threshold = blessing.threshold()
    if threshold:
        config["per_slice_thresholds"] = [{"slicing_specs": [{}], "threshold": threshold}]
    return config


class Task:
    """What a task type is, and the rules that follow from it. Subclasses set the attributes and rules."""

    name: str = ""
    is_classification: bool = True
    per_class_scores: bool = False  # the model outputs one score per class (else one value)
    supports_threshold_rule: bool = False  # a numeric label made binary by `label_threshold`
    has_positive_class: bool = False  # of two classes, the second is the event the model scores
    # The model's head: an activation (or "rescale": a linear output rescaled to the label's mean and std),
    # named after the serving output it feeds; the Keras loss and compiled metrics; the Tuner's objective.
    head_activation: str = ""
    primary_output: str = ""  # serving_default's output TFMA scores, batch scoring and the edge read
    keras_loss: str = ""
    keras_metrics: Tuple[Tuple[str, str], ...] = ()  # (Keras class name, metric name)
    tuner_objective: Tuple[str, str] = ("", "max")  # (compiled metric name, max | min)
    examples_api: ExamplesApi = CLASSIFY
    edge_output_name: str = ""  # the TFLite output tensor's name in its metadata
    # TFMA result keys the summary, the report and the run list show, in order; the first sums a model up.
    report_metrics: Tuple[Metric, ...] = ()
    # Our own (numpy) quality metrics, first the headline: the edge gate, the manifest, the metric trigger.
    quality_metrics: Tuple[Metric, ...] = ()
    versus_saved_model: Metric = Metric("", "")
    identifying_metric: str = ""  # a TFMA metric only this task's evaluation has

    # -- the label ---------------------------------------------------------------------------------------------
    def class_names_problem(self, classes: Sequence[str]) -> str:
        """Why `features.classes` cannot go with this task ("" when it can)."""
        return ""

    def label_kind_problem(self, kind: str, threshold_rule: bool) -> Tuple[str, str]:
        """(the setting at fault, why) when a label column of this kind (string | int | float) cannot train this
        task with that label rule; ("", "") when it can. The reason reads after "label column 'x' "."""
        return "", ""

    def output_size(self, classes: int) -> int:
        return classes if self.per_class_scores else 1

    # -- evaluation ---------------------------------------------------------------------------------------------
    def blessings(self, rules) -> List[Blessing]:
        """The blessing rules of this task from the `evaluator:` settings."""
        raise NotImplementedError

    def reported_metrics_specs(self, classes: int) -> List[Dict[str, Any]]:
        """TFMA MetricsSpecs (JSON) of the metrics reported but not gated."""
        raise NotImplementedError

    def tfma_metrics_specs(self, rules, classes: int) -> List[Dict[str, Any]]:
        """Every TFMA MetricsSpec (JSON form) of the Evaluator: the gated metrics, then the reported ones."""
        plain = [_gated(b) for b in self.blessings(rules) if not b.macro]
        macro = [_gated(b) for b in self.blessings(rules) if b.macro]
        specs = [{"metrics": [{"class_name": "ExampleCount"}] + plain}]
        if macro:
            specs.append({"metrics": macro, "aggregate": {
                "macro_average": True, "class_weights": {str(i): 1.0 for i in range(classes)}}})
        return specs + self.reported_metrics_specs(classes)

    def blessing_texts(self, rules, with_baseline: bool) -> List[Tuple[Blessing, str]]:
        """(rule, text) for every bound and baseline comparison a candidate must meet."""
        return [(b, text) for b in self.blessings(rules) for text in b.texts(with_baseline)]

    # -- quality on numpy arrays (edge gate, metric trigger) -----------------------------------------------------
    def quality(self, labels: np.ndarray, outputs: np.ndarray,
                reference: Optional[np.ndarray] = None) -> Dict[str, float]:
        """`quality_metrics` on the labels, and (given the SavedModel's outputs) `versus_saved_model`."""
        raise NotImplementedError

    @property
    def headline(self) -> Metric:
        return self.quality_metrics[0]

    def logged_outputs(self, predictions: Sequence[Sequence[float]]) -> np.ndarray:
        """The request log's answers (`contract/request_log.py`: one row per example) as `quality` takes them."""
        raise NotImplementedError

    def resolution_metrics(self, labels: np.ndarray, reference_at_resolution: np.ndarray) -> Dict[str, float]:
        """Metrics of the SavedModel's answers rounded to the int8 output's levels, which the gate needs."""
        return {}

    def edge_gate(self, metrics: Dict[str, Dict[str, float]], labels: np.ndarray, settings) -> List[Dict[str, Any]]:
        """What the int8 model must meet to be pushed: {"measure", "value", "limit", "setting"} per check."""
        raise NotImplementedError

    # -- answers ------------------------------------------------------------------------------------------------
    decision_threshold: Optional[float] = None

    def describe_output(self, label_column: str, classes: Sequence[str]) -> str:
        """The model output's meaning, for the TFLite metadata."""
        raise NotImplementedError

    def device_answer(self, out: np.ndarray, classes: Sequence[str]) -> Dict[str, Any]:
        """One record's answer as a person (or a JSON consumer) reads it: the device runtime's output."""
        raise NotImplementedError

    def client_answers(self, outputs: Dict[str, np.ndarray]) -> List[Dict[str, Any]]:
        """serving_default's outputs for a batch -> one answer per example, as the serving client prints it."""
        raise NotImplementedError

    def prediction_columns(self, classes: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
        """(name, "float" | "int" | "string") of one model's batch prediction columns, in output order."""
        raise NotImplementedError

    def prediction_values(self, classes: Sequence[str], output: np.ndarray) -> Dict[str, np.ndarray]:
        """The primary output of a batch ([N], [N, 1] or [N, classes]) as those columns."""
        raise NotImplementedError

    def init_thresholds(self, label_std: float, majority_share: float) -> List[Tuple[str, float, str]]:
        """(evaluator setting, value, why) that `init` writes: what a useful model must beat on new data."""
        raise NotImplementedError


class Binary(Task):
    name = "binary"
    supports_threshold_rule = True
    has_positive_class = True
    head_activation = "sigmoid"
    primary_output = PREDICTION_KEY
    keras_loss = "binary_crossentropy"
    keras_metrics = (("AUC", "auc"), ("BinaryAccuracy", "binary_accuracy"))
    tuner_objective = ("auc", "max")
    edge_output_name = "probability"
    report_metrics = (Metric("auc", "AUC"), Metric("binary_accuracy", "accuracy"), Metric("precision", "precision"),
                      Metric("recall", "recall"), Metric("example_count", "examples"))
    quality_metrics = (Metric("auc", "AUC"), Metric("accuracy", "accuracy"))
    versus_saved_model = Metric("agreement", "decisions agreeing with SavedModel", percent=True)
    identifying_metric = "binary_accuracy"
    decision_threshold = DECISION_THRESHOLD

    def class_names_problem(self, classes):
        if classes and len(classes) != 2:
            return (f"task binary takes two classes (negative, positive), not {list(classes)}; "
                    "leave it empty to use label_threshold")
        return ""

    def label_kind_problem(self, kind, threshold_rule):
        if threshold_rule and kind == "string":
            return ("features.label_threshold",
                    "holds strings; set features.classes to its two values (negative first, then positive)")
        if not threshold_rule and kind == "float":
            return ("features.classes", "holds floats; class labels are strings or integers: use task binary with "
                                        "features.label_threshold, or regression")
        return "", ""

    def blessings(self, rules):
        return [Blessing("AUC", "auc", "AUC", lower=rules.min_auc, worse_by=rules.max_auc_drop),
                Blessing("BinaryAccuracy", "binary_accuracy", "accuracy",
                         lower=rules.min_binary_accuracy)]

    def reported_metrics_specs(self, classes):
        return [{"metrics": [{"class_name": name} for name in
                             ("Precision", "Recall", "CalibrationPlot", "ConfusionMatrixPlot")]}]

    def logged_outputs(self, predictions):
        # Predict logs the probability [p]; Classify the scores [negative, positive]: the last is p either way.
        return np.array([row[-1] for row in predictions], dtype=np.float64)

    def quality(self, labels, outputs, reference=None):
        decisions = outputs > DECISION_THRESHOLD
        result = {"auc": quality.auc(labels, outputs),
                  "accuracy": float((decisions == np.asarray(labels).astype(bool)).mean())}
        if reference is not None:
            result["agreement"] = float((decisions == (reference > DECISION_THRESHOLD)).mean())
        return result

    def resolution_metrics(self, labels, reference_at_resolution):
        return {"auc_at_int8_resolution": quality.auc(labels, reference_at_resolution)}

    def edge_gate(self, metrics, labels, settings):
        # An 8-bit probability has 256 levels: close scores tie and a tie counts half, which moves a small eval
        # set's AUC whatever the network does (measured on 84 eval rows: 0.0099 of a 0.0114 drop). The gate
        # bounds what quantizing the network adds to that.
        saved, int8 = metrics["saved_model"], metrics["int8"]
        return [{"measure": "AUC drop beyond the 8-bit output's resolution",
                 "value": saved["auc_at_int8_resolution"] - int8["auc"], "limit": settings.max_auc_drop,
                 "setting": f"edge.max_auc_drop {settings.max_auc_drop}"}]

    def describe_output(self, label_column, classes):
        return (f"probability that {label_column} is class {classes[1]!r}; "
                f"decide positive above {DECISION_THRESHOLD}")

    def device_answer(self, out, classes):
        return {"probability": round(float(out[0]), 6), "decision": bool(out[0] > DECISION_THRESHOLD)}

    def client_answers(self, outputs):
        return [{"probability": round(float(p), 6)} for p in np.asarray(outputs[PREDICTION_KEY]).reshape(-1)]

    def prediction_columns(self, classes):
        return (("probability", "float"), ("class", "int"))

    def prediction_values(self, classes, output):
        values = np.asarray(output).reshape(-1).astype(np.float64)
        return {"probability": values, "class": (values > DECISION_THRESHOLD).astype(np.int64)}

    def init_thresholds(self, label_std, majority_share):
        return [("min_auc", 0.6, "better than chance at ranking"),
                ("min_binary_accuracy", majority_share, "the majority class's share: a model must beat always "
                                                        "answering it")]


class Multiclass(Task):
    name = "multiclass"
    per_class_scores = True
    head_activation = "softmax"
    primary_output = SCORES
    keras_loss = "sparse_categorical_crossentropy"
    keras_metrics = (("SparseCategoricalAccuracy", "accuracy"),)
    tuner_objective = ("accuracy", "max")
    edge_output_name = "scores"
    report_metrics = (Metric("sparse_categorical_accuracy", "accuracy"), Metric("macro_auc", "macro AUC"),
                      Metric("example_count", "examples"))
    quality_metrics = (Metric("accuracy", "accuracy"), Metric("macro_auc", "macro AUC"))
    versus_saved_model = Metric("agreement", "classes agreeing with SavedModel", percent=True)
    identifying_metric = "sparse_categorical_accuracy"

    def class_names_problem(self, classes):
        if len(classes) < 2:
            return ("task multiclass needs the label's class values in class-id order, "
                    "e.g. classes: [Adelie, Chinstrap, Gentoo] (`tfx-edge schema init` writes them)")
        return ""

    def label_kind_problem(self, kind, threshold_rule):
        if kind == "float":
            return ("features.classes", "holds floats; class labels are strings or integers: use task binary with "
                                        "features.label_threshold, or regression")
        return "", ""

    def blessings(self, rules):
        return [Blessing("SparseCategoricalAccuracy", "sparse_categorical_accuracy", "accuracy",
                         lower=rules.min_accuracy, worse_by=rules.max_accuracy_drop),
                Blessing("AUC", "macro_auc", "macro AUC", lower=rules.min_auc, macro=True)]

    def reported_metrics_specs(self, classes):
        ids = list(range(classes))
        return [{"metrics": [{"class_name": "MultiClassConfusionMatrixPlot"}]},
                {"metrics": [{"class_name": "Recall", "config": '{"top_k": 1}'}],
                 "binarize": {"class_ids": {"values": ids}}}]

    def logged_outputs(self, predictions):
        return np.asarray(predictions, dtype=np.float64)

    def quality(self, labels, outputs, reference=None):
        predicted = outputs.argmax(axis=1)
        result = {"accuracy": float((predicted == labels).mean()), "macro_auc": quality.macro_auc(labels, outputs)}
        if reference is not None:
            result["agreement"] = float((predicted == reference.argmax(axis=1)).mean())
        return result

    def edge_gate(self, metrics, labels, settings):
        saved, int8 = metrics["saved_model"], metrics["int8"]
        return [{"measure": "accuracy drop", "value": saved["accuracy"] - int8["accuracy"],
                 "limit": settings.max_accuracy_drop,
                 "setting": f"edge.max_accuracy_drop {settings.max_accuracy_drop}"},
                {"measure": "class disagreement", "value": 1.0 - int8["agreement"],
                 "limit": 1.0 - settings.min_agreement, "setting": f"edge.min_agreement {settings.min_agreement}"}]

    def describe_output(self, label_column, classes):
        return f"probability of each class of {label_column}, in the order of the labels file"

    def device_answer(self, out, classes):
        return {"class": classes[int(np.argmax(out))],
                "scores": {name: round(float(s), 6) for name, s in zip(classes, out)}}

    def client_answers(self, outputs):
        names = [[_text(n) for n in row] for row in outputs[CLASSES]]
        predicted = [_text(n) for n in outputs[PREDICTED_CLASS]]
        return [{"class": top, "scores": {n: round(float(v), 6) for n, v in zip(row_names, row)}}
                for top, row_names, row in zip(predicted, names, outputs[SCORES])]

    def prediction_columns(self, classes):
        return (("class", "string"),) + tuple((f"score_{name}", "float") for name in classes)

    def prediction_values(self, classes, output):
        scores = np.asarray(output, dtype=np.float64).reshape(len(output), len(classes))
        columns = {"class": np.asarray(classes, dtype=object)[scores.argmax(axis=1)]}
        columns.update({f"score_{name}": scores[:, i] for i, name in enumerate(classes)})
        return columns

    def init_thresholds(self, label_std, majority_share):
        return [("min_auc", 0.6, "better than chance at ranking"),
                ("min_accuracy", majority_share, "the majority class's share: a model must beat always answering it")]


class Regression(Task):
    name = "regression"
    is_classification = False
    head_activation = "rescale"
    primary_output = VALUE_KEY
    keras_loss = "mean_squared_error"
    keras_metrics = (("RootMeanSquaredError", "rmse"),)
    tuner_objective = ("rmse", "min")
    examples_api = REGRESS
    edge_output_name = "value"
    report_metrics = (Metric("root_mean_squared_error", "RMSE", False), Metric("mean_absolute_error", "MAE", False),
                      Metric("mean_prediction", "mean prediction"), Metric("mean_label", "mean label"),
                      Metric("example_count", "examples"))
    quality_metrics = (Metric("rmse", "RMSE", False), Metric("mae", "MAE", False))
    versus_saved_model = Metric("rmse_vs_saved_model", "RMSE vs SavedModel", False)
    identifying_metric = "root_mean_squared_error"

    def class_names_problem(self, classes):
        if classes:
            return "task regression predicts a number; remove classes, or set features.task to binary or multiclass"
        return ""

    def label_kind_problem(self, kind, threshold_rule):
        if kind == "string":
            return ("features.task regression", "holds strings; set features.task to binary or multiclass with "
                                                "features.classes, or make it a number")
        return "", ""

    def blessings(self, rules):
        return [Blessing("RootMeanSquaredError", "root_mean_squared_error", "RMSE",
                         upper=rules.max_rmse or None, worse_by=rules.max_rmse_increase, higher_is_better=False)]

    def reported_metrics_specs(self, classes):
        return [{"metrics": [{"class_name": name} for name in ("MeanAbsoluteError", "MeanPrediction", "MeanLabel")]}]

    def logged_outputs(self, predictions):
        return np.array([row[0] for row in predictions], dtype=np.float64)

    def quality(self, labels, outputs, reference=None):
        error = outputs - labels
        result = {"rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
                  "mean_prediction": float(np.mean(outputs))}
        if reference is not None:
            result["rmse_vs_saved_model"] = quality.rmse(reference, outputs)
        return result

    def edge_gate(self, metrics, labels, settings):
        saved, int8 = metrics["saved_model"], metrics["int8"]
        std = float(np.std(labels)) or 1.0
        return [{"measure": "RMSE increase / label std", "value": (int8["rmse"] - saved["rmse"]) / std,
                 "limit": settings.max_rmse_increase,
                 "setting": f"edge.max_rmse_increase {settings.max_rmse_increase}"}]

    def describe_output(self, label_column, classes):
        return f"predicted {label_column}, in the label's unit"

    def device_answer(self, out, classes):
        return {"value": round(float(out[0]), 6)}

    def client_answers(self, outputs):
        return [{"value": round(float(v), 6)} for v in np.asarray(outputs[VALUE_KEY]).reshape(-1)]

    def prediction_columns(self, classes):
        return (("value", "float"),)

    def prediction_values(self, classes, output):
        return {"value": np.asarray(output).reshape(-1).astype(np.float64)}

    def init_thresholds(self, label_std, majority_share):
        return [("max_rmse", float(f"{label_std:.3g}"), "the label's std: a model must beat predicting the mean")]


_TASKS = {t.name: t for t in (Binary(), Multiclass(), Regression())}
TASKS = tuple(_TASKS)


def task(name: str) -> Task:
    """The task object of `features.task`."""
    found = _TASKS.get(name)
    if found is None:
        raise ValueError(f"features.task: {name!r} is not one of {', '.join(TASKS)}")
    return found


def of_metrics(metrics: Dict[str, float]) -> Task:
    """The task an evaluation was made for, from the metric keys TFMA computed (binary when none identifies)."""
    return next((t for t in _TASKS.values() if t.identifying_metric in metrics and t.name != "binary"),
                _TASKS["binary"])


def of_outputs(outputs) -> Task:
    """The task of a model from the outputs of its `serving_default` signature.

    Binary is asked first: a binary model also outputs per-class `scores`, its own output is `probabilities`.
    """
    for found in _TASKS.values():
        if found.primary_output in outputs:
            return found
    raise ValueError(f"serving_default returned {sorted(outputs)}; expected one of "
                     f"{', '.join(t.primary_output for t in _TASKS.values())} (contract/serving.py): "
                     "is this a model of this pipeline?")
