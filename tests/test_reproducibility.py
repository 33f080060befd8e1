"""`training.seed`: the Tuner's search and the Trainer's model are the same on the same Transform output.

Runs the real `tuner_fn` and `train_and_export` directly on the Transform output of `pushed_run` (cheaper
than two pipeline runs), twice with one seed and once with another.
"""

import copy
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
from tfx.components.util import tfxio_utils
from tfx.types import standard_artifacts

from contract.serving import PREDICTION_KEY, SERVING_SIGNATURE
from models.trainer import entry
from models.trainer.families import dnn
from pipeline.pipeline import trainer_custom_config, tuner_custom_config
from tests.samples import read_examples

pytestmark = pytest.mark.slow


def _fn_args(summary, work_dir: str, custom_config: dict, steps: int, eval_steps: int) -> FnArgs:
    """What the Tuner and Trainer executors pass their module functions, on the pushed run's Transform output."""
    outputs = {c.name: c.outputs for c in summary.components}["Transform"]
    examples = standard_artifacts.Examples()
    examples.uri = outputs["transformed_examples"][0]
    examples.split_names = json.dumps(["train", "eval"])
    accessor = DataAccessor(tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
                            record_batch_factory=None, data_view_decode_fn=None)
    files = {s: [os.path.join(examples.uri, f"Split-{s}", "*")] for s in ("train", "eval")}
    return FnArgs(working_dir=os.path.join(work_dir, "tuner"), train_files=files["train"], eval_files=files["eval"],
                  train_steps=steps, eval_steps=eval_steps, transform_graph_path=outputs["transform_graph"][0],
                  transform_output=outputs["transform_graph"][0], data_accessor=accessor,
                  serving_model_dir=os.path.join(work_dir, "Trainer", "model", "Format-Serving"),
                  model_run_dir=os.path.join(work_dir, "Trainer", "model_run", "1"), custom_config=custom_config)


def _search(pushed_run, work_dir: str, seed: int):
    config = copy.deepcopy(pushed_run[0])
    config.training.seed, config.tuner.max_trials = seed, 2
    result = entry.tuner_fn(_fn_args(pushed_run[1], work_dir, tuner_custom_config(config), 20, 5))
    result.tuner.search(**result.fit_kwargs)
    best = result.tuner.oracle.get_best_trials(1)[0]
    return best.hyperparameters.values, best.score


def _train_and_score(pushed_run, work_dir: str, seed: int, hparams: dict, serialized) -> np.ndarray:
    """Trains and exports with `seed`; the exported model's scores on raw eval examples."""
    config = copy.deepcopy(pushed_run[0])
    config.training.seed = seed
    fn_args = _fn_args(pushed_run[1], work_dir, trainer_custom_config(config), 60, 10)
    dnn.train_and_export(fn_args, hparams)
    serve = tf.saved_model.load(fn_args.serving_model_dir).signatures[SERVING_SIGNATURE]
    return serve(tf.constant(serialized))[PREDICTION_KEY].numpy().reshape(-1)


def _labels(spec, examples) -> np.ndarray:
    def first(example, name):
        values = example.features.feature[name].float_list.value
        return values[0] if values else 0.0

    return spec.label([first(e, spec.label_column) for e in examples],
                      [first(e, spec.label_relative_to) for e in examples])


def test_one_seed_gives_the_same_search_and_the_same_model(pushed_run, tmp_path, taxi_root):
    spec = pushed_run[0].features
    first, again, other = (_search(pushed_run, str(tmp_path / name), seed)
                           for name, seed in (("a", 7), ("b", 7), ("c", 8)))
    assert first == again, "the same seed must pick the same hyper-parameters with the same score"
    assert other != first, "a different seed must change the search (else the test proves nothing)"

    examples = read_examples(os.path.join(taxi_root, "Split-eval", "*"), 500)
    serialized, labels = [e.SerializeToString() for e in examples], _labels(spec, examples)
    scores = [_train_and_score(pushed_run, str(tmp_path / name), seed, first[0], serialized)
              for name, seed in (("ta", 7), ("tb", 7), ("tc", 8))]
    aucs = [_auc(labels, s) for s in scores]
    assert abs(aucs[0] - aucs[1]) <= 0.002, aucs
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)
    assert not np.allclose(scores[0], scores[2], atol=1e-5), "a different seed must change the weights"


def _auc(labels, scores) -> float:
    metric = tf.keras.metrics.AUC()
    metric.update_state(labels, scores)
    return float(metric.result().numpy())
