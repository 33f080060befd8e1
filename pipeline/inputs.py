"""Where the training data is, and whether it can train the configured model, checked before any component.

Each problem is one line naming the setting, column, file or value and what to
do; all of them are reported at once (exit status 2) and nothing runs, so nothing
is pushed. Checked: every file is readable in `data.format` and its rows convert
as its ExampleGen converts them (`formats/`: a corrupt shard or Parquet file, a CSV
quoting error, a type tf.Example cannot hold); no file lacks a column the model
reads that others have (a CSV header, a Parquet schema); every column the features,
the label rule and the slices name exists, with a type its role can take and one
value per row (several for `category_sets`); no column changes type between files;
the label is present in every row and not constant; every class is among
`features.classes` and has enough rows to split; the splits hold enough rows to
train and evaluate; the model family `training.model` names exists, trains
this task under `training.strategy` and can learn from that many rows (`auto`
needs enough to hold some out).
"""

import dataclasses
import glob
import hashlib
import json
import math
import os
from typing import Dict, List

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

import formats
from contract.config import ROLES, FeaturesConfig, PipelineConfig, class_key, has_span_spec, is_remote
from contract.errors import BadInputError, ConfigError
from contract.files import write_text
from formats import csv_files, parquet
from formats import spans as format_spans
from formats.spans import span_files
from pipeline import window
from pipeline.window import window_spans
from schemas import profile as data_profile
from schemas.profile import DataProfile, kind_conflict, merged
from validation import files as validation_files
from validation.files import check_files

# A class needs this many rows to land in both train and eval and be learnt at all.
MIN_CLASS_EXAMPLES = 10
# Fewer eval rows than this make every metric (and so the blessing) noise; fewer train rows learn nothing.
MIN_EVAL_ROWS = 20
MIN_TRAIN_ROWS = 50
# Roles whose column may hold strings, and may hold several values in a row.
STRING_ROLES = ("categorical", "text", "category_sets")
LIST_ROLES = ("category_sets",)


def check_inputs(config: PipelineConfig) -> dict:
    """Fails early, naming the directory and pattern, when a split would read no file; then checks the data.

    Returns split name -> number of files the run reads. Patterns with `{SPAN}` or
    a date are checked on the spans this run ingests (the window's, `pipeline/window.py`).
    Each file is read once, as the ExampleGen of `data.format` converts it (`formats`;
    CSV types inferred per split of a span, as CsvExampleGen does), so a corrupt or
    foreign file is named here instead of failing inside Beam.
    A check that passed is not repeated while the files (path, size, mtime), the
    settings it reads, the schema and the checking code stay the same
    (`<pipeline_root>/.preflight.json`, the quick check make and rsync use): an
    unchanged re-run would otherwise spend seconds re-reading every shard.
    """
    problems = model_problems(config)
    if problems:
        raise ConfigError("\n".join(problems))
    base = config.input_base
    if is_remote(base):
        # Checked by the ExampleGen where the credentials for the bucket live.
        return {split: -1 for split in config.split_patterns}
    if not os.path.isdir(base):
        raise ConfigError(f"data.input_base {base} is not a directory of data files")
    data_format = formats.get(config.data.format)
    units = split_units(config)
    counts = {split: sum(len(files) for files in split_units_) for split, split_units_ in units.items()}
    key = _check_key(config, {split: [f for files in found for f in files] for split, found in units.items()})
    record = os.path.join(config.pipeline_root, PASSED_RECORD)
    if _passed(record) == key:
        return counts
    profiles = {}
    for split, found in units.items():
        profiles[split] = DataProfile(label_of=label_reader(config.features),
                                      values_of=frozenset(config.features.label_columns))
        for files in found:
            check_files(files, profile=profiles[split], data_format=data_format.name)
    problems = (schema_problems(config) + column_problems(config, data_format, units)
                + data_problems(config, profiles, data_format))
    if problems:
        raise BadInputError("\n".join(problems))
    write_text(record, json.dumps({"key": key}))  # whole or not at all: a torn record never passes
    return counts


