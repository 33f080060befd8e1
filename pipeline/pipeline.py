"""`create_pipeline(config)`: the one DAG every runner executes.

ExampleGen (TFX's for `data.format`: ImportExampleGen, CsvExampleGen, or FileBasedExampleGen with the
Parquet executor) -> StatisticsGen -> ImportSchemaGen -> ExampleValidator ->
AnomalyGate (stops the run on bad data, skew or drift) -> Transform -> Tuner ->
Trainer -> Resolver(latest blessed model other than the candidate) -> Evaluator ->
ServingCheck (the candidate served for real, when `serving_check.enabled`) -> ServingPusher ->
EdgeExport (int8 TFLite, when `edge.enabled`) and BulkInferrer (scores an
unlabelled input, when `bulk_inference.enabled`). Runners differ only in how
they execute it (`runners/`).
"""

import importlib.metadata
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import tensorflow_model_analysis as tfma
from google.protobuf import json_format
# The modules behind `tfx.v1`, not `tfx.v1` itself: that namespace also imports the Google Cloud AI Platform
# client (tfx.v1.extensions), ~2 s of every command, 20% of an unchanged re-run (bench/profile.py).
from tfx.components.bulk_inferrer.component import BulkInferrer
from tfx.components.evaluator.component import Evaluator
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.example_gen.csv_example_gen.component import CsvExampleGen
from tfx.components.example_gen.import_example_gen.component import ImportExampleGen
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.components.trainer.component import Trainer
from tfx.components.transform.component import Transform
from tfx.components.tuner.component import Tuner
from tfx.dsl.components.common.importer import Importer
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common.resolver import Resolver
from tfx.orchestration import metadata as tfx_metadata
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import bulk_inferrer_pb2, example_gen_pb2, pusher_pb2, range_config_pb2, trainer_pb2
from tfx.types import Channel, standard_artifacts

import models.preprocessing
import models.trainer.entry
from components.anomaly_gate import AnomalyGate
from pipeline.resolvers import BaselineResolver, LatestSpansStrategy
from components import parquet_example_gen
from components.edge_export import EdgeExport
from components.serving_check import ServingCheck
from components.serving_pusher import ServingPusher
from contract.config import PipelineConfig, bundled_taxi_root, is_remote, section_to_dict
from contract.errors import ConfigError
from contract.serving import SERVING_SIGNATURE, TRANSFORM_SIGNATURE
from pipeline import tuning_reuse, vertex_training, window
from pipeline.inputs import model_problems
from validation.checks import default_serving_data

# TFX packages each module file's directory into a wheel and fingerprints it for caching: Transform's
# directory (models/) holds only the feature code, so Trainer or training-infrastructure edits keep it cached.
TRANSFORM_MODULE = models.preprocessing.__file__
# One module file for both: `run_fn` and `tuner_fn` pick the family `training.model` names. The Evaluator
# takes it too, for the loader of the models it compares.
TRAINER_MODULE = TUNER_MODULE = models.trainer.entry.__file__
UNLABELLED_SPLIT = "unlabelled"
BASELINE_RESOLVER = "latest_blessed_model_resolver"


def _parquet_example_gen(**settings) -> FileBasedExampleGen:
    return FileBasedExampleGen(
        custom_executor_spec=executor_spec.BeamExecutorSpec(parquet_example_gen.Executor), **settings
    ).with_id("ParquetExampleGen")


# TFX's ExampleGen per `data.format`; the node ids (ImportExampleGen, CsvExampleGen, ParquetExampleGen) say which.
EXAMPLE_GENS = {"tfrecord": ImportExampleGen, "csv": CsvExampleGen, "parquet": _parquet_example_gen}


def example_gen(config: PipelineConfig, span: Optional[int] = None):
    """The ExampleGen of `data.format` on `data.*`; with `span`, that span only (TFX's static RangeConfig).

    Without `span`, a pattern with `{SPAN}` or date specs ingests the latest span.
    """
    input_config, output_config = example_gen_configs(config)
    range_config = None
    if span is not None:
        range_config = range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
            start_span_number=span, end_span_number=span))
    return EXAMPLE_GENS[config.data.format](input_base=config.input_base, input_config=input_config,
                                            output_config=output_config, range_config=range_config)


