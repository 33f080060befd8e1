"""`create_pipeline(config)`: the one DAG every runner executes.

ImportExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator ->
AnomalyGate (stops the run on bad data, skew or drift) -> Transform -> Tuner ->
Trainer -> Resolver(latest blessed model) -> Evaluator -> ServingPusher ->
EdgeExport (int8 TFLite, when `edge.enabled`) and BulkInferrer (scores an
unlabelled input, when `bulk_inference.enabled`). Runners differ only in how
they execute it (`runners/`).
"""

import dataclasses
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import List, Optional  # noqa: E402

import tensorflow_model_analysis as tfma  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.proto import example_gen_pb2  # noqa: E402

from components.anomaly_gate import AnomalyGate  # noqa: E402
from components.edge_export import EdgeExport  # noqa: E402
from components.serving_pusher import SERVING_SIGNATURE, ServingPusher  # noqa: E402
from components.span_window import LatestSpansStrategy  # noqa: E402
from pipeline import inputs, vertex_training  # noqa: E402
from pipeline.config import REPO_ROOT, PipelineConfig, is_remote  # noqa: E402

MODULES_DIR = os.path.join(REPO_ROOT, "models")
TRANSFORM_MODULE = os.path.join(MODULES_DIR, "preprocessing.py")
TRAINER_MODULE = os.path.join(MODULES_DIR, "model.py")
TUNER_MODULE = os.path.join(MODULES_DIR, "tuning.py")
UNLABELLED_SPLIT = "unlabelled"


def example_gen_configs(config: PipelineConfig):
    patterns = inputs.split_patterns(config)
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


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """Blessing thresholds apply to the overall slice only; slices are reported, not gated."""
    overall = tfma.SlicingSpec()
    label_key = config.features.spec().label_key

    def gated(metric: str, lower_bound: float) -> tfma.MetricConfig:
        change = None
        if metric == "AUC":
            change = tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                absolute={"value": -config.evaluator.max_auc_drop - 1e-10})
        return tfma.MetricConfig(class_name=metric, per_slice_thresholds=[tfma.PerSliceMetricThreshold(
            slicing_specs=[overall],
            threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(lower_bound={"value": lower_bound}),
                change_threshold=change))])

    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=label_key,
                                    preprocessing_function_names=["transform_features"])],
        slicing_specs=[overall] + [tfma.SlicingSpec(feature_keys=[f]) for f in config.evaluator.slice_features],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            gated("AUC", config.evaluator.min_auc),
            gated("BinaryAccuracy", config.evaluator.min_binary_accuracy),
            tfma.MetricConfig(class_name="Precision"),
            tfma.MetricConfig(class_name="Recall"),
            tfma.MetricConfig(class_name="CalibrationPlot"),
            tfma.MetricConfig(class_name="ConfusionMatrixPlot"),
        ])],
    )


def module_custom_config(config: PipelineConfig) -> dict:
    """What Transform, Tuner and Trainer module functions receive as `custom_config`."""
    return {
        "features": config.features.spec().to_dict(),
        "batch_size": config.training.batch_size,
        "tuner_algorithm": config.tuner.algorithm,
        "tuner_max_trials": config.tuner.max_trials,
    }


def anomaly_gate(config: PipelineConfig, examples, statistics, schema, anomalies) -> AnomalyGate:
    """The gate, with skew against serving traffic and drift against the previous `{SPAN}` when enabled."""
    from validation.checks import default_serving_data

    span_pattern = ""
    train_pattern = config.data.pattern or config.data.train_pattern
    if config.validation.drift and "{SPAN}" in train_pattern:
        span_pattern = os.path.join(inputs.input_base(config), train_pattern)
    return AnomalyGate(
        examples=examples, statistics=statistics, schema=schema, anomalies=anomalies,
        fail_severity=config.validation.fail_severity, allow_anomalies=config.validation.allow_anomalies,
        serving_data=default_serving_data(config) if config.validation.skew else "",
        span_pattern=span_pattern, report_dir=os.path.join(config.pipeline_root, "validation_reports"))


def trainer_custom_config(config: PipelineConfig, custom_config: dict) -> dict:
    """The Trainer's custom_config: the modules' own plus the strategy settings (models/strategies.py).

    Only the Trainer gets them, so changing the strategy re-runs the Trainer
    alone and Transform stays cached.
    """
    from models.strategies import StrategySettings

    fields = [f.name for f in dataclasses.fields(StrategySettings)]
    return dict(custom_config, training={name: getattr(config.training, name) for name in fields})


