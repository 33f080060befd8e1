"""Fast tests of the serving pieces that need no model: batching, models.config rollouts, deployment files."""

import os
import shlex
import threading

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from contract.config import load_config
from deploy import files as deploy
from serving import model_config
from tests.samples import fake_serving_dir
from serving.batching import Batcher


def test_concurrent_requests_are_merged_into_few_calls_and_split_back_in_order():
    sizes_seen = []

    def double(inputs):
        sizes_seen.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    batcher = Batcher(double, max_batch_size=8, timeout_micros=50_000, num_threads=1)
    results = {}

    def send(i):
        results[i] = batcher.submit({"x": np.array([i, i + 100])}, 2)["y"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert all(list(results[i]) == [2 * i, 2 * (i + 100)] for i in range(12))
    assert max(sizes_seen) <= 8
    assert batcher.requests == 12 and batcher.calls < 12


def test_one_bad_request_fails_alone_in_a_merged_batch():
    def only_positive(inputs):
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": inputs["x"]}

    batcher = Batcher(only_positive, max_batch_size=8, timeout_micros=100_000)
    outcomes = {}

    def send(value):
        try:
            outcomes[value] = batcher.submit({"x": np.array([value])}, 1)["y"][0]
        except ValueError as error:
            outcomes[value] = str(error)

    threads = [threading.Thread(target=send, args=(v,)) for v in (1, -1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert outcomes == {1: 1, 2: 2, -1: "negative input"}


def test_a_lone_request_runs_in_its_own_thread_without_a_handoff():
    threads = []
    batcher = Batcher(lambda inputs: threads.append(threading.current_thread()) or {"y": inputs["x"]},
                      max_batch_size=4, timeout_micros=0)
    assert batcher.submit({"x": np.array([1])}, 1)["y"][0] == 1
    assert threads == [threading.current_thread()] and (batcher.calls, batcher.requests) == (1, 1)


def test_a_closed_batcher_still_answers():
    batcher = Batcher(lambda inputs: {"y": inputs["x"] + 1}, max_batch_size=4, timeout_micros=1000)
    batcher.close()
    assert batcher.submit({"x": np.array([1])}, 1)["y"][0] == 2



def _parsed(path):
    with open(path) as f:
        return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig()).model_config_list.config[0]


def test_canary_then_promote_then_rollback_and_retire(tmp_path):
    path, base = fake_serving_dir(tmp_path, 10, 20, 30)
    assert _parsed(path).model_version_policy.latest.num_versions == 1

    model_config.rollout(path, "taxi", 30, label=model_config.CANARY)
    entry = _parsed(path)
    assert dict(entry.version_labels) == {"stable": 20, "canary": 30}
    assert list(entry.model_version_policy.specific.versions) == [20, 30]

    model_config.rollout(path, "taxi", 30)
    assert dict(_parsed(path).version_labels) == {"stable": 30}

    result = model_config.rollback(path, "taxi", retire=True)
    entry = _parsed(path)
    assert dict(entry.version_labels) == {"stable": 20}
    assert list(entry.model_version_policy.specific.versions) == [20]
    assert result.retired == 30
    assert sorted(os.listdir(base)) == ["10", "20"]
    assert os.listdir(tmp_path / "serving" / model_config.RETIRED_DIR / "taxi") == ["30"]

    model_config.follow_latest(path, "taxi")
    assert _parsed(path).model_version_policy.latest.num_versions == 1


def test_rollouts_that_would_break_serving_are_refused(tmp_path):
    path, _ = fake_serving_dir(tmp_path, 10)
    with pytest.raises(model_config.RolloutError, match=r"version 99 of taxi is not under .*pushed versions: \[10\]"):
        model_config.rollout(path, "taxi", 99)
    with pytest.raises(model_config.RolloutError, match="only version 10; roll it out as stable"):
        model_config.rollout(path, "taxi", 10, label=model_config.CANARY)
    with pytest.raises(model_config.RolloutError, match="no version of taxi older than 10"):
        model_config.rollback(path, "taxi")
    with pytest.raises(model_config.RolloutError, match="model 'other' is not in models.config"):
        model_config.rollout(path, "other")


def test_version_policies_follow_tf_serving():
    entry = model_server_config_pb2.ModelConfig()
    entry.model_version_policy.latest.num_versions = 2
    assert model_config.versions_to_serve(entry, [1, 2, 3]) == [2, 3]
    entry.model_version_policy.specific.versions.extend([1, 5])
    assert model_config.versions_to_serve(entry, [1, 2, 3]) == [1]
    entry.model_version_policy.all.SetInParent()
    assert model_config.versions_to_serve(entry, [1, 2]) == [1, 2]


def test_deployment_files_parse_and_agree_with_the_config(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path}", "serving.max_batch_size=32"])
    files = deploy.write_deployment_files(config)

    models = _parsed(files["models.config"])
    assert models.base_path == config.model_serving_dir and models.name == "taxi"

    batching = open(files["batching_parameters.txt"]).read()
    assert "max_batch_size { value: 32 }" in batching
    assert f"batch_timeout_micros {{ value: {config.serving.batch_timeout_micros} }}" in batching

    command = shlex.split(open(files["docker-run.sh"]).read().splitlines()[-1])
    from importlib.metadata import version
    # The image must match the installed tensorflow-serving-api, whose protos the clients use.
    assert f"tensorflow/serving:{version('tensorflow-serving-api')}" in command
    assert command[command.index("-p") + 1] == "127.0.0.1:8500:8500"
    assert command[command.index("-v") + 1] == f"{config.serving_dir}:{config.serving_dir}:ro"
    assert f"--model_config_file={files['models.config']}" in command

    manifests = list(yaml.safe_load_all(open(files["kubernetes.yaml"])))
    kinds = {m["kind"]: m for m in manifests}
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment = kinds["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == pod_labels == kinds["Service"]["spec"]["selector"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert f"--batching_parameters_file={files['batching_parameters.txt']}" in container["args"]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}


def test_serving_settings_are_validated():
    from contract.errors import ConfigError

    with pytest.raises(ConfigError, match="serving.request_log_sample_rate must be between 0 and 1"):
        load_config(None, ["serving.request_log_sample_rate=2"])
    with pytest.raises(ConfigError, match="serving.max_batch_size must be positive"):
        load_config(None, ["serving.max_batch_size=0"])
    config = load_config(None, ["output_dir=/tmp/elsewhere"])
    assert config.model_request_log_dir == "/tmp/elsewhere/request_logs/taxi"


def test_a_port_in_use_is_named_with_what_to_do(tmp_path):
    import socket

    from contract.config import ServingConfig
    from serving.process import ModelServer

    path = str(tmp_path / "models.config")
    model_config.ensure(path, "taxi", str(tmp_path / "taxi"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ModelServer(path, ServingConfig(port=port, rest_port=0))
        with pytest.raises(OSError, match=rf"could not bind 127.0.0.1:{port}.*--set serving.port=N"):
            server.start()
        server = ModelServer(path, ServingConfig(port=0, rest_port=port))
        with pytest.raises(OSError, match=rf"could not bind 127.0.0.1:{port} for REST.*--set serving.rest_port=N"):
            server.start()
