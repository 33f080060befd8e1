"""Runs the real preprocessing_fn with TF Transform on a handful of examples (no TFX)."""

import os

import tensorflow_data_validation as tfdv
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

from models import preprocessing
from contract.config import DEFAULT_SCHEMA


def raw_schema():
    return tfdv.load_schema_text(DEFAULT_SCHEMA)


def example_to_instance(example, feature_spec):
    """A tf.Example as the dict TFT's instance-dict input expects (missing -> absent)."""
    instance = {}
    for key in feature_spec:
        feature = example.features.feature.get(key)
        kind = feature.WhichOneof("kind") if feature is not None else None
        instance[key] = list(getattr(feature, kind).value) if kind else []
    return instance


def analyze_and_transform(examples, out_dir: str, custom_config=None):
    """Fits Transform on `examples`, writes the transform graph to out_dir; returns (output, rows)."""
    schema = raw_schema()
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    instances = [example_to_instance(e, spec) for e in examples]
    metadata = dataset_metadata.DatasetMetadata(schema)

    def fn(inputs):
        return preprocessing.preprocessing_fn(inputs, custom_config)

    with tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp"), force_tf_compat_v1=False):
        (rows, _), transform_fn = (instances, metadata) | tft_beam.AnalyzeAndTransformDataset(fn)
        _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    # Written by the Transform component too: serving signatures parse raw examples with it.
    metadata_io.write_metadata(metadata, os.path.join(out_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(out_dir), rows
