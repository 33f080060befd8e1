"""Reading ExampleValidator's anomalies back for the run summary."""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2

from reports.summary import read_anomalies


def test_anomalies_are_listed_per_split_with_feature_and_description(tmp_path):
    anomalies = anomalies_pb2.Anomalies()
    anomalies.anomaly_info["trip_miles"].short_description = "Out-of-range values"
    os.makedirs(tmp_path / "Split-eval")
    os.makedirs(tmp_path / "Split-train")
    (tmp_path / "Split-eval" / "SchemaDiff.pb").write_bytes(anomalies.SerializeToString())
    (tmp_path / "Split-train" / "SchemaDiff.pb").write_bytes(anomalies_pb2.Anomalies().SerializeToString())
    assert read_anomalies(str(tmp_path)) == {"eval": ["trip_miles: Out-of-range values"]}
