"""The Parquet ExampleGen: TFX's FileBasedExampleGen with TFX's Parquet executor, its rows encoded by tfx_bsl.

TFX's executor (tfx/components/example_gen/custom_executors/parquet_executor.py) is used as
it is for everything but one step: its rows are dicts turned into tf.Examples by
`utils.dict_to_example`, which writes every 0, 0.0, False and "" as a missing value
(`if not pyval:`, tfx 1.16). Here the same Beam read yields Arrow record batches
(`ReadFromParquetBatched`, one per row group) that tfx_bsl's C++ encoder turns into
tf.Examples (`formats.parquet.to_examples`: the Arrow -> tf.Example type mapping and the
refusals); splitting, spans, dates and versions, fingerprints and the output stay
TFX's (BaseExampleGenExecutor, FileBasedExampleGen's driver).
"""

import os
from typing import Any, Dict

import apache_beam as beam
from tfx.components.example_gen.custom_executors import parquet_executor
from tfx.types import standard_component_specs

from formats import parquet


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(bytes)
def _ParquetToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],  # noqa: N802 (TFX's name)
                      split_pattern: str) -> beam.pvalue.PCollection:
    """Serialized tf.Examples of the Parquet files `split_pattern` matches under `input_base`."""
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
    return (pipeline
            | "ReadFromParquet" >> beam.io.ReadFromParquetBatched(pattern)
            | "ToTFExample" >> beam.FlatMap(parquet.to_examples, pattern))


class Executor(parquet_executor.Executor):
    """TFX's Parquet executor with the rows encoded by tfx_bsl (module docstring)."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 (TFX's interface)
        return _ParquetToExample
