"""Shared fixtures: the bundled taxi data and small real samples of it."""

import os

from cli import prologue

prologue.prepare(tensorflow_log_level="2")  # before any test module imports TensorFlow

import pytest  # noqa: E402

from contract.config import bundled_taxi_root  # noqa: E402
from tests.samples import make_sample, read_examples  # noqa: E402


@pytest.fixture(scope="session")
def taxi_root():
    return bundled_taxi_root()


@pytest.fixture(scope="session")
def eval_examples(taxi_root):
    return read_examples(os.path.join(taxi_root, "Split-eval", "*"))


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory, taxi_root):
    """600 training and 300 eval examples of the real taxi data."""
    return make_sample(str(tmp_path_factory.mktemp("sample")), taxi_root, 600, 300)


@pytest.fixture(scope="session")
def pushed_run(tmp_path_factory, small_sample):
    """One small real pipeline run that blessed and pushed a model, shared by every test that only reads it.

    Returns (config, RunSummary). Tests that change outputs (new runs, pushes, deletions) must not use this
    fixture; they copy what they need or run their own pipeline.
    """
    import io

    from pipeline.metadata import open_metadata
    from reports.summary import read_run
    from runners import local
    from tests.samples import small_config

    # With the optional BulkInferrer step on (the bundled unlabelled split), so its tests need no run of their own.
    config = small_config(str(tmp_path_factory.mktemp("pushed_run")), small_sample, "bulk_inference.enabled=true")
    out = io.StringIO()
    status = local.run(config, out=out)
    assert status == 0, out.getvalue()
    # What the run printed: the README's quick-start test checks its shape (tests/test_docs.py).
    with open(os.path.join(config.log_dir, "terminal.txt"), "w", encoding="utf-8") as f:
        f.write(out.getvalue())
    summary = read_run(open_metadata(config.metadata_path), config.pipeline_name)
    assert summary.pushed, out.getvalue()
    return config, summary