def example_gen_configs(config: PipelineConfig):
    patterns = config.split_patterns
    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=n, pattern=p) for n, p in patterns.items()])
    output_config = None
    if config.data.pattern:
        train, evaluation = config.data.hash_buckets[:2]
        output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
            example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=train),
            example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=evaluation),
        ]))
    return input_config, output_config


def metrics_specs(config: PipelineConfig) -> List[tfma.MetricsSpec]:
    """TFMA metrics and the blessing thresholds of the task (`contract.tasks`: `Task.blessings`).

    Thresholds apply to the overall slice; the other metrics are reported only.
    """
    spec = config.features
    return [json_format.ParseDict(found, tfma.MetricsSpec())
            for found in spec.task_type.tfma_metrics_specs(config.evaluator, len(spec.class_names))]


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """Blessing thresholds apply to the overall slice only; slices are reported, not gated."""
    overall = tfma.SlicingSpec()
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=SERVING_SIGNATURE, label_key=config.features.label_key,
                                    prediction_key=config.features.task_type.primary_output,
                                    preprocessing_function_names=[TRANSFORM_SIGNATURE])],
        slicing_specs=[overall] + [tfma.SlicingSpec(feature_keys=[f]) for f in config.evaluator.slice_features],
        metrics_specs=metrics_specs(config),
        # Not the model's compiled Keras metrics as well: TFMA would load the model a second
        # time (as Keras, in its own DoFn) and report a second, differently thresholded `auc`
        # beside the gated one. Measured on the bundled data: 25.6 s -> 13.8 s of analysis.
        options=tfma.Options(include_default_metrics={"value": False}),
    )


def transform_custom_config(config: PipelineConfig) -> dict:
    """Transform's custom_config: the feature spec alone, so only a feature change re-runs Transform."""
    return {"features": section_to_dict(config.features)}


def tuner_custom_config(config: PipelineConfig) -> dict:
    """The Tuner's: features, the search settings, the family, batch size and seed it trains trials with, and
    the tuning key that `tuner.retune: on_change` finds the run by (`tuning_reuse`).

    `tuner.retune` itself is left out: switching it must not make the last search unfindable.
    """
    custom = dict(transform_custom_config(config),
                  tuner={k: v for k, v in section_to_dict(config.tuner).items() if k != "retune"},
                  training=section_to_dict(config.training, "model", "batch_size", "seed"))
    custom[tuning_reuse.KEY_PROPERTY] = tuning_reuse.tuning_key(config, custom)
    return custom


def trainer_custom_config(config: PipelineConfig) -> dict:
    """The Trainer's: features and the whole `training:` section (strategy, checkpoints, batch size).

    Only the Trainer gets the strategy settings, so changing the strategy
    re-runs the Trainer alone and Transform and Tuner stay cached.
    """
    return dict(transform_custom_config(config), training=section_to_dict(config.training))


@dataclass(frozen=True)
class PriorRuns:
    """What the DAG takes from earlier runs and from disk, settled by the runner before the DAG is built
    (`read_prior_runs`), so that `create_pipeline` reads nothing and its DAG depends on its arguments only.

    hyperparameters: URI of an earlier search's `best_hyperparameters` artifact to import instead of running
        the Tuner (`tuner.retune: on_change`); "" runs the Tuner.
    serving_data: what the skew check compares the training data with (`validation.serving_data`, else the
        request logs, else the bundled unlabelled split for the taxi schema); "" means no skew check.
    backfill_spans: spans of the window (`data.span_window`) on disk that no run ingested yet, oldest first:
        the runner ingests each before the run (`backfill_pipelines`, pipeline/window.py).
    """

    hyperparameters: str = ""
    serving_data: str = ""
    backfill_spans: Tuple[int, ...] = ()


