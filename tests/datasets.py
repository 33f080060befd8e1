"""Datasets this project was not written for: the penguins the tfx wheel ships, and small synthetic tabular sets.

Each synthetic set is what a user brings (`tfx-edge schema init` has never seen it):
- `write_screening`: the issue's dataset, a binary task: 30 float columns and one string
  column present in every row, an int64 0/1 label (or a string label), and an id column
  with a distinct value per row; one plain TFRecord file, no split.
- `write_baskets`: a regression task (basket value): optional columns with missing values,
  an integer column that is really a category, a string column, an id, a list column;
  split into train/ and eval/ directories.
- `write_interactions`: a binary task that trees win (the label is an interaction of two amounts and
  a region); split into train/ and eval/.
- `write_linear`: a regression task linear in its inputs, on few rows (a linear model's home ground);
  one plain file.
The label depends on the features through a known rule plus noise, so a good model exists.
"""

import os
from typing import Dict, List

import numpy as np

from tests.samples import write_examples

MEASUREMENTS = ("radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
                "concave_points", "symmetry", "fractal_dimension")
# Typical size of each measurement, so columns have different scales as real ones do.
SCALES = (14.0, 19.0, 92.0, 650.0, 0.1, 0.1, 0.09, 0.05, 0.18, 0.06)
CLINICS = ("north", "south", "east", "west")
STORES = (101, 102, 103, 104, 105)
CHANNELS = ("web", "app", "shop")
REGIONS = ("harbour", "hills", "plain")


def penguin_root() -> str:
    """The Palmer penguins the tfx wheel ships: 4 float features, int64 species 0/1/2, Split-train/Split-eval."""
    import importlib.util

    tfx_dir = os.path.dirname(importlib.util.find_spec("tfx").origin)
    return os.path.join(tfx_dir, "components", "testdata", "penguin", "data")


def example(values: Dict[str, object]):
    """A tf.Example from plain values: str/bytes -> bytes_list, int -> int64_list, float -> float_list; None: absent."""
    import tensorflow as tf

    feature = {}
    for name, value in values.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        if all(isinstance(v, (bytes, str)) for v in items):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[v.encode() if isinstance(v, str) else v for v in items]))
        elif all(isinstance(v, (int, np.integer)) for v in items):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in items]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in items]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def screening_rows(rows: int = 400, seed: int = 0, string_label: bool = False) -> List[Dict[str, object]]:
    rng = np.random.default_rng(seed)
    clinic_effect = dict(zip(CLINICS, (0.8, -0.4, 0.0, -0.6)))
    out = []
    for i in range(rows):
        severity = rng.normal()
        clinic = CLINICS[rng.integers(len(CLINICS))]
        positive = rng.random() < 1.0 / (1.0 + np.exp(-(6.0 * severity + 2.0 * clinic_effect[clinic])))
        row: Dict[str, object] = {"patient_id": 100_000 + i, "clinic": clinic}
        for j, (name, scale) in enumerate(zip(MEASUREMENTS, SCALES)):
            loading = 0.25 if j < 6 else 0.05  # the first six measurements carry the signal
            for k, column in enumerate((f"mean_{name}", f"{name}_error", f"worst_{name}")):
                row[column] = float(scale * (1.0 + (0.3 + 0.2 * k) * (loading * severity + 0.1 * rng.normal())))
        row["diagnosis"] = ("malignant" if positive else "benign") if string_label else int(positive)
        out.append(row)
    return out


def write_screening(root: str, rows: int = 400, seed: int = 0, string_label: bool = False) -> str:
    """The issue's binary dataset as one plain (not gzip) TFRecord file under `root`."""
    write_examples(os.path.join(root, "screening.tfrecord"),
                   [example(r) for r in screening_rows(rows, seed, string_label)], compress=False)
    return root


def basket_rows(rows: int = 400, seed: int = 1) -> List[Dict[str, object]]:
    rng = np.random.default_rng(seed)
    store_effect = dict(zip(STORES, (0.0, 15.0, -10.0, 30.0, 5.0)))
    channel_effect = {"web": 8.0, "app": 0.0, "shop": -6.0, None: 0.0}
    out = []
    for i in range(rows):
        items = int(rng.integers(1, 31))
        store = STORES[rng.integers(len(STORES))]
        channel = CHANNELS[rng.integers(len(CHANNELS))] if rng.random() > 0.15 else None
        discount = float(rng.uniform(0.0, 0.3)) if rng.random() > 0.2 else None
        age = float(rng.normal(42.0, 12.0))
        value = 12.0 * items * (1.0 - (discount or 0.0)) + store_effect[store] + channel_effect[channel] \
            + 0.3 * (age - 42.0) + rng.normal(0.0, 8.0)
        out.append({"basket_id": f"b{i:06d}", "items": items, "store": store, "channel": channel,
                    "discount": discount, "customer_age": age,
                    "tags": [t for t in ("promo", "gift", "bulk") if rng.random() < 0.3],
                    "basket_value": float(value)})
    return out


def write_baskets(root: str, rows: int = 400, seed: int = 1) -> str:
    """The regression dataset, 80/20 into `train/` and `eval/` gzip TFRecords."""
    examples = [example(r) for r in basket_rows(rows, seed)]
    cut = int(len(examples) * 0.8)
    write_examples(os.path.join(root, "train", "part-0.tfrecord.gz"), examples[:cut])
    write_examples(os.path.join(root, "eval", "part-0.tfrecord.gz"), examples[cut:])
    return root


