"""Small real samples of the bundled taxi TFRecords, and fast pipeline settings for tests."""

import glob
import os
import random

import tensorflow as tf

from contract.config import load_config


def read_examples(pattern: str, limit: int = 0):
    """tf.Example protos from gzip TFRecords, in file order."""
    files = sorted(glob.glob(pattern))
    examples = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        examples.append(tf.train.Example.FromString(record.numpy()))
        if limit and len(examples) >= limit:
            break
    return examples


def write_examples(path: str, examples, compress: bool = True) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    with tf.io.TFRecordWriter(path, options) as writer:
        for example in examples:
            writer.write(example.SerializeToString())
    return path


def make_sample(root: str, taxi_root: str, train: int, evaluation: int, shuffle_train_labels: bool = False,
                seed: int = 0) -> str:
    """A small copy of the bundled data laid out like it (Split-train/, Split-eval/).

    `shuffle_train_labels` permutes `tips` across training examples: a realistic
    way to get a model that is worse than the last one.
    """
    train_examples = read_examples(os.path.join(taxi_root, "Split-train", "*"), train)
    if shuffle_train_labels:
        tips = [e.features.feature["tips"].float_list.value[:] for e in train_examples]
        random.Random(seed).shuffle(tips)
        for example, value in zip(train_examples, tips):
            del example.features.feature["tips"].float_list.value[:]
            example.features.feature["tips"].float_list.value.extend(value)
    write_examples(os.path.join(root, "Split-train", "data.tfrecord.gz"), train_examples)
    write_examples(os.path.join(root, "Split-eval", "data.tfrecord.gz"),
                   read_examples(os.path.join(taxi_root, "Split-eval", "*"), evaluation))
    return root


def small_config(output_dir: str, input_base: str, *extra: str):
    """A fast pipeline configuration for tests: few steps, one tuner trial."""
    return load_config(None, [
        f"output_dir={output_dir}",
        f"data.input_base={input_base}",
        # One fixed draw: tests on a small model must not pass or fail by the luck of an unseeded init.
        "training.seed=1",
        "training.train_steps=60",
        "training.eval_steps=10",
        "training.batch_size=64",
        "tuner.max_trials=1",
        "tuner.train_steps=20",
        "tuner.eval_steps=5",
        # A small sample gives a weak model; the thresholds under test are the change vs baseline.
        "evaluator.min_auc=0.5",
        "evaluator.min_binary_accuracy=0.5",
        # The serving check on every run: a short sample, and a budget CI's shared cores always meet (the
        # budget's refusal is tested with a budget nothing meets).
        "serving_check.requests=10",
        "serving_check.p99_budget_ms=5000",
        *extra,
    ])


def fake_serving_dir(root, *versions, model_name: str = "taxi"):
    """A model base path with empty version directories and its models.config: (models.config path, base path)."""
    from serving import model_config

    base = os.path.join(str(root), "serving", model_name)
    for version in versions:
        os.makedirs(os.path.join(base, str(version)))
        open(os.path.join(base, str(version), "saved_model.pb"), "wb").close()
    path = os.path.join(str(root), "serving", "models.config")
    model_config.ensure(path, model_name, base)
    return path, base


def tiny_saved_model(path: str, offset: float = 10.0, noise: float = 0.0) -> str:
    """A real SavedModel in a second: `serving_default` (Predict) and `classify` (Classify) score tf.Examples
    by `fare`, sigmoid(fare - offset) (+ uniform noise in [0, noise): a model that never answers the same twice).

    What a server test needs of a model (signatures, a load, answers) without a pipeline run.
    """
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="examples")
        fare = tf.io.parse_example(serialized, {"fare": tf.io.FixedLenFeature([1], tf.float32, [0.0])})["fare"]
        probability = tf.sigmoid(fare - offset)
        if noise:
            probability += tf.random.uniform(tf.shape(probability), maxval=noise)
        classes = tf.tile(tf.constant([["0", "1"]]), [tf.shape(fare)[0], 1])
        builder = tf.compat.v1.saved_model.Builder(path)
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
            "serving_default": tf.compat.v1.saved_model.predict_signature_def(
                {"examples": serialized}, {"probabilities": probability}),
            "classify": tf.compat.v1.saved_model.classification_signature_def(
                serialized, classes, tf.concat([1.0 - probability, probability], axis=1))})
        builder.save()
    return path


def fare_examples(*fares: float):
    return [tf.train.Example(features=tf.train.Features(feature={
        "fare": tf.train.Feature(float_list=tf.train.FloatList(value=[value]))})) for value in fares]
