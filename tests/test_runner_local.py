"""The local runner's terminal output: progress lines and one-line failure reasons."""

import io
import logging

from runners.local import ProgressHandler, one_line_reason


def _log(handler, message, *args):
    handler.emit(logging.LogRecord("absl", logging.INFO, __file__, 0, message, args, None))


def test_progress_prints_one_line_at_start_and_end_with_cache_note():
    out = io.StringIO()
    handler = ProgressHandler(out, total=2)
    _log(handler, "Component %s is running.", "StatisticsGen")
    _log(handler, "A cached execution %d is used.", 7)
    _log(handler, "Component %s is finished.", "StatisticsGen")
    _log(handler, "unrelated message %s", "x")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[ 1/2] StatisticsGen") and lines[0].endswith("started")
    assert "done" in lines[1] and lines[1].endswith("(cached)")
    assert set(handler.timings) == {"StatisticsGen"}


def test_failure_reason_is_the_root_cause_in_one_line():
    try:
        try:
            raise ValueError("Feature fare has type string\nexpected float")
        except ValueError as inner:
            raise RuntimeError("component failed") from inner
    except RuntimeError as outer:
        assert one_line_reason(outer) == "ValueError: expected float"


def test_a_finished_component_leaves_no_keras_state_for_the_next_one():
    """Between components the local runner clears what Keras keeps globally (layer names count up until then)."""
    from cli import prologue

    prologue.prepare()
    import tf_keras

    def next_layer_name():
        return tf_keras.layers.Dense(1).name

    for release, expected in ((False, "dense_1"), (True, "dense")):
        tf_keras.backend.clear_session()
        handler = ProgressHandler(io.StringIO(), total=1, release_memory=release)
        _log(handler, "Component %s is running.", "Trainer")
        next_layer_name()  # the component's model
        _log(handler, "Component %s is finished.", "Trainer")
        assert next_layer_name() == expected
