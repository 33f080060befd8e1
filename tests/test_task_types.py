"""The task objects (contract/tasks.py) and the numpy metrics: every stage's per-task rule, asked of one place."""

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from google.protobuf import json_format

from contract import metrics, tasks
from contract.config import EvaluatorConfig, EdgeConfig, load_config
from contract.errors import ConfigError
from contract.serving import CLASSES, PREDICTED_CLASS, PREDICTION_KEY, SCORES, VALUE_KEY


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200), 1)  # many ties
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert metrics.auc(labels, scores) == pytest.approx(expected)


def test_macro_auc_averages_the_classes_present():
    labels = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(3)[labels] * 0.8 + 0.1
    assert metrics.macro_auc(labels, scores) == pytest.approx(1.0)
    assert metrics.macro_auc(np.array([0, 0, 1, 1]), scores[:4]) == pytest.approx(1.0)  # class 2 absent


def test_every_task_is_found_by_name_and_an_unknown_one_is_named():
    assert [tasks.task(name).name for name in tasks.TASKS] == ["binary", "multiclass", "regression"]
    with pytest.raises(ValueError, match="'ranking' is not one of binary, multiclass, regression"):
        tasks.task("ranking")
    with pytest.raises(ConfigError, match="features.task: 'ranking' is not one of"):
        load_config(overrides=["features.task=ranking"])


@pytest.mark.parametrize("name", tasks.TASKS)
def test_tfma_specs_parse_and_carry_each_blessing_rule(name):
    """What the Evaluator gates is exactly what the summary and the report say it gates."""
    rules = EvaluatorConfig(min_auc=0.7, max_auc_drop=0.01, min_binary_accuracy=0.6, min_accuracy=0.5,
                            max_accuracy_drop=0.02, max_rmse=3.0, max_rmse_increase=0.1)
    task = tasks.task(name)
    specs = [json_format.ParseDict(s, tfma.MetricsSpec()) for s in task.tfma_metrics_specs(rules, 3)]
    gated = {m.class_name: m.per_slice_thresholds[0].threshold
             for s in specs for m in s.metrics if m.per_slice_thresholds}
    blessings = task.blessings(rules)
    assert sorted(gated) == sorted(b.metric for b in blessings)
    for blessing in blessings:
        threshold = gated[blessing.metric]
        if blessing.lower is not None:
            assert threshold.value_threshold.lower_bound.value == blessing.lower
        if blessing.upper is not None:
            assert threshold.value_threshold.upper_bound.value == blessing.upper
        if blessing.worse_by is not None:
            change = threshold.change_threshold
            assert abs(change.absolute.value) == pytest.approx(blessing.worse_by, abs=1e-9)
            assert (change.direction == tfma.MetricDirection.HIGHER_IS_BETTER) == blessing.higher_is_better
        texts = blessing.texts(with_baseline=True)
        bound = blessing.lower if blessing.lower is not None else blessing.upper
        assert bound is None or any(f"{bound:g}" in t for t in texts)
    assert any(m.class_name == "ExampleCount" for s in specs for m in s.metrics)


def test_blessing_texts_say_the_bound_and_the_baseline_rule():
    rules = EvaluatorConfig(min_auc=0.85, max_auc_drop=0.0, min_binary_accuracy=0.75)
    texts = [f"{rule.label} {text}" for rule, text in tasks.task("binary").blessing_texts(rules, True)]
    assert texts == ["AUC >= 0.85", "AUC no more than 0 below the baseline", "accuracy >= 0.75"]
    regression = tasks.task("regression").blessing_texts(EvaluatorConfig(max_rmse=0.0, max_rmse_increase=0.5), False)
    assert regression == []  # no bound set, no baseline yet: nothing gates
    macro = json_format.ParseDict(tasks.task("multiclass").tfma_metrics_specs(EvaluatorConfig(), 3)[1],
                                  tfma.MetricsSpec())
    assert macro.aggregate.macro_average and dict(macro.aggregate.class_weights) == {0: 1.0, 1: 1.0, 2: 1.0}