def read_prior_runs(config: PipelineConfig, local_store: bool = True) -> PriorRuns:
    """The `PriorRuns` of `config`: ML Metadata for a reusable search, the request logs for serving data.

    `local_store` False (a pipeline compiled for Vertex AI, whose ML Metadata is elsewhere): no search is looked
    for, the Tuner always runs, and no span is backfilled (the window holds the spans its runs ingested).
    """
    hyperparameters = ""
    if local_store and config.tuner.enabled and config.tuner.retune == "on_change" and not config.vertex.enabled:
        reused = tuning_reuse.last_tuned(config, tuner_custom_config(config)[tuning_reuse.KEY_PROPERTY])
        hyperparameters = reused.uri if reused is not None else ""
    backfill = window.spans_to_backfill(config, example_gen(config).id) if local_store else ()
    return PriorRuns(hyperparameters=hyperparameters,
                     serving_data=default_serving_data(config) if config.validation.skew else "",
                     backfill_spans=backfill)


def check_model(config: PipelineConfig) -> None:
    """The family `training.model` names exists and trains this task under this strategy, before any component
    (the local runner's preflight checks it first, with the data)."""
    problems = model_problems(config)
    if problems:
        raise ConfigError("\n".join(problems))


def anomaly_gate(config: PipelineConfig, prior: PriorRuns, examples, statistics, schema, anomalies) -> AnomalyGate:
    """The gate, with skew against serving traffic and drift against the previous span (`{SPAN}` or a date)
    when enabled."""
    span_pattern = ""
    if config.validation.drift and config.data.spanned_pattern:
        span_pattern = os.path.join(config.input_base, config.data.spanned_pattern)
    return AnomalyGate(
        examples=examples, statistics=statistics, schema=schema, anomalies=anomalies,
        fail_severity=config.validation.fail_severity, allow_anomalies=config.validation.allow_anomalies,
        serving_data=prior.serving_data if config.validation.skew else "",
        span_pattern=span_pattern, report_dir=os.path.join(config.pipeline_root, "validation_reports"))


