"""`create_pipeline(config)`: the one DAG every runner executes.

ImportExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator ->
AnomalyGate (stops the run on bad data, skew or drift) -> Transform -> Tuner ->
Trainer -> Resolver(latest blessed model other than the candidate) -> Evaluator -> ServingPusher ->
EdgeExport (int8 TFLite, when `edge.enabled`) and BulkInferrer (scores an
unlabelled input, when `bulk_inference.enabled`). Runners differ only in how
they execute it (`runners/`).
"""

import os
from typing import List, Optional

import tensorflow_model_analysis as tfma
# The modules behind `tfx.v1`, not `tfx.v1` itself: that namespace also imports the Google Cloud AI Platform
# client (tfx.v1.extensions), ~2 s of every command, 20% of an unchanged re-run (bench/profile.py).
from tfx.components.bulk_inferrer.component import BulkInferrer
from tfx.components.evaluator.component import Evaluator
from tfx.components.example_gen.import_example_gen.component import ImportExampleGen
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.components.trainer.component import Trainer
from tfx.components.transform.component import Transform
from tfx.components.tuner.component import Tuner
from tfx.dsl.components.common.importer import Importer
from tfx.dsl.components.common.resolver import Resolver
from tfx.orchestration import metadata as tfx_metadata
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import bulk_inferrer_pb2, example_gen_pb2, pusher_pb2, trainer_pb2
from tfx.types import Channel, standard_artifacts

import models.preprocessing
import models.trainer.model
import models.trainer.tuning
from components.anomaly_gate import AnomalyGate
from pipeline.resolvers import BaselineResolver, LatestSpansStrategy
from components.edge_export import EdgeExport
from components.serving_pusher import ServingPusher
from contract.config import PipelineConfig, bundled_taxi_root, is_remote, section_to_dict
from contract.serving import (CLASSIFY_SIGNATURE, PRIMARY_OUTPUT, REGRESS_SIGNATURE, SERVING_SIGNATURE,
                              TRANSFORM_SIGNATURE)
from pipeline import tuning_reuse, vertex_training
from validation.checks import default_serving_data

# TFX packages each module file's directory into a wheel and fingerprints it for caching: Transform's
# directory (models/) holds only the feature code, so Trainer or training-infrastructure edits keep it cached.
TRANSFORM_MODULE = models.preprocessing.__file__
TRAINER_MODULE = models.trainer.model.__file__
TUNER_MODULE = models.trainer.tuning.__file__
UNLABELLED_SPLIT = "unlabelled"
BASELINE_RESOLVER = "latest_blessed_model_resolver"


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


def _threshold(lower: Optional[float] = None, upper: Optional[float] = None, change: Optional[float] = None,
               higher_is_better: bool = True) -> tfma.MetricThreshold:
    """A threshold on the overall slice's value (`lower`/`upper`) and on its change vs the baseline.

    `change` is how much worse than the baseline the candidate may be: a drop for
    higher-is-better metrics, an increase for lower-is-better ones.
    """
    value = None
    if lower is not None or upper is not None:
        value = tfma.GenericValueThreshold(**({"lower_bound": {"value": lower}} if lower is not None else {}),
                                           **({"upper_bound": {"value": upper}} if upper is not None else {}))
    difference = None
    if change is not None:
        # The epsilon keeps float noise in an identical candidate's difference (an unchanged re-run) from failing it.
        difference = tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER if higher_is_better else
            tfma.MetricDirection.LOWER_IS_BETTER,
            absolute={"value": -change - 1e-10 if higher_is_better else change + 1e-10})
    return tfma.MetricThreshold(value_threshold=value, change_threshold=difference)


def _gated(metric: str, threshold: tfma.MetricThreshold, metric_config: str = "") -> tfma.MetricConfig:
    return tfma.MetricConfig(class_name=metric, config=metric_config, per_slice_thresholds=[
        tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)])


