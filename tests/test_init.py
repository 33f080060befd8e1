"""`tfx-edge schema init` on datasets it has never seen: the guesses it writes, and the data it refuses."""

import contextlib
import io
import os

import pytest
import yaml

from contract.config import load_config
from cli import schema as schema_cli
from schemas import init
from schemas.profile import ColumnProfile, DataProfile
from tests.datasets import example, screening_rows
from tests.samples import write_examples


def _init(data_root, out, *extra):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = schema_cli.main(["init", "--data-root", str(data_root), "--out", str(out), *extra])
    return status, printed.getvalue()


def _rows_to(root, rows, name="part-0.tfrecord.gz"):
    write_examples(os.path.join(str(root), name), [example(r) for r in rows])
    return str(root)


def test_string_label_becomes_binary_with_the_rarer_value_positive(tmp_path):
    data = _rows_to(tmp_path / "data", screening_rows(200, string_label=True))
    status, printed = _init(data, tmp_path / "model", "--label", "diagnosis", "--name", "screening")
    assert status == 0, printed
    config = load_config(str(tmp_path / "model" / "config.yaml"))
    counts = {}
    for row in screening_rows(200, string_label=True):
        counts[row["diagnosis"]] = counts.get(row["diagnosis"], 0) + 1
    rarer = min(counts, key=counts.get)
    assert config.features.task == "binary" and config.features.classes[1] == rarer
    assert config.pipeline_name == "screening" and config.output_dir == str(tmp_path / "model" / "outputs")
    assert f"classes: {', '.join(config.features.classes)} (positive: {rarer})" in printed
    assert "next: make run ARGS=\"--config " in printed


def test_guesses_for_each_kind_of_column():
    rows = 100
    profile = DataProfile(rows=rows)

    def column(name, kind, values, present=rows, max_values=1):
        c = ColumnProfile(name, kinds={kind: "f"}, present=present, max_values=max_values)
        for v in values:
            c.counts[str(v)] += 1
        return c

    assert init.guess_role(column("city", "string", ["a", "b", "c"]), rows)[0] == "categorical"
    assert init.guess_role(column("user", "string", range(100)), rows)[0] == "excluded"
    assert init.guess_role(column("id", "int", range(100)), rows)[0] == "excluded"
    assert init.guess_role(column("store", "int", [1, 2, 3]), rows) == (
        "categorical", "integers with 3 distinct values: codes, not amounts")
    assert init.guess_role(column("items", "int", range(40)), rows)[0] == "numeric"
    assert init.guess_role(column("price", "float", [1.5, 2.5]), rows)[0] == "numeric"
    assert init.guess_role(column("flag", "int", [1]), rows) == ("excluded", "constant: '1' in every row")
    assert init.guess_role(column("rare", "float", [1.0], present=2), rows) == ("excluded", "present in 2.0% of rows")
    assert init.guess_role(column("tags", "string", ["x"], max_values=3), rows)[0] == "category_sets"
    assert init.guess_role(column("scores", "float", [0.5], max_values=3), rows)[0] == "excluded"
    assert profile.rows == rows

    def label(kind, values):
        c = column("y", kind, values)
        c.counts.update({str(v): 10 for v in values})
        return c

    assert init.guess_task(label("int", [0, 1, 2]), rows).task == "multiclass"
    assert init.guess_task(label("int", range(50)), rows).task == "regression"
    assert init.guess_task(label("float", [0.0, 1.0]), rows).threshold == 0.5
    assert init.guess_task(label("int", [10, 2, 1]), rows).classes == ["1", "2", "10"]  # numeric order


@pytest.mark.parametrize("rows, extra, message", [
    ([{"x": 1.0}] * 60, ["--label", "y"], "label column 'y' is in none of the 60 rows under"),
    ([{"x": float(i), "y": 1} for i in range(60)], ["--label", "y"],
     "label column 'y' has the value '1' in every row: nothing to learn"),
    ([{"x": float(i), "y": f"c{i % 3}"} for i in range(60)], ["--label", "y", "--task", "regression"],
     "--task regression: label column 'y' holds strings"),
])
def test_refused_with_one_line_and_nothing_written(tmp_path, capsys, rows, extra, message):
    data = _rows_to(tmp_path / "data", rows)
    status, _ = _init(data, tmp_path / "model", *extra)
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not os.path.exists(tmp_path / "model" / "config.yaml")


def test_a_file_that_is_not_a_tfrecord_is_named_in_one_line_without_tensorflow_internals(tmp_path, capsys):
    """A text export not named .csv is neither Parquet nor CSV, so it is read as TFRecords: one line names it."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "export.txt").write_text("fare,tips\n" + "".join(f"{i}.5,{i % 3}\n" for i in range(200)))
    status, _ = _init(data, tmp_path / "model", "--label", "tips")
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1, err
    assert err == (f"error: {data / 'export.txt'}: not a TFRecord file (it has no valid record framing; truncated "
                   "or another format). Write tf.Example TFRecords (tf.io.TFRecordWriter, optionally gzip) or remove "
                   "the file\n")


def test_files_at_different_depths_need_a_pattern(tmp_path):
    rows = [{"x": float(i), "y": i % 2} for i in range(60)]
    _rows_to(tmp_path / "data", rows[:30])
    _rows_to(tmp_path / "data" / "more", rows[30:])
    with pytest.raises(Exception, match="files at different depths; pass --pattern"):
        init.find_layout(str(tmp_path / "data"))
    layout = init.find_layout(str(tmp_path / "data"), "*.gz")
    assert layout.hashed and len(layout.files["all"]) == 1


def test_written_config_is_valid_yaml_with_a_comment_per_guess(tmp_path):
    data = _rows_to(tmp_path / "data", [{"x": float(i), "code": i % 4, "y": i % 2} for i in range(120)])
    assert _init(data, tmp_path / "model", "--label", "y")[0] == 0
    text = (tmp_path / "model" / "config.yaml").read_text()
    features = yaml.safe_load(text)["features"]
    assert features["categorical"] == ["code"] and features["numeric"] == ["x"]
    assert "- code   # integers with 4 distinct values: codes, not amounts" in text
    assert "min_binary_accuracy: 0.5   # the majority class's share" in text


def test_the_pipeline_is_named_after_the_dataset_not_a_generic_directory():
    assert init.default_name("/srv/penguin/data") == "penguin"
    assert init.default_name("/srv/Orders 2024/tfrecords/") == "Orders-2024"
