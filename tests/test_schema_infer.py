"""`infer-schema` on a new dataset: a usable starting schema, or a clear error."""

import os

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from cli import schema as schema_cli
from tests.samples import read_examples, write_examples


@pytest.fixture(scope="module")
def plain_records(tmp_path_factory, taxi_root):
    """Uncompressed TFRecords: users' data is often not gzipped."""
    root = tmp_path_factory.mktemp("own_data")
    write_examples(str(root / "part-0.tfrecord"), read_examples(f"{taxi_root}/Split-eval/*", 200), compress=False)
    return str(root)


def test_infers_types_and_serving_environment(plain_records, tmp_path, capsys):
    out = str(tmp_path / "schema.pbtxt")
    assert schema_cli.main(["infer", "--data-root", plain_records, "--out", out, "--label-column", "tips"]) == 0
    schema = tfdv.load_schema_text(out)
    assert tfdv.get_feature(schema, "fare").type == schema_pb2.FLOAT
    assert list(tfdv.get_feature(schema, "tips").not_in_environment) == ["SERVING"]
    assert "wrote " + out in capsys.readouterr().out


def test_reads_the_bundled_gzip_data(taxi_root, tmp_path):
    out = str(tmp_path / "schema.pbtxt")
    assert schema_cli.main(["infer", "--data-root", taxi_root, "--pattern", "Split-eval/*", "--out", out]) == 0
    assert {f.name for f in tfdv.load_schema_text(out).feature} >= {"fare", "tips", "payment_type"}


def test_no_matching_files_names_directory_and_pattern(tmp_path):
    with pytest.raises(SystemExit, match=f"no file matches '\\*.gz' under {tmp_path}"):
        schema_cli.main(["infer", "--data-root", str(tmp_path), "--pattern", "*.gz",
                         "--out", str(tmp_path / "s.pbtxt")])


def test_unknown_label_column_lists_the_columns(plain_records, tmp_path):
    with pytest.raises(SystemExit, match="label column 'tip_amount' is not in the data"):
        schema_cli.main(["infer", "--data-root", plain_records, "--out", str(tmp_path / "s.pbtxt"),
                         "--label-column", "tip_amount"])
    assert not os.path.exists(tmp_path / "s.pbtxt")
