"""Data validation that stops bad data before training.

`files` checks that input files are readable tf.Example TFRecords (before any
Beam job starts), `checks` validates a batch against the schema with TFDV and
measures skew and drift, `report` turns the results into the text and HTML
report the gate, the runner and the `validate` command all show, and `spans`
lays data out as time spans. The pipeline step is `components/anomaly_gate.py`.
"""