def test_binary_decides_at_one_threshold_on_the_device_in_batch_and_in_the_gate():
    binary = tasks.task("binary")
    probabilities = np.array([0.2, 0.5, 0.51, 0.9])
    device = [binary.device_answer(np.array([p]), ["0", "1"])["decision"] for p in probabilities]
    batch = binary.prediction_values(["0", "1"], probabilities)["class"].tolist()
    quality = binary.quality(np.array([0, 0, 1, 1]), probabilities, reference=probabilities)
    assert device == [bool(c) for c in batch] == [False, False, True, True]
    assert quality["accuracy"] == 1.0 and quality["agreement"] == 1.0


def test_answers_and_columns_per_task():
    multiclass, regression = tasks.task("multiclass"), tasks.task("regression")
    scores = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    columns = multiclass.prediction_values(["a", "b", "c"], scores)
    assert columns["class"].tolist() == ["b", "a"] and columns["score_c"].tolist() == [0.2, 0.1]
    assert [n for n, _ in multiclass.prediction_columns(["a", "b", "c"])] == ["class", "score_a", "score_b",
                                                                               "score_c"]
    assert multiclass.device_answer(scores[0], ["a", "b", "c"]) == {"class": "b",
                                                                     "scores": {"a": 0.1, "b": 0.7, "c": 0.2}}
    assert regression.device_answer(np.array([3.25]), []) == {"value": 3.25}
    outputs = {SCORES: scores, CLASSES: np.array([[b"a", b"b", b"c"]] * 2), PREDICTED_CLASS: np.array([b"b", b"a"])}
    assert tasks.of_outputs(outputs) is multiclass
    assert multiclass.client_answers(outputs)[1] == {"class": "a", "scores": {"a": 0.6, "b": 0.3, "c": 0.1}}
    binary_outputs = {PREDICTION_KEY: np.array([[0.25]]), SCORES: np.array([[0.75, 0.25]])}
    assert tasks.of_outputs(binary_outputs).name == "binary"  # a binary model has scores too
    assert tasks.of_outputs({VALUE_KEY: np.array([[1.5]])}).client_answers({VALUE_KEY: np.array([[1.5]])}) == [
        {"value": 1.5}]
    with pytest.raises(ValueError, match="is this a model of this pipeline"):
        tasks.of_outputs({"logits": np.zeros(1)})


def test_the_task_of_an_evaluation_is_read_from_its_metrics():
    assert tasks.of_metrics({"root_mean_squared_error": 1.0}).name == "regression"
    assert tasks.of_metrics({"sparse_categorical_accuracy": 0.9, "macro_auc": 0.9}).name == "multiclass"
    assert tasks.of_metrics({"auc": 0.9, "binary_accuracy": 0.8}).name == "binary"


def test_edge_gates_name_their_setting():
    labels = np.array([0.0, 1.0, 2.0, 3.0])
    gate = tasks.task("regression").edge_gate({"saved_model": {"rmse": 1.0}, "int8": {"rmse": 1.2}}, labels,
                                              EdgeConfig(max_rmse_increase=0.05))
    assert gate[0]["value"] == pytest.approx(0.2 / np.std(labels)) and "edge.max_rmse_increase" in gate[0]["setting"]
    multiclass = tasks.task("multiclass").edge_gate(
        {"saved_model": {"accuracy": 0.9}, "int8": {"accuracy": 0.88, "agreement": 0.97}}, labels, EdgeConfig())
    assert [c["measure"] for c in multiclass] == ["accuracy drop", "class disagreement"]


@pytest.mark.parametrize("task,kind,rule,setting", [
    ("regression", "string", False, "features.task regression"),
    ("multiclass", "float", False, "features.classes"),
    ("binary", "string", True, "features.label_threshold"),
    ("binary", "float", False, "features.classes"),
    ("binary", "float", True, ""),
    ("multiclass", "string", False, ""),
])
def test_label_kinds_each_task_refuses(task, kind, rule, setting):
    assert tasks.task(task).label_kind_problem(kind, rule)[0] == setting


def test_class_lists_each_task_refuses():
    assert "two classes" in tasks.task("binary").class_names_problem(["a", "b", "c"])
    assert tasks.task("binary").class_names_problem([]) == ""
    assert "class values" in tasks.task("multiclass").class_names_problem(["a"])
    assert "predicts a number" in tasks.task("regression").class_names_problem(["a"])