def split_units(config: PipelineConfig) -> Dict[str, List[List[str]]]:
    """Split name -> the groups of files its ExampleGen converts together: one per span this run ingests (the
    window's), or all the split's files. Empty files are left out (ExampleGen reads no row from them)."""
    base = config.input_base
    ingesting = set(window_spans(config))
    units: Dict[str, List[List[str]]] = {}
    for split, pattern in config.split_patterns.items():
        if has_span_spec(pattern):
            by_span = span_files(base, pattern)
            found = [by_span[span] for span in sorted(ingesting & set(by_span))]
        else:
            found = [sorted(f for f in glob.glob(os.path.join(base, pattern)) if os.path.isfile(f))]
        if not any(found):
            raise ConfigError(
                f"no file matches {pattern!r} in {base} (split {split!r}); set data.train_pattern/"
                "data.eval_pattern, or data.pattern to hash-split one set of files")
        empty = [f for files in found for f in files if os.path.getsize(f) == 0]
        if len(empty) == sum(len(files) for files in found):
            raise ConfigError(f"every file matching {pattern!r} in {base} is empty: {empty[:3]}")
        units[split] = [[f for f in files if f not in empty] for files in found]
    return units


# Under pipeline_root: the key of the last input check that passed.
PASSED_RECORD = ".preflight.json"
# The code whose verdict the record stands for: a change to any of them re-checks.
_CHECKING_CODE = (__file__, validation_files.__file__, data_profile.__file__, formats.__file__, csv_files.__file__,
                  parquet.__file__, format_spans.__file__, window.__file__)