def interaction_rows(rows: int = 600, seed: int = 2) -> List[Dict[str, object]]:
    """A binary task trees win: whether an amount is above its median decides the label in two regions and
    the opposite in the third (an interaction no additive model can draw: over all regions `left` says little),
    plus 5% flipped labels; `right` and `noise` are noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rows):
        left, right, noise = (float(v) for v in rng.normal(size=3))
        region = REGIONS[rng.integers(len(REGIONS))]
        positive = (left > 0) != (region == "harbour")
        if rng.random() < 0.05:
            positive = not positive
        out.append({"order_id": 500_000 + i, "left": left * 40.0 + 100.0, "right": right * 3.0, "noise": noise,
                    "region": region, "returned": int(positive)})
    return out


def write_interactions(root: str, rows: int = 600, seed: int = 2, unlabelled: int = 0) -> str:
    """The interaction set, 80/20 into `train/` and `eval/` gzip TFRecords; and `unlabelled` more rows without
    their label in `unlabelled/` (for BulkInferrer)."""
    data = interaction_rows(rows + unlabelled, seed)
    examples = [example(r) for r in data[:rows]]
    cut = int(len(examples) * 0.8)
    write_examples(os.path.join(root, "train", "part-0.tfrecord.gz"), examples[:cut])
    write_examples(os.path.join(root, "eval", "part-0.tfrecord.gz"), examples[cut:])
    if unlabelled:
        write_examples(os.path.join(root, "unlabelled", "part-0.tfrecord.gz"),
                       [example({k: v for k, v in r.items() if k != "returned"}) for r in data[rows:]])
    return root


def linear_rows(rows: int = 180, seed: int = 3) -> List[Dict[str, object]]:
    """A regression task that is linear in its inputs (plus noise), on few rows: what a linear model fits best."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(rows):
        size, age, rooms = float(rng.uniform(40, 200)), float(rng.uniform(0, 80)), int(rng.integers(1, 7))
        price = 3.0 * size - 1.5 * age + 20.0 * rooms + float(rng.normal(0.0, 25.0))
        out.append({"flat_id": f"f{i:05d}", "size_m2": size, "age_years": age, "rooms": rooms, "price": price})
    return out


def write_linear(root: str, rows: int = 180, seed: int = 3) -> str:
    """The linear set as one plain TFRecord file (hash-split by the pipeline)."""
    write_examples(os.path.join(root, "flats.tfrecord"), [example(r) for r in linear_rows(rows, seed)],
                   compress=False)
    return root


# Product titles by department: words that say the department, words any title may hold, and words only the eval
# split has (unseen at training: out of vocabulary), in several scripts and with punctuation and emoji.
DEPARTMENTS = {
    "kitchen": ["pan", "kettle", "knife", "café", "espresso", "Küchenmesser", "сковорода", "锅", "whisk", "mug"],
    "outdoor": ["tent", "hiking", "backpack", "Zelt", "палатка", "trail", "canoe", "lantern", "登山", "sleeping bag"],
    "electronics": ["usb-c", "charger", "headphones", "Kopfhörer", "наушники", "laptop", "4K", "monitor", "充电器",
                    "bluetooth"],
}
SHARED_WORDS = ["pro", "set", "deluxe", "black", "2-pack", "new!", "édition", "XL", "👍", "(refurbished)"]
UNSEEN_WORDS = ["zephyr", "ŻÓŁW", "quokka", "🚀", "ünïcödé", "漢字"]
TAGS = ("sale", "gift", "bundle", "eco")


def title_rows(rows: int, seed: int, unseen: bool = False) -> List[Dict[str, object]]:
    """Titles of 2-6 words, mostly from their department's words; `unseen` mixes in words no training row has."""
    rng = np.random.default_rng(seed)
    names = list(DEPARTMENTS)
    out = []
    for i in range(rows):
        department = names[i % len(names)]
        words = []
        for _ in range(int(rng.integers(2, 7))):
            pool = DEPARTMENTS[department] if rng.random() < 0.6 else (
                DEPARTMENTS[names[rng.integers(len(names))]] if rng.random() < 0.3 else SHARED_WORDS)
            words.append(str(pool[rng.integers(len(pool))]))
        if unseen and rng.random() < 0.4:
            words.insert(int(rng.integers(len(words) + 1)), UNSEEN_WORDS[rng.integers(len(UNSEEN_WORDS))])
        separator = [" ", " - ", ", ", " / "][rng.integers(4)]
        title = separator.join(words) if rng.random() < 0.9 else ""
        price = {"kitchen": 30.0, "outdoor": 90.0, "electronics": 60.0}[department] * float(rng.lognormal(0.0, 0.5))
        out.append({"title": title, "price": round(price, 2), "department": department,
                    "tags": [t for t in TAGS if rng.random() < 0.25]})
    return out


def write_titles(root: str, train: int = 450, evaluation: int = 150, seed: int = 3) -> str:
    """The text dataset as Parquet: `train/part-0.parquet` and `eval/part-0.parquet` (eval with unseen words)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, rows in (("train", title_rows(train, seed)), ("eval", title_rows(evaluation, seed + 1, unseen=True))):
        path = os.path.join(root, split, "part-0.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(pa.table({
            "title": pa.array([r["title"] for r in rows], pa.string()),
            "price": pa.array([r["price"] for r in rows], pa.float64()),
            "tags": pa.array([r["tags"] for r in rows], pa.list_(pa.string())),
            "department": pa.array([r["department"] for r in rows], pa.string()),
        }), path)
    return root