def create_components(config: PipelineConfig, prior: PriorRuns = PriorRuns()) -> List:
    """The components of `config`, with what `prior` settled (reused hyper-parameters, serving data)."""
    ingest = example_gen(config)
    statistics_gen = StatisticsGen(examples=ingest.outputs["examples"])
    schema_gen = ImportSchemaGen(schema_file=os.path.abspath(config.schema_file))
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    gate = anomaly_gate(config, prior, ingest.outputs["examples"], statistics_gen.outputs["statistics"],
                        schema_gen.outputs["schema"], example_validator.outputs["anomalies"])
    training_examples, window = ingest.outputs["examples"], []
    if config.data.span_window > 1:
        # Earlier runs' spans come from MLMD; this run's span must be registered before the lookup.
        spans = Resolver(
            strategy_class=LatestSpansStrategy, config={"num_spans": config.data.span_window},
            examples=Channel(type=standard_artifacts.Examples,
                                     producer_component_id=ingest.id),
        ).with_id("span_window_resolver")
        spans.add_upstream_node(ingest)
        training_examples, window = spans.outputs["examples"], [spans]
    transform = Transform(
        examples=training_examples, schema=schema_gen.outputs["schema"],
        module_file=TRANSFORM_MODULE, custom_config=transform_custom_config(config),
        disable_statistics=not config.transform.statistics,
        # Nothing reads TFT's analyzer cache back: the cache input would be the previous run's
        # output, so an unchanged re-run would no longer find Transform in TFX's cache.
        disable_analyzer_cache=True,
        # TF1 graph mode traces preprocessing_fn without tf.function: on the bundled data Transform
        # 41.2 s -> 25.3 s in a fresh run. Its graph is then slow to call eagerly (0.48 s a call against
        # 0.014 s), so every caller outside a signature goes through one traced function (edge_signature.py).
        force_tf_compat_v1=True)
    # Nothing downstream consumes the gate's report; this edge is what keeps training behind it.
    transform.add_upstream_node(gate)

    components = [ingest, statistics_gen, schema_gen, example_validator, gate, *window, transform]
    trainer_class, tuner_class = Trainer, Tuner
    trainer_config, tuner_config = trainer_custom_config(config), tuner_custom_config(config)
    if config.vertex.enabled:
        trainer_class, tuner_class = vertex_training.components()
        trainer_config = dict(trainer_config, **vertex_training.trainer_custom_config(config))
        tuner_config = dict(tuner_config, **vertex_training.tuner_custom_config(config))
    hyperparameters = None
    if prior.hyperparameters and config.tuner.enabled:
        # The very artifact the last search wrote (reimport=False): lineage leads to that Tuner run.
        importer = Importer(
            source_uri=prior.hyperparameters, artifact_type=standard_artifacts.HyperParameters,
            reimport=False).with_id(tuning_reuse.IMPORTER_ID)
        importer.add_upstream_node(transform)
        hyperparameters = importer.outputs["result"]
        components.append(importer)
    elif config.tuner.enabled:
        tuner = tuner_class(
            module_file=TUNER_MODULE,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            train_args=trainer_pb2.TrainArgs(num_steps=config.tuner.train_steps),
            eval_args=trainer_pb2.EvalArgs(num_steps=config.tuner.eval_steps),
            custom_config=tuner_config)
        hyperparameters = tuner.outputs["best_hyperparameters"]
        components.append(tuner)

    trainer = trainer_class(
        module_file=TRAINER_MODULE,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=hyperparameters,
        train_args=trainer_pb2.TrainArgs(num_steps=config.training.train_steps),
        eval_args=trainer_pb2.EvalArgs(num_steps=config.training.eval_steps),
        custom_config=trainer_config)
    # Never the candidate itself: an unchanged re-run (cached Trainer) then keeps the Evaluator cached.
    model_resolver = BaselineResolver(candidate=trainer.outputs["model"]).with_id(BASELINE_RESOLVER)
    evaluator = Evaluator(
        examples=ingest.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(config),
        # Its `custom_eval_shared_model` loads each model with the ops its family needs (a decision forest's).
        module_file=TRAINER_MODULE)
    serving_check = serving_check_component(config, trainer.outputs["model"], evaluator.outputs["blessing"],
                                            ingest.outputs["examples"])
    infra_blessing = serving_check.outputs["blessing"] if serving_check else None
    pusher = ServingPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=infra_blessing,
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=config.model_serving_dir)),
        examples=ingest.outputs["examples"],
        custom_config={"warmup_requests": config.serving.warmup_requests, "model_name": config.model_name,
                       "label_only_columns": config.features.label_only_columns, "task": config.features.task},
    ).with_id("Pusher")
    components += [trainer, model_resolver, evaluator, *([serving_check] if serving_check else []), pusher]
    if config.edge.enabled:
        components.append(EdgeExport(
            model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
            infra_blessing=infra_blessing,
            transform_graph=transform.outputs["transform_graph"],
            transformed_examples=transform.outputs["transformed_examples"],
            examples=ingest.outputs["examples"], pushed_model=pusher.outputs["pushed_model"],
            # Where and whether to export are not the export's inputs: changing them must not re-run it.
            settings={k: v for k, v in section_to_dict(config.edge).items() if k not in ("enabled", "edge_dir")},
            features=section_to_dict(config.features), model_name=config.model_name,
            base_directory=config.model_edge_dir).with_id("EdgeExport"))
    if config.bulk_inference.enabled:
        components += bulk_inference(config, trainer.outputs["model"], evaluator.outputs["blessing"])
    return components


# The serving settings the check's server runs with: batching as in production, and the Pusher's warm-up count.
SERVING_CHECK_SERVING_KEYS = ("enable_batching", "max_batch_size", "batch_timeout_micros", "num_batch_threads",
                              "warmup_requests")


def serving_check_component(config: PipelineConfig, model, blessing, examples) -> Optional[ServingCheck]:
    """The pre-push serving check of a blessed candidate (`components/serving_check.py`), or None when off."""
    if not config.serving_check.enabled:
        return None
    return ServingCheck(
        model=model, model_blessing=blessing, examples=examples,
        settings={k: v for k, v in section_to_dict(config.serving_check).items() if k != "enabled"},
        serving=section_to_dict(config.serving, *SERVING_CHECK_SERVING_KEYS), model_name=config.model_name,
        task=config.features.task, label_only_columns=config.features.label_only_columns).with_id("ServingCheck")


