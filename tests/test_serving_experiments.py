"""Experiments: the weighted split between labels, sticky keys, shadow traffic, rollout/promote/rollback, the
Istio files and the per-arm report; last, a real 90/10 experiment under load on a copy of `pushed_run`."""

import json
import os
import random
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from scipy import stats
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from contract.config import load_config
from cli import serving as serving_cli
from deploy import files as deploy
from serving import experiment_report, experiments, model_config
from serving.experiments import Experiment, ExperimentError
from tests.samples import fake_serving_dir


def _serving_dir(tmp_path, *versions):
    path, _ = fake_serving_dir(tmp_path, *versions)
    return path, experiments.experiments_path(path)


def _snapshot(*paths):
    return {p: open(p).read() if os.path.exists(p) else None for p in paths}


def test_rollout_with_a_weight_writes_labels_and_split_and_bad_splits_are_refused_unwritten(tmp_path, capsys):
    path, sidecar = _serving_dir(tmp_path, 10, 20)
    assert serving_cli.main(["rollout", "--label", "canary", "--version", "20", "--weight", "canary=10",
                     "--set", f"output_dir={tmp_path}"]) == 0
    assert "experiment split canary 10%, stable 90%" in capsys.readouterr().out
    assert experiments.read(sidecar)["taxi"].split == {"canary": 10.0, "stable": 90.0}
    before = _snapshot(path, sidecar)

    with pytest.raises(ExperimentError, match=r"weights of 'taxi' sum to 90, not 100 \(canary=40, stable=50\)"):
        model_config.set_experiment(path, "taxi", Experiment({"stable": 50, "canary": 40}))
    with pytest.raises(ExperimentError, match=r"names label\(s\) gold that models.config does not define "
                                              r"\(labels there: canary=20, stable=10\)"):
        model_config.set_experiment(path, "taxi", Experiment({"gold": 100}))
    assert serving_cli.main(["rollout", "--weight", "canary=120", "--set", f"output_dir={tmp_path}"]) == 2
    assert "sum to 100" not in capsys.readouterr().out  # the error goes to stderr, nothing half-written
    assert _snapshot(path, sidecar) == before

    with pytest.raises(ExperimentError, match="shadow label 'gold'"):
        model_config.set_experiment(path, "taxi", Experiment({"stable": 100}, shadow_label="gold", shadow_percent=5))
    assert _snapshot(path, sidecar) == before


def test_promote_and_rollback_end_the_experiment_in_one_step(tmp_path):
    path, sidecar = _serving_dir(tmp_path, 10, 20)
    model_config.rollout(path, "taxi", 20, model_config.CANARY, Experiment({"canary": 10}))
    result = model_config.rollback(path, "taxi")
    assert result.labels == {"stable": 10} and result.ended_experiment
    assert experiments.read(sidecar) == {}

    model_config.rollout(path, "taxi", 20, model_config.CANARY, Experiment({"canary": 25}))
    assert model_config.set_experiment(path, "taxi", Experiment({"canary": 50})).experiment.split == {
        "canary": 50.0, "stable": 50.0}
    result = model_config.promote(path, "taxi")
    assert result.labels == {"stable": 20} and result.ended_experiment
    assert experiments.read(sidecar) == {}
    with pytest.raises(model_config.RolloutError, match="no canary to promote"):
        model_config.promote(path, "taxi")


def test_sticky_keys_keep_their_arm_and_random_draws_follow_the_weights():
    experiment = Experiment({"stable": 90, "canary": 10})
    arms = {key: experiment.arm(key, random.Random(1)) for key in (f"customer-{i}" for i in range(4000))}
    assert all(experiment.arm(key, random.Random(2)) == arm for key, arm in list(arms.items())[:200])
    draws = [experiment.arm("", random.Random(seed)) for seed in range(4000)]
    for assigned in (list(arms.values()), draws):
        canary = assigned.count("canary")
        assert stats.binomtest(canary, len(assigned), 0.10).pvalue > 0.001, canary
    shadowed = sum(bool(Experiment({"stable": 100}, shadow_label="canary", shadow_percent=20).shadow_for(
        "stable", random.Random(seed))) for seed in range(4000))
    assert stats.binomtest(shadowed, 4000, 0.20).pvalue > 0.001