def metrics_specs(config: PipelineConfig) -> List[tfma.MetricsSpec]:
    """TFMA metrics and the blessing thresholds of the task (`features.task`).

    binary: AUC and binary accuracy gated, precision/recall, calibration and ROC plots;
    multiclass: accuracy gated (also vs the baseline), macro-averaged one-vs-rest AUC
    gated, recall per class (of the top class), the confusion matrix; regression: RMSE
    gated (upper bound, and lower-is-better vs the baseline), MAE, mean prediction and
    mean label.
    """
    rules, spec = config.evaluator, config.features
    count = tfma.MetricConfig(class_name="ExampleCount")
    if spec.task == "binary":
        return [tfma.MetricsSpec(metrics=[
            count,
            _gated("AUC", _threshold(lower=rules.min_auc, change=rules.max_auc_drop)),
            _gated("BinaryAccuracy", _threshold(lower=rules.min_binary_accuracy)),
            tfma.MetricConfig(class_name="Precision"),
            tfma.MetricConfig(class_name="Recall"),
            tfma.MetricConfig(class_name="CalibrationPlot"),
            tfma.MetricConfig(class_name="ConfusionMatrixPlot"),
        ])]
    if spec.task == "multiclass":
        class_ids = list(range(len(spec.class_names)))
        return [
            tfma.MetricsSpec(metrics=[
                count,
                _gated("SparseCategoricalAccuracy",
                       _threshold(lower=rules.min_accuracy, change=rules.max_accuracy_drop)),
                tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
            ]),
            tfma.MetricsSpec(metrics=[_gated("AUC", _threshold(lower=rules.min_auc))],
                             aggregate=tfma.AggregationOptions(macro_average=True,
                                                               class_weights={i: 1.0 for i in class_ids})),
            tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="Recall", config='{"top_k": 1}')],
                             binarize=tfma.BinarizationOptions(class_ids={"values": class_ids})),
        ]
    return [tfma.MetricsSpec(metrics=[
        count,
        _gated("RootMeanSquaredError", _threshold(upper=rules.max_rmse or None, change=rules.max_rmse_increase,
                                                  higher_is_better=False)),
        tfma.MetricConfig(class_name="MeanAbsoluteError"),
        tfma.MetricConfig(class_name="MeanPrediction"),
        tfma.MetricConfig(class_name="MeanLabel"),
    ])]


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """Blessing thresholds apply to the overall slice only; slices are reported, not gated."""
    overall = tfma.SlicingSpec()
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=SERVING_SIGNATURE, label_key=config.features.label_key,
                                    prediction_key=PRIMARY_OUTPUT[config.features.task],
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
    """The Tuner's: features, the search settings, the batch size and seed it trains trials with, and
    the tuning key that `tuner.retune: on_change` finds the run by (`tuning_reuse`).

    `tuner.retune` itself is left out: switching it must not make the last search unfindable.
    """
    custom = dict(transform_custom_config(config),
                  tuner={k: v for k, v in section_to_dict(config.tuner).items() if k != "retune"},
                  training=section_to_dict(config.training, "batch_size", "seed"))
    custom[tuning_reuse.KEY_PROPERTY] = tuning_reuse.tuning_key(config, custom)
    return custom


def trainer_custom_config(config: PipelineConfig) -> dict:
    """The Trainer's: features and the whole `training:` section (strategy, checkpoints, batch size).

    Only the Trainer gets the strategy settings, so changing the strategy
    re-runs the Trainer alone and Transform and Tuner stay cached.
    """
    return dict(transform_custom_config(config), training=section_to_dict(config.training))


def anomaly_gate(config: PipelineConfig, examples, statistics, schema, anomalies) -> AnomalyGate:
    """The gate, with skew against serving traffic and drift against the previous `{SPAN}` when enabled."""
    span_pattern = ""
    train_pattern = config.data.pattern or config.data.train_pattern
    if config.validation.drift and "{SPAN}" in train_pattern:
        span_pattern = os.path.join(config.input_base, train_pattern)
    return AnomalyGate(
        examples=examples, statistics=statistics, schema=schema, anomalies=anomalies,
        fail_severity=config.validation.fail_severity, allow_anomalies=config.validation.allow_anomalies,
        serving_data=default_serving_data(config) if config.validation.skew else "",
        span_pattern=span_pattern, report_dir=os.path.join(config.pipeline_root, "validation_reports"))


