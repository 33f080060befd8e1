"""Bad input is named before any component runs: one line per problem, exit status 2, nothing pushed.

The data is the issue's dataset (tests/datasets.py) and its config and schema come from
`tfx-edge schema init`; each test breaks one thing in the data or the settings.
"""

import contextlib
import io
import os

import pytest

from contract.config import load_config
from contract.errors import ConfigError
from pipeline import inputs
from cli import schema as schema_cli
from tests.datasets import example, screening_rows
from tests.samples import write_examples
from validation.files import BadInputError


def _write(root, rows, name="screening.tfrecord"):
    write_examples(os.path.join(str(root), name), [example(r) for r in rows], compress=False)
    return str(root)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """init's config.yaml and schema.pbtxt for a good copy of the data."""
    root = tmp_path_factory.mktemp("inputs")
    data = _write(root / "good", screening_rows(200))
    with contextlib.redirect_stdout(io.StringIO()):
        assert schema_cli.main(["init", "--data-root", data, "--label", "diagnosis", "--out", str(root / "model")]) == 0
    return str(root / "model" / "config.yaml")


def _problems(config_path, data_root, *overrides):
    config = load_config(config_path, [f"data.input_base={data_root}", *overrides])
    with pytest.raises(BadInputError) as raised:
        inputs.check_inputs(config)
    return str(raised.value).splitlines()


def test_the_good_data_passes(written, tmp_path):
    config = load_config(written, [f"output_dir={tmp_path}"])
    assert inputs.check_inputs(config) == {"single_split": 1}


def test_a_passed_check_is_not_repeated_until_a_file_or_setting_changes(written, tmp_path):
    """The quick check: a file rewritten with its size and mtime kept is not read again; any real change is."""
    data = _write(tmp_path / "data", screening_rows(200))
    settings = [f"data.input_base={data}", f"output_dir={tmp_path / 'out'}"]
    assert inputs.check_inputs(load_config(written, settings)) == {"single_split": 1}
    assert os.path.isfile(tmp_path / "out" / "pipeline_root" / inputs.PASSED_RECORD)
    with pytest.raises(ConfigError, match="label column 'outcome'"):  # a setting the check reads
        inputs.check_inputs(load_config(written, settings + ["features.label_column=outcome"]))

    path = os.path.join(data, "screening.tfrecord")
    stat = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"\0" * 16)  # breaks the first record's framing, same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert inputs.check_inputs(load_config(written, settings)) == {"single_split": 1}

    os.utime(path)  # the file "changed" (new mtime): read again, and its broken framing is named
    with pytest.raises(BadInputError, match="screening.tfrecord: not a TFRecord file"):
        inputs.check_inputs(load_config(written, settings))


def test_a_label_column_that_does_not_exist(written, tmp_path):
    problems = _problems(written, _write(tmp_path, screening_rows(200)), "features.label_column=outcome")
    assert "label column 'outcome' is not in the schema" in problems[0]
    assert problems[1].startswith("label column 'outcome' (features.label_column) is in none of the 200 rows under")


def test_a_constant_label(written, tmp_path):
    rows = [dict(r, diagnosis=0) for r in screening_rows(200)]
    assert _problems(written, _write(tmp_path, rows)) == [
        "label column 'diagnosis' has the value '0' in every row: nothing to learn; check features.label_column and "
        "the input files"]


def test_a_role_naming_a_column_that_does_not_exist(written, tmp_path):
    data = _write(tmp_path, screening_rows(200))
    problems = _problems(written, data, "features.categorical=[clinic, colour]")
    assert problems[0].startswith("features.categorical: ['colour'] not in the schema")
    assert problems[1].startswith(f"features.categorical: ['colour'] in no row under {data} (columns there: ")


def test_a_class_with_too_few_rows_to_split(written, tmp_path):
    rows = screening_rows(200)
    positives = [i for i, r in enumerate(rows) if r["diagnosis"] == 1]
    for i in positives[3:]:
        rows[i]["diagnosis"] = 0
    assert _problems(written, _write(tmp_path, rows)) == [
        "class '1' of 'diagnosis' has 3 row(s); at least 10 are needed to split it into train and eval and learn it: "
        "add rows, or merge it into another class (features.classes)"]


def test_a_label_value_that_is_not_a_class(written, tmp_path):
    problems = _problems(written, _write(tmp_path, screening_rows(200)), "features.classes=['0', '2']")
    assert problems[0].startswith("label column 'diagnosis' has values that are not in features.classes ['0', '2']: "
                                  "['1']")


def test_fewer_rows_than_a_split_can_hold(written, tmp_path):
    data = _write(tmp_path, screening_rows(80))
    assert _problems(written, data) == [
        f"80 rows under {data}: too few to split 4:1 into train and eval (data.hash_buckets); at least 100 are needed "
        "(50 to train, 20 to evaluate)"]


def test_a_column_whose_type_changes_between_files(written, tmp_path):
    rows = screening_rows(200)
    _write(tmp_path, rows[:100], "part-0.tfrecord")
    _write(tmp_path, [dict(r, mean_radius=int(r["mean_radius"])) for r in rows[100:]], "part-1.tfrecord")
    problems = _problems(written, str(tmp_path), "data.pattern=part-*")
    assert problems == [f"column 'mean_radius' has float values in {tmp_path}/part-0.tfrecord but int values in "
                        f"{tmp_path}/part-1.tfrecord; a column needs one type in every file: fix the producer, or "
                        "move the odd file out"]


def test_a_list_column_and_strings_in_a_numeric_role(written, tmp_path):
    rows = screening_rows(200)
    rows[7]["mean_area"] = [600.0, 610.0]
    problems = _problems(written, _write(tmp_path, rows), "features.categorical=[]",
                         "features.numeric=[mean_area, clinic]")
    assert any(p.startswith("features.numeric: 'clinic' is BYTES (strings) in the schema") for p in problems)
    assert any(p.startswith("features.numeric: 'clinic' holds strings (first in ") for p in problems)
    assert any(p.startswith("features.numeric: 'mean_area' has up to 2 values in one row (first in ") for p in problems)


def test_the_runner_stops_before_any_component_with_one_line_per_problem(written, tmp_path):
    from runners import local

    rows = [dict(r, diagnosis=1) for r in screening_rows(200)]
    config = load_config(written, [f"data.input_base={_write(tmp_path / 'data', rows)}",
                                   f"output_dir={tmp_path / 'out'}", "features.categorical=[clinic, colour]"])
    out = io.StringIO()
    assert local.run(config, out=out) == 2
    printed = out.getvalue().splitlines()
    errors = [line for line in printed if line.startswith("error: ")]
    assert len(errors) == 3 and len(printed) == 3, printed
    assert errors[-1].startswith("error: label column 'diagnosis' has the value '1' in every row")
    assert not os.path.exists(config.serving_dir) and not os.path.exists(config.metadata_path)