def test_kubernetes_files_carry_the_split_as_istio_weights_and_the_shadow_as_a_mirror(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path}"])
    path, _ = _serving_dir(tmp_path, 10, 20)
    model_config.rollout(path, "taxi", 20, model_config.CANARY,
                         Experiment({"canary": 2.5}, shadow_label="canary", shadow_percent=30))
    files = deploy.write_deployment_files(config)
    manifests = list(yaml.safe_load_all(open(files["kubernetes.yaml"])))
    by_kind = {}
    for manifest in manifests:
        by_kind.setdefault(manifest["kind"], []).append(manifest)
    (virtual_service,) = by_kind["VirtualService"]
    split = virtual_service["spec"]["http"][-1]
    assert {r["destination"]["subset"]: r["weight"] for r in split["route"]} == {"canary": 3, "stable": 97}
    assert split["mirror"]["subset"] == "canary" and split["mirrorPercentage"]["value"] == 30.0
    pinned = {route["name"]: route for route in virtual_service["spec"]["http"][:-1]}
    assert pinned["pinned-canary"]["match"][0]["uri"]["regex"].startswith("/v1/models/taxi/(labels/canary|versions/20)")
    assert pinned["pinned-canary"]["match"][1]["headers"] == {"x-serving-arm": {"exact": "canary"}}
    (rule,) = by_kind["DestinationRule"]
    assert {s["name"]: s["labels"] for s in rule["spec"]["subsets"]} == {"canary": {"arm": "canary"},
                                                                         "stable": {"arm": "stable"}}
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert set(deployments) == {"tf-serving-taxi-canary", "tf-serving-taxi-stable"}
    for arm, version in (("stable", 10), ("canary", 20)):
        args = deployments[f"tf-serving-taxi-{arm}"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--model_config_file={files[f'models-{arm}.config']}" in args
        entry = model_config.read(files[f"models-{arm}.config"]).model_config_list.config[0]
        assert list(entry.model_version_policy.specific.versions) == [version]
        assert dict(entry.version_labels) == {arm: version}
    (service,) = by_kind["Service"]
    assert service["spec"]["selector"] == {"app": "tf-serving-taxi"}
    assert len(by_kind["HorizontalPodAutoscaler"]) == 2

    model_config.promote(path, "taxi")  # the experiment ends: one Deployment again, no arm configs left
    files = deploy.write_deployment_files(config)
    assert {m["kind"] for m in yaml.safe_load_all(open(files["kubernetes.yaml"]))} == {
        "Deployment", "Service", "HorizontalPodAutoscaler"}
    assert not [f for f in os.listdir(config.serving_dir) if f.startswith("models-")]


def test_report_statistics_agree_with_scipy_and_find_a_real_difference(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 3000)
    good = np.clip(labels * 0.35 + rng.normal(0.35, 0.2, 3000), 0, 1)
    auc = experiment_report.auc_with_variance(good, labels)
    u = stats.mannwhitneyu(good[labels == 1], good[labels == 0]).statistic
    assert auc["auc"] == pytest.approx(u / ((labels == 1).sum() * (labels == 0).sum()))
    assert experiment_report.delong_independent(auc, auc) == 1.0

    directory = tmp_path / "logs"
    directory.mkdir()
    noise = rng.uniform(0, 1, 3000)
    with open(directory / "experiment-1.jsonl", "w") as f:
        for i in range(3000):
            arm, score = ("canary", noise[i]) if i % 10 == 0 else ("stable", good[i])
            f.write(json.dumps({"model": "taxi", "arm": arm, "version": 2 if arm == "canary" else 1,
                                "api": "Predict", "latency_ms": 1.0 + (i % 7), "scores": [float(score)],
                                "labels": [int(labels[i])], "time": 1.0}) + "\n")
    report = experiment_report.build(str(directory), "taxi", Experiment({"stable": 90, "canary": 10}))
    canary, stable = report["arms"]["canary"], report["arms"]["stable"]
    assert (canary["requests"], stable["requests"]) == (300, 2700)
    assert canary["share_p_value"] > 0.05  # exactly the configured 10%
    assert stable["auc"] > 0.8 and abs(canary["auc"] - 0.5) < 0.1
    assert canary["versus_stable"]["auc_p_value"] < 1e-6 and canary["versus_stable"]["accuracy_p_value"] < 1e-6
    text = experiment_report.render(report)
    assert "canary vs stable: AUC -" in text and "(significant)" in text


@pytest.mark.slow
def test_a_90_10_experiment_under_load_gives_the_canary_10_percent_and_the_report_shows_both_arms(
        pushed_run, tmp_path, capsys):
    from tests.samples import read_examples
    from tests.test_serving import _copy_serving, _copy_version_atomically, _start

    config, _ = pushed_run
    path, base = _copy_serving(pushed_run, tmp_path)
    old = max(int(v) for v in os.listdir(base) if v.isdigit())
    _copy_version_atomically(base, old, old + 1)
    settings = ["--set", f"output_dir={tmp_path}"]
    assert serving_cli.main(["rollout", "--label", "canary", "--version", str(old + 1), "--weight", "canary=10",
                     "--shadow", "canary=20", *settings]) == 0
    server = _start(path, tmp_path, experiment_log_dir=str(tmp_path / "experiment_logs"),
                    label_spec=config.features)
    # Labelled traffic: the eval examples keep `tips`, so the experiment log has labels.
    examples = read_examples(os.path.join(config.data.input_base, "Split-eval", "*"), 200)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def request(example, **spec):
        message = predict_pb2.PredictRequest()
        message.model_spec.name = "taxi"
        if "label" in spec:
            message.model_spec.version_label = spec["label"]
        message.inputs["examples"].CopyFrom(tf.make_tensor_proto([example.SerializeToString()], dtype=tf.string))
        return message

    versions, failures, total = [], [], 1500

    def client(index):
        for number in range(index, total, 8):
            try:
                versions.append(stub.Predict(request(examples[number % len(examples)]),
                                             timeout=30).model_spec.version.value)
            except grpc.RpcError as error:
                failures.append(error.details())

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures[:3]
        canary = versions.count(old + 1)
        assert set(versions) == {old, old + 1}
        # Shadow calls never answer a client: the canary's share stays at its 10% weight.
        assert stats.binomtest(canary, total, 0.10).pvalue > 0.001, f"{canary} of {total} went to the canary"
        sticky = {stub.Predict(request(examples[0]), metadata=[("x-experiment-key", "customer-7")],
                               timeout=30).model_spec.version.value for _ in range(20)}
        assert len(sticky) == 1
        assert {stub.Predict(request(examples[0], label="stable"), timeout=30).model_spec.version.value
                for _ in range(20)} == {old}
        capsys.readouterr()
        assert serving_cli.main(["status", "--target", f"127.0.0.1:{server.port}", *settings]) == 0
        assert "experiment split canary 10%, stable 90%" in capsys.readouterr().out
    finally:
        channel.close()
        server.stop()

    capsys.readouterr()
    assert serving_cli.main(["experiment", "report", "--json", *settings, "--set",
                     f"serving.experiment_log_dir={tmp_path / 'experiment_logs'}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["arms"]) == {"stable", "canary"}
    assert report["arms"]["canary"]["requests"] + report["arms"]["stable"]["requests"] == total + 20
    assert report["arms"]["stable"]["labelled"] > 1000 and "auc" in report["arms"]["stable"]
    assert "auc_p_value" in report["arms"]["canary"]["versus_stable"]
    shadow = report["shadow"]["canary"]
    assert shadow["requests"] > 100 and shadow["live_arms"] == ["stable"]
    assert shadow["decisions_agreeing"] == 1.0  # the canary is a copy of stable