def create_components(config: PipelineConfig, reuse_tuning: bool = True) -> List:
    """The components; `reuse_tuning` False: never look for a previous search (a store elsewhere)."""
    input_config, output_config = example_gen_configs(config)
    example_gen = ImportExampleGen(
        input_base=config.input_base, input_config=input_config, output_config=output_config)
    statistics_gen = StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = ImportSchemaGen(schema_file=os.path.abspath(config.schema_file))
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    gate = anomaly_gate(config, example_gen.outputs["examples"], statistics_gen.outputs["statistics"],
                        schema_gen.outputs["schema"], example_validator.outputs["anomalies"])
    training_examples, window = example_gen.outputs["examples"], []
    if config.data.span_window > 1:
        # Earlier runs' spans come from MLMD; this run's span must be registered before the lookup.
        spans = Resolver(
            strategy_class=LatestSpansStrategy, config={"num_spans": config.data.span_window},
            examples=Channel(type=standard_artifacts.Examples,
                                     producer_component_id=example_gen.id),
        ).with_id("span_window_resolver")
        spans.add_upstream_node(example_gen)
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

    components = [example_gen, statistics_gen, schema_gen, example_validator, gate, *window, transform]
    trainer_class, tuner_class = Trainer, Tuner
    trainer_config, tuner_config = trainer_custom_config(config), tuner_custom_config(config)
    if config.vertex.enabled:
        trainer_class, tuner_class = vertex_training.components()
        trainer_config = dict(trainer_config, **vertex_training.trainer_custom_config(config))
        tuner_config = dict(tuner_config, **vertex_training.tuner_custom_config(config))
    hyperparameters = None
    reused = None
    if reuse_tuning and config.tuner.enabled and config.tuner.retune == "on_change" and not config.vertex.enabled:
        reused = tuning_reuse.last_tuned(config, tuner_config[tuning_reuse.KEY_PROPERTY])
    if reused is not None:
        # The very artifact the last search wrote (reimport=False): lineage leads to that Tuner run.
        importer = Importer(
            source_uri=reused.uri, artifact_type=standard_artifacts.HyperParameters,
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
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(config))
    pusher = ServingPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=config.model_serving_dir)),
        examples=example_gen.outputs["examples"],
        custom_config={"warmup_requests": config.serving.warmup_requests, "model_name": config.model_name,
                       "label_only_columns": config.features.label_only_columns, "task": config.features.task},
    ).with_id("Pusher")
    components += [trainer, model_resolver, evaluator, pusher]
    if config.edge.enabled:
        components.append(EdgeExport(
            model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
            transform_graph=transform.outputs["transform_graph"],
            transformed_examples=transform.outputs["transformed_examples"],
            examples=example_gen.outputs["examples"], pushed_model=pusher.outputs["pushed_model"],
            # Where and whether to export are not the export's inputs: changing them must not re-run it.
            settings={k: v for k, v in section_to_dict(config.edge).items() if k not in ("enabled", "edge_dir")},
            features=section_to_dict(config.features), model_name=config.model_name,
            base_directory=config.model_edge_dir).with_id("EdgeExport"))
    if config.bulk_inference.enabled:
        components += bulk_inference(config, trainer.outputs["model"], evaluator.outputs["blessing"])
    return components


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
        model_spec=bulk_inferrer_pb2.ModelSpec(model_signature_name=[
            REGRESS_SIGNATURE if config.features.task == "regression" else CLASSIFY_SIGNATURE]))
    return [unlabelled, inferrer]


def beam_pipeline_args(config: PipelineConfig) -> List[str]:
    args = [f"--direct_running_mode={config.beam.direct_running_mode}"]
    if config.beam.direct_running_mode != "in_memory":
        args.append(f"--direct_num_workers={config.beam.direct_num_workers}")
    return args


def create_pipeline(config: PipelineConfig, metadata_connection_config=None,
                    extra_beam_args: Optional[List[str]] = None) -> Pipeline:
    """The pipeline for `config`; runners pass their own MLMD connection and Beam args."""
    # `tuner.retune: on_change` reads the store the run will write: only this machine's SQLite.
    local_store = metadata_connection_config is None
    if local_store:
        metadata_connection_config = tfx_metadata.sqlite_metadata_connection_config(
            config.metadata_path)
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config, reuse_tuning=local_store),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args(config) + list(extra_beam_args or []),
    )
