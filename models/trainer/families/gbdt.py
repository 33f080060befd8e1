"""The `gbdt` family: TensorFlow Decision Forests' gradient-boosted trees on Transform's output, with a
distilled int8 student for edge devices.

The forest reads the Transform outputs the feature spec lists (`models/features.py`):
numeric z-scores as NUMERICAL features, every one-hot block's integer id
(vocabulary index, bucket) as a CATEGORICAL feature, so a tree splits on a set of
categories instead of one one-hot column at a time. It trains in one pass over the
data in TF-DF's C++ learner (early-stopped on a share of the train split it holds
out itself) and exports as a Keras SavedModel with the same signatures as every
family (`export.py`). Loading it needs TF-DF's ops (`custom_ops.py`).

Trees do not convert to TFLite. The `edge` signature is a student instead: the
`dnn` family's core, trained on the train split to answer what the forest answers
(its probabilities, class scores or values: `Task.soft_target_loss`). The edge
export then quantizes the student and gates it against the forest itself, the
served model, on the eval split; the model's family record names teacher and
student and how closely the student followed the forest on the training data.

Distributed training: decision forests train on one machine with all its cores.
`mirrored` does not apply. TF-DF's distributed gradient-boosted trees
(`DistributedGradientBoostedTreesModel`) need parameter-server workers that run
TF-DF's own distribute worker ops, which the pip package's ops do not serve to a
plain TensorFlow server (docs/model-families.md has what was tried); so
`parameter_server` is refused before any component runs.
"""

import math
import time
from typing import Dict, List, Optional

import keras_tuner as kt
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from absl import logging
from tfx.components.tuner.component import TunerFnResult

from contract.config import FeaturesConfig, TrainingConfig, TunerConfig, section_from_dict
from models import features
from models.trainer import data, edge_signature, export, runtime
from models.trainer.families import keras_family
from models.trainer.families import ModelFamily
from models.trainer.families.dnn import FAMILY as DNN
from training import strategies

# Examples the student learns the forest's answers on, training rows and mixed rows together: bounded memory
# (they are held as arrays).
DISTILLATION_EXAMPLES = 200_000
# Mixed rows per training row at most: each a training row with each feature, at even odds, taken from
# another random training row (MUNGE, Bucila et al. 2006, "Model compression"), labelled by the forest. A
# forest answers in steps; on the training rows alone a student sees too few points near a step to place it.
DISTILLATION_MIXES = 9
# The student trains for this many passes over its examples, within [1, 3] x training.train_steps steps: a
# student that stops at the forest's own step budget on few rows follows it loosely (measured on 480 rows,
# 300 steps: 98% of decisions alike, eval AUC 0.007 below the forest's).
STUDENT_EPOCHS = 20
# The student: the dnn family's core, without dropout (it copies a deterministic teacher, there is no label
# noise to be robust to) and with a light L2.
STUDENT_HPARAMS = {"hidden_units": 64, "num_layers": 2, "learning_rate": 0.003, "dropout": 0.0, "l2": 0.0001}


def _tfdf():
    """TF-DF, imported (and its ops registered) where a forest is built: not when the families are listed, which
    every pipeline command does, as the import costs seconds."""
    import tensorflow_decision_forests as tfdf

    return tfdf


def forest_features(spec: FeaturesConfig) -> List:
    """Numeric z-scores as NUMERICAL, every one-hot block's id as CATEGORICAL, every bag's ids (a text's
    n-grams, a list column's values) as CATEGORICAL_SET (TF-DF `FeatureUsage`s). A forest splits on whether a
    set holds an id, so a text's TF-IDF weights are not read."""
    tfdf = _tfdf()
    used = [tfdf.keras.FeatureUsage(features.transformed_name(key), tfdf.keras.FeatureSemantic.NUMERICAL)
            for key in spec.numeric]
    used += [tfdf.keras.FeatureUsage(block.input, tfdf.keras.FeatureSemantic.CATEGORICAL)
             for block in features.one_hot_blocks(spec)]
    used += [tfdf.keras.FeatureUsage(block.ids, tfdf.keras.FeatureSemantic.CATEGORICAL_SET)
             for block in features.bag_blocks(spec)]
    return used


def input_names(spec: FeaturesConfig) -> List[str]:
    """The Transform outputs the forest reads."""
    return [usage.name for usage in forest_features(spec)]