def _check_key(config: PipelineConfig, split_files: Dict[str, List[str]]) -> str:
    """What the verdict depends on: every file's path, size and mtime; the settings read; the schema; the code."""
    digest = hashlib.sha256()
    settings = {"data": dataclasses.asdict(config.data), "features": dataclasses.asdict(config.features),
                "slice_features": list(config.evaluator.slice_features), "input_base": config.input_base,
                "model": [config.training.model, config.training.auto_validation_share]}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in (config.schema_file,) + _CHECKING_CODE:
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    for split, files in sorted(split_files.items()):
        for path in files:
            stat = os.stat(path)
            digest.update(f"{split}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _passed(record: str) -> str:
    try:
        with open(record, encoding="utf-8") as f:
            return json.load(f).get("key", "")
    except (OSError, ValueError, AttributeError):
        return ""  # never written, or unreadable: check again




def label_reader(spec: FeaturesConfig):
    """tf.Example -> the row's class as the label rule sees it (threshold rule: 0/1; classes: the value's text);
    None for a task without classes."""
    if not spec.is_classification:
        return None

    def first(example, name):
        feature = example.features.feature.get(name)
        kind = feature.WhichOneof("kind") if feature is not None else None
        values = getattr(feature, kind).value if kind else ()
        return values[0] if values else None

    if spec.uses_threshold_rule:
        def rule(example):
            value = first(example, spec.label_column)
            if value is None or isinstance(value, bytes):
                return None
            relative = first(example, spec.label_relative_to) if spec.label_relative_to else None
            return int(spec.label([value], [relative or 0.0] if spec.label_relative_to else None)[0])
        return rule

    def value_of(example):
        value = first(example, spec.label_column)
        return None if value is None else class_key(value)
    return value_of


def schema_problems(config: PipelineConfig) -> List[str]:
    """Columns the features name that the schema lacks, types it gives that a role cannot take, list shapes."""
    with open(config.schema_file, encoding="utf-8") as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    described = {feature.name: feature for feature in schema.feature}
    spec, problems = config.features, []
    for role in ROLES:
        absent = [name for name in getattr(spec, role) if name not in described]
        if absent:
            problems.append(f"features.{role}: {absent} not in the schema {config.schema_file}; add them to it "
                            "(`tfx-edge schema init` writes one from the data) or remove them from the list")
        for name in getattr(spec, role):
            feature = described.get(name)
            if feature is None:
                continue
            if role not in STRING_ROLES and feature.type == schema_pb2.BYTES:
                problems.append(f"features.{role}: {name!r} is BYTES (strings) in the schema {config.schema_file}; "
                                "put it in features.categorical (features.text for free text)")
            if role == "text" and feature.type != schema_pb2.BYTES:
                problems.append(f"features.text: {name!r} is {schema_pb2.FeatureType.Name(feature.type)} in the "
                                f"schema {config.schema_file}; text is a string column: put it in another role")
            sizes = [dim.size for dim in feature.shape.dim]
            if role not in LIST_ROLES and sizes and math.prod(sizes) != 1:
                problems.append(f"features.{role}: {name!r} has shape {sizes} in the schema {config.schema_file}; "
                                "the model takes one value per feature: reduce it upstream or remove it")
    for name in spec.label_columns:
        if name not in described:
            problems.append(f"label column {name!r} is not in the schema {config.schema_file}; add it to the schema")
    return problems


def column_problems(config: PipelineConfig, data_format: formats.DataFormat,
                    units: Dict[str, List[List[str]]]) -> List[str]:
    """Files whose columns (a CSV header, a Parquet schema) lack one the features or the label read, while others
    have it: the rows of that file would silently miss it."""
    files = [f for found in units.values() for group in found for f in group]
    columns = {path: data_format.columns(path) for path in files}
    known = {path: set(names) for path, names in columns.items() if names is not None}
    if not known:
        return []
    needed = config.features.raw_input_features + config.features.label_columns
    problems = []
    for name in needed:
        having = [path for path, names in known.items() if name in names]
        lacking = [path for path, names in known.items() if name not in names]
        if having and lacking:
            problems.append(f"{lacking[0]}: has no column {name!r} (its {data_format.what} columns lack it"
                            f"{f', as do {len(lacking) - 1} other files' if len(lacking) > 1 else ''}), which "
                            f"{having[0]} has and the model reads; re-export the file with every column, or move it "
                            "out of the input directory")
    return problems


def data_problems(config: PipelineConfig, profiles: Dict[str, DataProfile],
                  data_format: formats.DataFormat = formats.get("tfrecord")) -> List[str]:
    """Everything about the rows themselves that would make training fail or meaningless (module docstring)."""
    spec, base = config.features, config.input_base
    everything = merged(profiles.values())
    columns = everything.columns
    present = ", ".join(sorted(columns)) or "none"
    problems = []
    for column in columns.values():
        conflict = kind_conflict(column)
        if conflict:
            kind, path, other, other_path = conflict
            problems.append(f"column {column.name!r} has {kind} values in {path} but {other} values in {other_path}; "
                            "a column needs one type in every file: fix the producer, or move the odd file out"
                            + (f" ({data_format.type_hint})" if data_format.type_hint else ""))
    for role in ROLES:
        absent = [name for name in getattr(spec, role) if name not in columns]
        if absent:
            problems.append(f"features.{role}: {absent} in no row under {base} (columns there: {present})")
        for name in getattr(spec, role):
            column = columns.get(name)
            if column is None:
                continue
            if role not in STRING_ROLES and column.kind == "string":
                problems.append(f"features.{role}: {name!r} holds strings (first in {column.kinds['string']}); "
                                "put it in features.categorical (features.text for free text), or convert it to a "
                                "number upstream")
            if role == "text" and column.kind != "string":
                problems.append(f"features.text: {name!r} holds {column.kind} values (first in "
                                f"{column.kinds[column.kind]}); text is a string column: put it in another role")
            if role == "category_sets" and column.kind == "float":
                problems.append(f"features.category_sets: {name!r} holds floats (first in {column.kinds['float']}); "
                                "a set of categories holds strings or integer codes: reduce the floats upstream (a "
                                "mean, a count) and put the result in features.numeric")
            if column.max_values > 1 and role not in LIST_ROLES:
                problems.append(f"features.{role}: {name!r} has up to {column.max_values} values in one row (first "
                                f"in {column.max_values_file}); the model takes one value per feature here: "
                                + ("put it in features.category_sets (a multi-hot of its values)"
                                   if column.kind in ("string", "int") else
                                   f"keep one (or a count) upstream, or remove it from features.{role}"))
    absent_slices = [name for name in config.evaluator.slice_features if name not in columns]
    if absent_slices:
        problems.append(f"evaluator.slice_features: {absent_slices} in no row under {base} (columns there: {present})")
    return problems + label_problems(config, profiles, everything)


def label_problems(config: PipelineConfig, profiles: Dict[str, DataProfile], everything: DataProfile) -> List[str]:
    spec, base = config.features, config.input_base
    label = everything.column(spec.label_column)
    if label is None:
        return [f"label column {spec.label_column!r} (features.label_column) is in none of the {everything.rows} rows "
                f"under {base}; columns there: {', '.join(sorted(everything.columns)) or 'none'}"]
    problems = []
    if label.present < everything.rows:
        problems.append(f"label column {spec.label_column!r} is missing in {everything.rows - label.present} of "
                        f"{everything.rows} rows (first in {label.first_missing}); drop unlabelled rows upstream")
    if spec.uses_threshold_rule and spec.label_relative_to and spec.label_relative_to not in everything.columns:
        problems.append(f"features.label_relative_to: {spec.label_relative_to!r} in no row under {base}")
    if label.max_values > 1:
        problems.append(f"label column {spec.label_column!r} has up to {label.max_values} values in one row (first in "
                        f"{label.max_values_file}); a label is one value per row")
    setting, why = spec.task_type.label_kind_problem(label.kind, spec.uses_threshold_rule)
    if setting:
        return problems + [f"{setting}: label column {spec.label_column!r} {why}"]
    if label.distinct == 1:
        value = next(iter(label.counts))
        return problems + [f"label column {spec.label_column!r} has the value {value!r} in every row: nothing to "
                           "learn; check features.label_column and the input files"]
    if spec.is_classification:
        problems += class_problems(config, profiles, everything)
    return problems + row_problems(config, profiles)


def class_problems(config: PipelineConfig, profiles: Dict[str, DataProfile], everything: DataProfile) -> List[str]:
    spec = config.features
    counts = {k: v for k, v in everything.label_counts.items() if k is not None}
    if spec.uses_threshold_rule:
        rule = f"{spec.label_column} > {spec.label_threshold}" + (
            f" * {spec.label_relative_to}" if spec.label_relative_to else "")
        if len(counts) == 1:
            return [f"the label rule {rule} (features.label_threshold) makes every row class {next(iter(counts))}: "
                    "nothing to learn; change the threshold"]
        names = {0: "0 (negative)", 1: "1 (positive)"}
    else:
        unknown = sorted(set(counts) - set(spec.class_names))
        if unknown:
            rows = sum(counts[k] for k in unknown)
            return [f"label column {spec.label_column!r} has values that are not in features.classes "
                    f"{spec.class_names}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''} ({rows} rows); add them "
                    "to features.classes or drop those rows upstream"]
        names = {name: repr(name) for name in spec.class_names}
    problems = []
    for value, name in names.items():
        if counts.get(value, 0) < MIN_CLASS_EXAMPLES:
            problems.append(f"class {name} of {spec.label_column!r} has {counts.get(value, 0)} row(s); at least "
                            f"{MIN_CLASS_EXAMPLES} are needed to split it into train and eval and learn it: add rows, "
                            "or merge it into another class (features.classes)")
    train = profiles.get("train")
    if train is not None and not problems and not config.data.pattern and "{" not in config.data.train_pattern:
        missing = [name for value, name in names.items() if not train.label_counts.get(value)]
        if missing:
            problems.append(f"classes {', '.join(missing)} of {spec.label_column!r} have no row in the train split "
                            f"({config.data.train_pattern}); the model cannot learn them")
    return problems


def model_problems(config: PipelineConfig) -> List[str]:
    """The family `training.model` names exists and trains this task under this strategy (one line each)."""
    from models.trainer import families

    try:
        family = families.get(config.training.model)
    except ValueError as error:
        return [str(error)]
    return family.problems(config)


def row_problems(config: PipelineConfig, profiles: Dict[str, DataProfile]) -> List[str]:
    """Enough rows to train and to evaluate, and for the model family (span patterns: left to the spans
    ImportExampleGen picks)."""
    from models.trainer import families

    family = families.get(config.training.model)
    if config.data.pattern:
        if "{" in config.data.pattern:
            return []
        rows = profiles["single_split"].rows
        train, evaluation = config.data.hash_buckets[:2]
        needed = max(math.ceil(MIN_EVAL_ROWS * (train + evaluation) / evaluation),
                     math.ceil(MIN_TRAIN_ROWS * (train + evaluation) / train))
        if rows < needed:
            return [f"{rows} rows under {config.input_base}: too few to split {train}:{evaluation} into train and "
                    f"eval (data.hash_buckets); at least {needed} are needed ({MIN_TRAIN_ROWS} to train, "
                    f"{MIN_EVAL_ROWS} to evaluate)"]
        return family.data_problems(config, rows * train // (train + evaluation))
    problems = []
    for split, least in (("train", MIN_TRAIN_ROWS), ("eval", MIN_EVAL_ROWS)):
        pattern = config.split_patterns[split]
        if "{" not in pattern and profiles[split].rows < least:
            problems.append(f"split {split!r} ({pattern} in {config.input_base}) has {profiles[split].rows} rows; "
                            f"at least {least} are needed")
    if not problems and "{" not in config.split_patterns["train"]:
        problems += family.data_problems(config, profiles["train"].rows)
    return problems
