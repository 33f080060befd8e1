"""The pre-push serving check (components/serving_check.py): a real server process loads the candidate, answers
its warm-up requests and real eval examples; a model that does not load, answers differently from the
SavedModel in process, or is over the latency budget is refused with the reason.

The whole path (the Pusher and EdgeExport pushing nothing, the reason in the summary and lineage) is in
tests/test_run_isolation.py's pipeline run; `pushed_run` is a run the check passed.
"""

import os

import pytest

from components.serving_check import check
from contract.config import ServingCheckConfig
from tests.samples import read_examples, tiny_saved_model

SERVING = {"enable_batching": True, "max_batch_size": 64, "batch_timeout_micros": 0, "num_batch_threads": 1,
           "warmup_requests": 3}


@pytest.fixture(scope="module")
def rows(taxi_root):
    examples = read_examples(os.path.join(taxi_root, "Split-eval", "*"), 8)
    for example in examples:
        del example.features.feature["tips"]
    return examples


def _check(tmp_path, model_dir, rows, **settings):
    values = dict(requests=8, p99_budget_ms=10_000.0, load_timeout_seconds=300.0)
    values.update(settings)
    workdir = tmp_path / "work"
    workdir.mkdir()
    log = tmp_path / "server.log"
    return check(model_dir, rows, "tipper", "binary", ServingCheckConfig(**values), SERVING, str(workdir), str(log))


def test_over_the_latency_budget_is_refused_after_every_answer_matched(tmp_path, rows):
    result = _check(tmp_path, tiny_saved_model(str(tmp_path / "model")), rows, p99_budget_ms=1e-6)
    assert not result.passed
    # Everything before the budget passed: 3 warm-up Predicts + 1 Classify, 8 requests, same answers.
    assert (result.warmup_requests, result.requests, len(result.latencies_ms)) == (4, 8, 8)
    assert result.max_difference < 1e-5 and result.p99_ms > 0
    assert result.reason == (f"p99 latency {result.p99_ms:.1f} ms over 8 requests exceeds the budget of 1e-06 ms "
                             "(serving_check.p99_budget_ms)")


def test_a_model_that_does_not_load_is_refused_with_the_servers_error(tmp_path, rows):
    model = tiny_saved_model(str(tmp_path / "model"))
    with open(os.path.join(model, "saved_model.pb"), "wb") as f:
        f.write(b"\x08\x96\x01 not a SavedModel")
    result = _check(tmp_path, model, rows)
    assert not result.passed and result.requests == 0
    assert result.reason.startswith("the model did not load (END): Can't parse ")
    assert "saved_model.pb as binary proto" in result.reason


def test_a_model_whose_answers_differ_from_the_saved_model_in_process_is_refused(tmp_path, rows):
    result = _check(tmp_path, tiny_saved_model(str(tmp_path / "model"), noise=0.5), rows)
    assert not result.passed
    assert result.reason.startswith("request 1: output 'probabilities' differs from the SavedModel in process by ")