class Gbdt(ModelFamily):
    name = "gbdt"
    strategies = ("default",)
    train_function = "models.trainer.families.gbdt:train_and_export"
    # TF-DF's own defaults but for the tree count: early stopping on its held-out share ends training
    # sooner when more trees stop helping.
    default_hparams = {"num_trees": 300, "max_depth": 6, "shrinkage": 0.1, "min_examples": 5}

    def strategy_problems(self, config) -> List[str]:
        if config.training.strategy in self.strategies:
            return []
        return [f"training.strategy {config.training.strategy} is not available with training.model gbdt: a "
                "decision forest trains on one machine with all its cores (mirrored does not apply; TF-DF's "
                "distributed trees need parameter-server workers built with its distribute ops, see "
                "docs/model-families.md). Use training.strategy default, or a Keras family (dnn, linear)"]

    def hparams_with_defaults(self, values: Dict) -> Dict:
        merged = dict(self.default_hparams)
        merged.update({k: v for k, v in (values or {}).items() if k in self.default_hparams})
        return merged

    def search_space(self, spec: Optional[FeaturesConfig] = None) -> kt.HyperParameters:
        hp = kt.HyperParameters()
        hp.Choice("max_depth", [4, 6, 8], default=self.default_hparams["max_depth"])
        hp.Choice("shrinkage", [0.05, 0.1, 0.2], default=self.default_hparams["shrinkage"])
        hp.Choice("min_examples", [5, 20], default=self.default_hparams["min_examples"])
        return hp

    def build(self, spec: FeaturesConfig, hparams: Dict, seed: int = 0):
        hparams = self.hparams_with_defaults(hparams)
        tfdf = _tfdf()
        return tfdf.keras.GradientBoostedTreesModel(
            task=getattr(tfdf.keras.Task, spec.task_type.forest_task),
            features=forest_features(spec), exclude_non_specified_features=True,
            num_trees=int(hparams["num_trees"]), max_depth=int(hparams["max_depth"]),
            shrinkage=float(hparams["shrinkage"]), min_examples=int(hparams["min_examples"]),
            # 0: TF-DF's own default seed, so an unseeded run is still repeatable.
            random_seed=int(seed) or 123456, verbose=0)

    def fit(self, fn_args, hparams: Dict, strategy=None, splits: Optional[data.Splits] = None):
        spec = features.spec_from_custom_config(fn_args.custom_config)
        settings = strategies.training_settings(fn_args.custom_config)
        splits = splits or data.Splits.of_trainer(fn_args)
        used = self.hparams_with_defaults(hparams)
        logging.info("Training gbdt with hyper-parameters %s", used)
        runtime.write_hyperparameters(fn_args.model_run_dir, used)
        forest = self.build(spec, used, settings.seed)
        started = time.monotonic()
        # One pass, unshuffled: the learner reads every example into memory, then builds the trees.
        forest.fit(splits.train(data.READ_BATCH, shuffle=False, repeat=False), verbose=0)
        seconds = time.monotonic() - started
        inspector = forest.make_inspector()
        examples = int(inspector.dataspec.created_num_rows)
        self._check_outputs(forest, spec, splits)
        facts = {"strategy": settings.strategy, "replicas": 1, "task": spec.task, "model": self.name,
                 "hyperparameters": used, "trees": int(inspector.num_trees()),
                 "train_examples": examples, "train_seconds": round(seconds, 3),
                 "examples_per_second": round(examples / seconds, 1) if seconds else None}
        return forest, facts

    @staticmethod
    def _check_outputs(forest, spec: FeaturesConfig, splits: data.Splits) -> None:
        """A forest answers one score per class it saw: every class must be in the part it trained on."""
        width = features.output_size(spec)
        for batch, _ in splits.train(8, shuffle=False, repeat=False).take(1):
            got = int(forest(batch).shape[-1])
            if got != width:
                raise ValueError(f"the decision forest answers {got} scores, the task {width}: a class of "
                                 f"features.classes {spec.class_names} has no training example; add examples "
                                 "of every class to the train split")

    def predictor(self, model):
        return lambda batch: model(batch).numpy()

    def distill(self, forest, fn_args, spec: FeaturesConfig, settings: TrainingConfig) -> Dict:
        """The student: the dnn core trained on the train split to give the forest's answers. Returns its
        Keras core and how closely it follows the forest there."""
        splits = data.Splits.of_trainer(fn_args)
        inputs, targets, labels = _teacher_answers(forest, splits.train(data.READ_BATCH, shuffle=False,
                                                                        repeat=False))
        model_inputs = keras_family.feature_inputs(spec)
        inputs = {k: v for k, v in inputs.items() if k in model_inputs}
        mixed = _mixed_rows(inputs, settings.seed, _partners(spec))
        taught = {k: _concat(inputs[k], mixed[k]) for k in inputs} if mixed else inputs
        targets_taught = np.concatenate([targets, _answers(forest, mixed)]) if mixed else targets
        label_stats = None
        if spec.task_type.head_activation == "rescale":
            label_stats = {"mean": float(targets.mean()), "std": float(targets.std()) or 1.0}
        runtime.set_seed(settings.seed)
        core = DNN.build_core(features.dense_input_size(spec), STUDENT_HPARAMS, spec, label_stats)
        student = keras.Model(model_inputs, core(keras_family.feature_vector(spec, model_inputs)), name="student")
        dataset = tf.data.Dataset.from_tensor_slices((taught, targets_taught))
        dataset = dataset.shuffle(min(len(targets_taught), data.SHUFFLE_BUFFER), seed=settings.seed or None).repeat()
        steps = min(max(fn_args.train_steps, math.ceil(STUDENT_EPOCHS * len(targets_taught) / settings.batch_size)),
                    3 * fn_args.train_steps)
        student.compile(optimizer=keras_family.optimizer(STUDENT_HPARAMS, steps),
                        loss=keras.losses.get(spec.task_type.soft_target_loss))
        started = time.monotonic()
        student.fit(dataset.batch(settings.batch_size).map(_sparse_bags), steps_per_epoch=steps, epochs=1,
                    verbose=0)
        seconds = time.monotonic() - started
        answers = student.predict(_batches(inputs), verbose=0)
        return {"core": core, "examples": len(targets_taught), "rows": len(targets), "steps": steps, "train_seconds": round(seconds, 3),
                "fidelity": _fidelity(spec, labels, targets, answers)}

    def export(self, model, fn_args, facts: Dict) -> None:
        spec = features.spec_from_custom_config(fn_args.custom_config)
        settings = strategies.training_settings(fn_args.custom_config)
        tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
        student = self.distill(model, fn_args, spec, settings)
        # Tracked by the forest, so the student's weights are saved with it for the `edge` signature.
        model.edge_student = student["core"]
        functions = {**export.signatures(model, tf_transform_output, spec, input_names=input_names(spec)),
                     **edge_signature.edge_signatures(model, tf_transform_output, spec,
                                                      spec.task_type.primary_output, core=student["core"])}
        edge = {"kind": "distilled student", "teacher": self.name, "student": "dnn core",
                "student_hyperparameters": STUDENT_HPARAMS, "distillation_examples": student["examples"],
                "distillation_training_rows": student["rows"],
                "distillation_steps": student["steps"], "distillation_seconds": student["train_seconds"],
                "fidelity_on_train": student["fidelity"]}
        facts["edge_student"] = edge
        export.save_for_tf_serving(model, fn_args.serving_model_dir, functions, spec,
                                   record=export.family_record(facts, edge_core=student["core"], edge=edge),
                                   save_traces=True)

    def tuner_fn(self, fn_args, splits: Optional[data.Splits] = None) -> TunerFnResult:
        spec = features.spec_from_custom_config(fn_args.custom_config)
        custom_config = fn_args.custom_config or {}
        settings = section_from_dict(TunerConfig, custom_config.get("tuner"))
        seed = section_from_dict(TrainingConfig, custom_config.get("training")).seed
        splits = splits or data.Splits.of_tuner(fn_args)
        oracle = keras_family.make_oracle(self.search_space(), settings.algorithm, settings.max_trials, spec.task,
                                          seed=seed)
        tuner = ForestTuner(oracle, self, spec, splits, seed, directory=fn_args.working_dir,
                            project_name=f"search_{self.name}", overwrite=True)
        return TunerFnResult(tuner=tuner, fit_kwargs={})