def bulk_inference(config: PipelineConfig, model, blessing) -> List:
    """ImportExampleGen of the unlabelled input, then TFX's BulkInferrer with the blessed candidate.

    BulkInferrer skips an unblessed model itself. It scores through TF Serving's Classify (or, for
    regression, Regress) signature: its PredictionLogs then hold ClassificationLogs (class names and
    scores) or RegressionLogs, which tfx-bsl writes for any task. (`serving_default` also returns
    string tensors, `classes`/`predicted_class`, that tfx-bsl's PredictLog conversion cannot take.)
    """
    settings = config.bulk_inference
    base = settings.input_base or bundled_taxi_root()
    unlabelled = ImportExampleGen(
        input_base=base if is_remote(base) else os.path.abspath(base),
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=UNLABELLED_SPLIT, pattern=settings.pattern)]),
        # One input split would otherwise be hash-split 2:1 into train and eval.
        output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
            example_gen_pb2.SplitConfig.Split(name=UNLABELLED_SPLIT, hash_buckets=1)])),
    ).with_id("UnlabelledExampleGen")
    inferrer = BulkInferrer(
        examples=unlabelled.outputs["examples"], model=model, model_blessing=blessing,
        data_spec=bulk_inferrer_pb2.DataSpec(example_splits=[UNLABELLED_SPLIT]),
        model_spec=bulk_inferrer_pb2.ModelSpec(model_signature_name=[config.features.task_type.examples_api.signature]))
    return [unlabelled, inferrer]


def beam_pipeline_args(config: PipelineConfig) -> List[str]:
    """Beam args of the local (DirectRunner) runs; a production runner appends its own, which win.

    Given Beam args and none of Beam's dependency flags, TFX's Beam executors build a 49 MB source package
    of TFX into a new temporary directory for every Beam component of every run and never delete it
    (`tfx.utils.dependency_utils.make_beam_dependency_flags`): 1.5 s a component, and /tmp filled up after
    a day of tests. The DirectRunner runs its workers from this environment and stages nothing, so naming
    the SDK's image (a dependency flag that only a container-based runner reads) skips that build.
    """
    args = [f"--direct_running_mode={config.beam.direct_running_mode}",
            f"--sdk_container_image=apache/beam_python3.10_sdk:{importlib.metadata.version('apache-beam')}"]
    if config.beam.direct_running_mode != "in_memory":
        args.append(f"--direct_num_workers={config.beam.direct_num_workers}")
    return args


def create_pipeline(config: PipelineConfig, prior: PriorRuns = PriorRuns(), metadata_connection_config=None,
                    extra_beam_args: Optional[List[str]] = None) -> Pipeline:
    """The pipeline for `config` and what its runner settled (`read_prior_runs`); reads nothing itself.

    Runners pass their own MLMD connection (default: this machine's SQLite at `metadata_path`) and Beam args.
    """
    check_model(config)
    return _pipeline(config, create_components(config, prior), metadata_connection_config, extra_beam_args)


def backfill_pipelines(config: PipelineConfig, prior: PriorRuns, metadata_connection_config=None,
                       extra_beam_args: Optional[List[str]] = None) -> List[Pipeline]:
    """One pipeline per span of `prior.backfill_spans`, oldest first: the run's ExampleGen node alone, on that span.

    Same pipeline name and node id as the run, so the window's resolver finds what they ingest (pipeline/window.py).
    """
    return [_pipeline(config, [example_gen(config, span)], metadata_connection_config, extra_beam_args)
            for span in prior.backfill_spans]


def _pipeline(config: PipelineConfig, components: List, metadata_connection_config,
              extra_beam_args: Optional[List[str]]) -> Pipeline:
    if metadata_connection_config is None:
        metadata_connection_config = tfx_metadata.sqlite_metadata_connection_config(config.metadata_path)
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args(config) + list(extra_beam_args or []),
    )
