"""Demo tenants from the bundled taxi data: each tenant its own sample (per-tenant jitter), laid out as spans.

    DIR/data/<tenant>/span-N/{train,eval}/data.tfrecord.gz     DIR/fleet.yaml

Families: globex's model is gradient-boosted trees (`training.model: gbdt`), the others the default dnn.
Jitter: each tenant draws its own examples (its own seed) and scales `fare` by its own factor, so tenants'
data and models differ while staying valid against the taxi schema.
"""

import copy
import os
import random
import zlib
from typing import Dict, List

import yaml

from contract.config import bundled_taxi_root
from validation import files as input_files

SPLITS = {"train": "Split-train", "eval": "Split-eval"}
TENANTS = {"acme": 1.0, "globex": 1.15, "initech": 0.9}
# Tenants whose model is of another family than the default (dnn): families side by side in one fleet.
FAMILIES = {"globex": "gbdt"}

FLEET_TEMPLATE = {
    "fleet": {"output_dir": "outputs", "concurrency": 1},
    "defaults": {
        "data_root": "",
        "triggers": ["new_data", "schedule", "drift"],
        "schedule": "0 3 * * 1",
        "settings": {
            "data": {"train_pattern": "span-{SPAN}/train/*", "eval_pattern": "span-{SPAN}/eval/*",
                     "span_window": 2},
            "evaluator": {"min_auc": 0.5, "min_binary_accuracy": 0.5},
        },
    },
    "tiers": {
        # Few examples per span: a small model, trained quickly.
        "small": {"settings": {"training": {"train_steps": 60, "eval_steps": 10, "batch_size": 64},
                               "tuner": {"enabled": False}, "edge": {"enabled": False},
                               "bulk_inference": {"enabled": False}}},
    },
}


def fare_factor(tenant: str) -> float:
    """The demo tenants' own factors; any other name (bench tenants) gets a stable one in [0.85, 1.15)."""
    return TENANTS.get(tenant, 0.85 + (zlib.crc32(tenant.encode()) % 30) / 100)


def _read(split_dir: str) -> List[bytes]:
    records: List[bytes] = []
    for path in input_files.list_files(split_dir, "*"):
        records.extend(input_files.read_examples(path))
    return records


def _jitter(records: List[bytes], factor: float) -> List[bytes]:
    import tensorflow as tf

    out = []
    for record in records:
        example = tf.train.Example.FromString(record)
        fare = example.features.feature["fare"].float_list.value
        if fare:
            fare[0] = fare[0] * factor
        out.append(example.SerializeToString())
    return out


def write_span(root: str, span: int, records: Dict[str, List[bytes]]) -> None:
    import tensorflow as tf

    for split, items in records.items():
        path = os.path.join(root, f"span-{span}", split, "data.tfrecord.gz")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), ".data.tfrecord.gz.tmp")
        with tf.io.TFRecordWriter(tmp, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
            for record in items:
                writer.write(record)
        os.replace(tmp, path)  # the fingerprint never sees a half-written span


_BUNDLED: Dict[str, List[bytes]] = {}


def tenant_span(tenant: str, span: int, train: int, evaluation: int) -> Dict[str, List[bytes]]:
    """Span `span` of `tenant`: its own seeded sample of the bundled data, its fare factor applied."""
    rng = random.Random(f"{tenant}-{span}")
    out = {}
    for split, directory in SPLITS.items():
        if split not in _BUNDLED:
            _BUNDLED[split] = _read(os.path.join(bundled_taxi_root(), directory))
        records = _BUNDLED[split]
        out[split] = _jitter(rng.sample(records, train if split == "train" else evaluation), fare_factor(tenant))
    return out


def lay_out(out: str, tenants: List[str], spans: int = 2, train: int = 400, evaluation: int = 200) -> str:
    """Writes the demo tenants' spans and fleet.yaml under `out`; returns the fleet file's path."""
    fleet = copy.deepcopy(FLEET_TEMPLATE)
    fleet["tenants"] = {}
    for tenant in tenants:
        for span in range(1, spans + 1):
            write_span(os.path.join(out, "data", tenant), span, tenant_span(tenant, span, train, evaluation))
        model = {"data_root": f"data/{tenant}"}
        if tenant in FAMILIES:
            model["settings"] = {"training": {"model": FAMILIES[tenant]}}
        fleet["tenants"][tenant] = {"tier": "small", "models": {"tips": model}}
    path = os.path.join(out, "fleet.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Demo fleet written by `tfx-edge fleet demo`; see README 'A fleet of tenants'.\n")
        yaml.safe_dump(fleet, f, sort_keys=False)
    return path