class ForestTuner(kt.engine.base_tuner.BaseTuner):
    """Each trial fits a forest on the splits' train part and scores it on their validation part."""

    def __init__(self, oracle, family: Gbdt, spec: FeaturesConfig, splits: data.Splits, seed: int, **kwargs):
        super().__init__(oracle=oracle, hypermodel=None, **kwargs)
        self.family, self.spec, self.splits, self.seed = family, spec, splits, seed

    def run_trial(self, trial, **_):
        task = self.spec.task_type
        forest = self.family.build(self.spec, trial.hyperparameters.values, self.seed)
        forest.fit(self.splits.train(data.READ_BATCH, shuffle=False, repeat=False), verbose=0)
        labels, outputs = data.predictions(self.family.predictor(forest), self.splits.validation(data.READ_BATCH))
        metric = task.tuner_objective[0]
        score = {f"val_{metric}": task.quality(labels, outputs)[metric]}
        logging.info("Trial %s %s -> %s", trial.trial_id, trial.hyperparameters.values, score)
        return score

    def save_model(self, trial_id, model, step=0):
        """Trial models are not kept: the Trainer retrains the best configuration."""

    def load_model(self, trial):
        raise NotImplementedError("trial models are not kept; use the best hyper-parameters")


def _column(value):
    """A batch's column kept for distillation: an array, or a bag's sparse ids/weights as a ragged tensor."""
    return tf.RaggedTensor.from_sparse(value) if isinstance(value, tf.SparseTensor) else value.numpy()