def create_components(config: PipelineConfig) -> List:
    input_config, output_config = example_gen_configs(config)
    example_gen = tfx.components.ImportExampleGen(
        input_base=inputs.input_base(config), input_config=input_config, output_config=output_config)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=os.path.abspath(config.schema_file))
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    gate = anomaly_gate(config, example_gen.outputs["examples"], statistics_gen.outputs["statistics"],
                        schema_gen.outputs["schema"], example_validator.outputs["anomalies"])
    custom_config = module_custom_config(config)
    training_examples, window = example_gen.outputs["examples"], []
    if config.data.span_window > 1:
        # Earlier runs' spans come from MLMD; this run's span must be registered before the lookup.
        spans = tfx.dsl.Resolver(
            strategy_class=LatestSpansStrategy, config={"num_spans": config.data.span_window},
            examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                     producer_component_id=example_gen.id),
        ).with_id("span_window_resolver")
        spans.add_upstream_node(example_gen)
        training_examples, window = spans.outputs["examples"], [spans]
    transform = tfx.components.Transform(
        examples=training_examples, schema=schema_gen.outputs["schema"],
        module_file=TRANSFORM_MODULE, custom_config=custom_config)
    # Nothing downstream consumes the gate's report; this edge is what keeps training behind it.
    transform.add_upstream_node(gate)

    components = [example_gen, statistics_gen, schema_gen, example_validator, gate, *window, transform]
    trainer_class, tuner_class = tfx.components.Trainer, tfx.components.Tuner
    trainer_config, tuner_config = trainer_custom_config(config, custom_config), custom_config
    if config.vertex.enabled:
        trainer_class, tuner_class = vertex_training.components()
        trainer_config = dict(trainer_config, **vertex_training.trainer_custom_config(config))
        tuner_config = dict(tuner_config, **vertex_training.tuner_custom_config(config))
    hyperparameters = None
    if config.tuner.enabled:
        tuner = tuner_class(
            module_file=TUNER_MODULE,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            train_args=tfx.proto.TrainArgs(num_steps=config.tuner.train_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=config.tuner.eval_steps),
            custom_config=tuner_config)
        hyperparameters = tuner.outputs["best_hyperparameters"]
        components.append(tuner)

    trainer = trainer_class(
        module_file=TRAINER_MODULE,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=hyperparameters,
        train_args=tfx.proto.TrainArgs(num_steps=config.training.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=config.training.eval_steps),
        custom_config=trainer_config)
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(config))
    pusher = ServingPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.model_serving_dir)),
        examples=example_gen.outputs["examples"],
        custom_config={"warmup_requests": config.serving.warmup_requests, "model_name": config.model_name,
                       "label_only_columns": list(config.features.spec().label_only_columns)},
    ).with_id("Pusher")
    components += [trainer, model_resolver, evaluator, pusher]
    if config.edge.enabled:
        components.append(EdgeExport(
            model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
            transform_graph=transform.outputs["transform_graph"],
            transformed_examples=transform.outputs["transformed_examples"],
            examples=example_gen.outputs["examples"], pushed_model=pusher.outputs["pushed_model"],
            settings={k: v for k, v in dataclasses.asdict(config.edge).items() if k not in ("enabled", "edge_dir")},
            features=config.features.spec().to_dict(), model_name=config.model_name,
            base_directory=config.model_edge_dir).with_id("EdgeExport"))
    if config.bulk_inference.enabled:
        components += bulk_inference(config, trainer.outputs["model"], evaluator.outputs["blessing"])
    return components


def bulk_inference(config: PipelineConfig, model, blessing) -> List:
    """ImportExampleGen of the unlabelled input, then TFX's BulkInferrer with the blessed candidate.

    BulkInferrer skips an unblessed model itself; its PredictionLogs use the same
    `serving_default` signature as TF Serving and `python -m serving score`.
    """
    settings = config.bulk_inference
    base = settings.input_base or inputs.bundled_taxi_root()
    unlabelled = tfx.components.ImportExampleGen(
        input_base=base if is_remote(base) else os.path.abspath(base),
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=UNLABELLED_SPLIT, pattern=settings.pattern)]),
        # One input split would otherwise be hash-split 2:1 into train and eval.
        output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
            example_gen_pb2.SplitConfig.Split(name=UNLABELLED_SPLIT, hash_buckets=1)])),
    ).with_id("UnlabelledExampleGen")
    inferrer = tfx.components.BulkInferrer(
        examples=unlabelled.outputs["examples"], model=model, model_blessing=blessing,
        data_spec=tfx.proto.DataSpec(example_splits=[UNLABELLED_SPLIT]),
        model_spec=tfx.proto.ModelSpec(model_signature_name=[SERVING_SIGNATURE]))
    return [unlabelled, inferrer]


def beam_pipeline_args(config: PipelineConfig) -> List[str]:
    args = [f"--direct_running_mode={config.beam.direct_running_mode}"]
    if config.beam.direct_running_mode != "in_memory":
        args.append(f"--direct_num_workers={config.beam.direct_num_workers}")
    return args


def create_pipeline(config: PipelineConfig, metadata_connection_config=None,
                    extra_beam_args: Optional[List[str]] = None) -> tfx.dsl.Pipeline:
    """The pipeline for `config`; runners pass their own MLMD connection and Beam args."""
    if metadata_connection_config is None:
        metadata_connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path)
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args(config) + list(extra_beam_args or []),
    )