def _concat(first, second):
    if isinstance(first, tf.RaggedTensor):
        return tf.concat([first, second], axis=0)
    return np.concatenate([first, second])


def _take(column, rows: np.ndarray):
    return tf.gather(column, rows) if isinstance(column, tf.RaggedTensor) else column[rows]


def _rows(inputs: Dict) -> int:
    column = next(iter(inputs.values()))
    return int(column.nrows()) if isinstance(column, tf.RaggedTensor) else len(column)


def _sparse_bags(columns, *rest):
    """A batch of the student's (or the forest's) inputs with each ragged bag as the sparse tensor it reads."""
    columns = {k: v.to_sparse() if isinstance(v, tf.RaggedTensor) else v for k, v in columns.items()}
    return (columns, *rest) if rest else columns


def _batches(inputs: Dict) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(inputs).batch(data.READ_BATCH).map(_sparse_bags)


def _partners(spec: FeaturesConfig) -> Dict[str, str]:
    """Columns mixed together (a text's weights go with its ids): column -> the column whose pick it takes."""
    return {block.weights: block.ids for block in features.bag_blocks(spec) if block.weights}


def _teacher_answers(forest, dataset: tf.data.Dataset):
    """(transformed features as arrays, bags as ragged tensors; the forest's answers; the labels) of up to
    DISTILLATION_EXAMPLES examples."""
    columns: Dict[str, List] = {}
    answers, labels, count = [], [], 0
    for batch, label in dataset:
        for name, value in batch.items():
            columns.setdefault(name, []).append(_column(value))
        answers.append(forest(batch).numpy())
        labels.append(label.numpy().reshape(-1))
        count += len(labels[-1])
        if count >= DISTILLATION_EXAMPLES:
            break
    joined = {k: tf.concat(v, axis=0) if isinstance(v[0], tf.RaggedTensor) else np.concatenate(v)
              for k, v in columns.items()}
    return joined, np.concatenate(answers).astype(np.float32), np.concatenate(labels)


def _mixed_rows(inputs: Dict, seed: int, partners: Dict[str, str]) -> Dict:
    """Training rows with each feature, at even odds, from another random training row ({} if none fit);
    a column in `partners` takes the same row as its partner."""
    rows = _rows(inputs)
    copies = min(DISTILLATION_MIXES, DISTILLATION_EXAMPLES // max(rows, 1) - 1)
    if copies <= 0:
        return {}
    rng = np.random.default_rng(seed or None)
    base = np.tile(np.arange(rows), copies)
    picks = {}
    for name in [n for n in inputs if n not in partners] + [n for n in inputs if n in partners]:
        if name in partners and partners[name] in picks:
            picks[name] = picks[partners[name]]
            continue
        partner = rng.integers(0, rows, len(base))
        picks[name] = np.where(rng.random(len(base)) < 0.5, partner, base)
    return {name: _take(column, picks[name]) for name, column in inputs.items()}


def _answers(forest, inputs: Dict) -> np.ndarray:
    return np.concatenate([forest(batch).numpy() for batch in _batches(inputs)]).astype(np.float32)


def _fidelity(spec: FeaturesConfig, labels: np.ndarray, teacher: np.ndarray, student: np.ndarray) -> Dict:
    """The student's headline metric on the training data, the forest's, and how closely the student gives the
    forest's answers (agreement of decisions, or RMSE against the forest)."""
    task = spec.task_type
    teacher, student = _squeeze(teacher), _squeeze(student)
    key, versus = task.headline.key, task.versus_saved_model.key
    measured = task.quality(labels, student, reference=teacher)
    return {f"student_{key}": measured[key], f"forest_{key}": task.quality(labels, teacher)[key],
            versus: measured[versus]}


def _squeeze(outputs: np.ndarray) -> np.ndarray:
    return outputs.reshape(-1) if outputs.ndim == 1 or outputs.shape[1] == 1 else outputs


FAMILY = Gbdt()


def train_and_export(fn_args, hparams: Dict, strategy=None) -> Dict:
    return FAMILY.train_and_export(fn_args, hparams, strategy)
