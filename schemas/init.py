"""`init`: a directory of data files to a working config.yaml and schema.pbtxt in one command.

    tfx-edge schema init --data-root DIR --label COLUMN --out DIR [--task auto|binary|multiclass|regression]
                         [--name NAME] [--pattern GLOB] [--window N]

Reads the data once (up to MAX_ROWS rows per split), then guesses, and says why in comments:
- the format from the files' content (formats/): tf.Example TFRecords, Parquet, CSV;
- the split: train/eval directories that already exist (Split-train/Split-eval,
  train/eval, train/test, train/validation), else a 4:1 hash split of every file;
  Hive-style date partitions (`date=2024-03-01/`) become spans (`date={YYYY}-{MM}-{DD}`)
  and the run trains on a window of the latest of them (`--window`, default every
  partition found up to MAX_WINDOW);
- the task from the label: strings or integers with a few values are classes
  (two: binary, more: multiclass, their values the class names), other numbers regression;
- feature roles from the values: strings whose values are mostly several words and rarely
  recur whole -> text; other strings -> categorical; integers with at most CATEGORICAL_INTEGERS
  distinct values -> categorical (codes, not amounts); other numbers -> numeric; lists of
  strings or integers -> category_sets; excluded: an id (a distinct value in every row),
  a constant, a column present in under MIN_PRESENCE of rows, a list of floats;
- blessing thresholds a useful model must meet (beat the majority class, or
  predicting the mean).
The schema is TFDV's inferred one (types, presence, shapes, string domains) with
TRAINING and SERVING environments: the label only in TRAINING; a Parquet column
declared nullable, and in date partitions a column missing from some rows, is
optional there (a partition may lack it altogether); a text column has a
natural-language domain (validation compares its token statistics, not its strings).
Curate both files; `make run ARGS="--config DIR/config.yaml"` runs them as written.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import yaml

import formats
from contract import tasks
from contract.config import AUTO_MIN_VALIDATION_ROWS, ROLES, TrainingConfig
from contract.errors import ConfigError
from schemas.infer import SERVING, TRAINING
from schemas.profile import ColumnProfile, DataProfile, kind_conflict, merged

MAX_ROWS = 200_000  # rows read per split; enough to guess roles and infer a schema
CATEGORICAL_INTEGERS = 20  # integer columns with at most this many distinct values are codes
MAX_CLASSES = 50  # a label with more distinct values than this is not a set of classes
MIN_PRESENCE = 0.05
# A string column is text when at least TEXT_MULTI_WORD of its values hold several words and its values rarely
# repeat whole: more than TEXT_MIN_DISTINCT distinct values, and at least TEXT_DISTINCT_SHARE of its rows (or
# more distinct values than the profile counts). "Credit Card" among six payment types, or 61 taxi company names
# over 15,000 trips, stay categories: each whole value recurs, it is a name, not a sentence.
TEXT_MULTI_WORD = 0.5
TEXT_MIN_DISTINCT = 30
TEXT_DISTINCT_SHARE = 0.05
# Date partitions a window takes by default: each one a run has not ingested yet costs an ExampleGen run first.
MAX_WINDOW = 30
# Hive-style date partition directories: `date=2024-03-01` (any key).
DATE_PARTITION = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<date>\d{4}-\d{2}-\d{2})$")
# Directory pairs that already split a dataset: (train, eval).
SPLIT_LAYOUTS = (("Split-train", "Split-eval"), ("train", "eval"), ("train", "test"), ("train", "validation"),
                 ("train", "valid"))
HASH_BUCKETS = (4, 1)
CONFIG_FILE, SCHEMA_FILE = "config.yaml", "schema.pbtxt"
KIND_NAMES = {"string": "strings", "int": "integers", "float": "floats"}
# Directory names that say nothing about the dataset, skipped when naming the pipeline.
GENERIC_DIRECTORIES = {"data", "tfrecords", "tfrecord", "records", "input", "inputs", "raw", "examples"}


@dataclass
class Layout:
    """How the files split: `patterns` split name -> glob relative to the data root; `why` for the comment.

    `partitions`: the date partitions (directory names, oldest first) when the patterns name dates.
    """

    patterns: Dict[str, str]
    files: Dict[str, List[str]]
    why: str
    partitions: List[str] = field(default_factory=list)

    @property
    def hashed(self) -> bool:
        return list(self.patterns) == ["all"]

    def units(self, split: str) -> List[List[str]]:
        """The split's files in the groups ExampleGen converts together: per partition directory."""
        groups: Dict[str, List[str]] = {}
        for path in self.files[split]:
            groups.setdefault(os.path.dirname(path), []).append(path)
        return [groups[d] for d in sorted(groups)]


@dataclass
class Guess:
    task: str
    why: str
    classes: List[str] = field(default_factory=list)
    threshold: Optional[float] = None
    roles: Dict[str, List[Tuple[str, str]]] = field(default_factory=lambda: {
        **{role: [] for role in ROLES}, "excluded": []})


def _files_under(root: str, pattern: str) -> List[str]:
    import glob

    return sorted(f for f in glob.glob(os.path.join(root, pattern)) if os.path.isfile(f)
                  and not os.path.basename(f).startswith((".", "_")))


def date_layout(data_root: str) -> Optional[Layout]:
    """Hive-style date partitions (`date=2024-03-01/`) at the top of `data_root` as spans, or None."""
    entries = [e for e in sorted(os.listdir(data_root)) if not e.startswith((".", "_"))]
    matches = [DATE_PARTITION.match(e) for e in entries]
    if not entries or not all(matches) or not all(os.path.isdir(os.path.join(data_root, e)) for e in entries):
        return None
    keys = {m.group("key") for m in matches}
    if len(keys) > 1:
        raise ConfigError(f"{data_root} holds date partitions of several keys ({', '.join(sorted(keys))}); pass the "
                          "directory of one of them, or --pattern")
    spec = f"{keys.pop()}={{YYYY}}-{{MM}}-{{DD}}"
    dates = [m.group("date") for m in matches]
    described = f"{len(entries)} date partitions ({dates[0]} to {dates[-1]}), each date a span"
    for train, evaluation in SPLIT_LAYOUTS:
        if all(_files_under(data_root, f"{e}/{train}/*") and _files_under(data_root, f"{e}/{evaluation}/*")
               for e in entries):
            return Layout({"train": f"{spec}/{train}/*", "eval": f"{spec}/{evaluation}/*"},
                          {"train": _files_under(data_root, f"*/{train}/*"),
                           "eval": _files_under(data_root, f"*/{evaluation}/*")},
                          f"{described}, already split into {train}/ and {evaluation}/", entries)
    return Layout({"all": f"{spec}/*"}, {"all": _files_under(data_root, "*/*")},
                  f"{described}; no train/eval directories: each span hash-split "
                  f"{HASH_BUCKETS[0]}:{HASH_BUCKETS[1]} into train and eval", entries)


def find_layout(data_root: str, pattern: str = "") -> Layout:
    """The split the data already has (date partitions as spans), or every file (matching `pattern`) to hash-split."""
    if not os.path.isdir(data_root):
        raise ConfigError(f"--data-root {data_root} is not a directory; pass the directory that holds the data files")
    if not pattern:
        dated = date_layout(data_root)
        if dated is not None:
            return dated
        for train, evaluation in SPLIT_LAYOUTS:
            train_files, eval_files = _files_under(data_root, f"{train}/*"), _files_under(data_root, f"{evaluation}/*")
            if train_files and eval_files:
                return Layout({"train": f"{train}/*", "eval": f"{evaluation}/*"},
                              {"train": train_files, "eval": eval_files},
                              f"the data is already split into {train}/ and {evaluation}/")
        found = _recursive_files(data_root)
        if not found:
            raise ConfigError(f"{data_root} holds no file; pass the directory that holds the data files")
        depths = {os.path.relpath(f, data_root).count(os.sep) for f in found}
        if len(depths) > 1:
            raise ConfigError(f"{data_root} holds files at different depths; pass --pattern (e.g. '*/*.tfrecord') "
                              "to say which files are the data")
        pattern = "/".join(["*"] * (depths.pop() + 1))
    files = _files_under(data_root, pattern)
    if not files:
        raise ConfigError(f"no file matches {pattern!r} under {data_root}; pass --pattern (e.g. '*.tfrecord')")
    return Layout({"all": pattern}, {"all": files},
                  "one set of files, no train/eval directories: hash-split "
                  f"{HASH_BUCKETS[0]}:{HASH_BUCKETS[1]} into train and eval")


def _recursive_files(root: str) -> List[str]:
    found = []
    for directory, _, names in os.walk(root):
        found += [os.path.join(directory, n) for n in names if not n.startswith((".", "_"))]
    return found


def read_split(units: List[List[str]], data_format: formats.DataFormat) -> Tuple[DataProfile, List[bytes]]:
    """Profile and serialized tf.Examples of (the first MAX_ROWS rows of) one split, converted as its ExampleGen
    converts them; `units` are the groups of files converted together (CSV types are inferred per group)."""
    profile, records = DataProfile(), []
    for files in units:
        for path, rows in data_format.checked_examples(files):
            rows = rows[:MAX_ROWS - len(records)]
            profile.add(rows, path)
            records += rows
            if len(records) >= MAX_ROWS:
                return profile, records
    return profile, records


def _reading_error(message: str) -> str:
    """What TensorFlow's reader says went wrong, without its op and device names: `corrupted record at 0`."""
    text = re.sub(r"\{\{[^}]*\}\}", "", (message.strip().splitlines() or [""])[0])
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).replace("(Is this even a TFRecord file?)", "")
    return text.strip().rstrip(".") or "unreadable records"


def _values(column: ColumnProfile, limit: int = 6) -> str:
    ordered = sorted(column.counts, key=_natural)
    shown = ", ".join(ordered[:limit])
    return shown + (", ..." if len(ordered) > limit else "")


def _natural(value: str):
    """Integers in numeric order, then text alphabetically."""
    return (0, int(value), "") if re.fullmatch(r"-?\d+", value) else (1, 0, value)


def guess_task(label: ColumnProfile, rows: int, task: str = "auto") -> Guess:
    """The task and the label's classes (or threshold), with the reason."""
    if label.present == 0:
        raise ConfigError(f"label column {label.name!r} has no value in any row")
    if label.distinct == 1:
        raise ConfigError(f"label column {label.name!r} has the value {next(iter(label.counts))!r} in every row: "
                          "nothing to learn; pick the column that holds what the model should predict")
    kind, distinct = label.kind, label.distinct
    described = f"label {label.name!r}: {KIND_NAMES[kind]} with " + (
        f"{distinct} distinct values ({_values(label)})" if distinct <= MAX_CLASSES else "many distinct values")
    if task == "auto":
        if kind == "string" or (kind == "int" and distinct <= CATEGORICAL_INTEGERS) or distinct == 2:
            task = "binary" if distinct == 2 else "multiclass"
        else:
            task = "regression"
        why = f"guessed from the {described}"
    else:
        why = f"chosen with --task; {described}"
    chosen = tasks.task(task)
    setting, problem = chosen.label_kind_problem(kind, threshold_rule=kind == "float")
    if setting:
        raise ConfigError(f"--task {task}: label column {label.name!r} {problem}")
    if not chosen.is_classification:
        return Guess(task, why)
    if distinct > MAX_CLASSES:
        raise ConfigError(f"label column {label.name!r} has more than {MAX_CLASSES} distinct values: too many to be "
                          "classes; use --task regression if it is a number")
    if kind == "float":
        if distinct > 2:
            raise ConfigError(f"--task {task}: label column {label.name!r} holds {distinct} float values; "
                              "write a 0/1 (or two-valued) label upstream, or use --task regression")
        low, high = sorted(float(v) for v in label.counts)
        return Guess(task, why, threshold=(low + high) / 2)
    classes = sorted(label.counts, key=_natural)
    if chosen.class_names_problem(classes):
        raise ConfigError(f"--task {task}: label column {label.name!r} has {len(classes)} values "
                          f"({_values(label)}); {chosen.class_names_problem(classes)}")
    if chosen.has_positive_class and kind == "string":
        # The rarer value is the event a binary classifier scores (churned, fraud, malignant).
        classes.sort(key=lambda v: (-label.counts[v], v))
    return Guess(task, why, classes=classes)


def guess_role(column: ColumnProfile, rows: int) -> Tuple[str, str]:
    """(role, why) for one input column; role "excluded" when the model should not read it."""
    share = column.present / rows if rows else 0.0
    if column.max_values > 1:
        if column.kind in ("string", "int"):
            return "category_sets", (f"lists of up to {column.max_values} {KIND_NAMES[column.kind]} per row: a set "
                                     "of categories, multi-hot over its most frequent values")
        return "excluded", (f"a list of up to {column.max_values} floats per row, and no role takes a list of "
                            "numbers: reduce it upstream (a mean, a count) to one value, then give it a role")
    if share < MIN_PRESENCE:
        return "excluded", f"present in {share:.1%} of rows"
    if column.distinct == 1:
        return "excluded", f"constant: {next(iter(column.counts))!r} in every row"
    id_like = column.present >= 20 and column.distinct >= 0.95 * column.present
    missing = f", missing in {1 - share:.0%} of rows" if share < 1 else ""
    if column.kind == "string":
        several = column.multi_word / column.present if column.present else 0.0
        varied = column.many or column.distinct >= max(TEXT_MIN_DISTINCT, TEXT_DISTINCT_SHARE * column.present)
        if several >= TEXT_MULTI_WORD and varied:
            distinct = "more than 1000" if column.many else str(column.distinct)
            return "text", (f"strings, {distinct} distinct values, {several:.0%} of them several words (mean "
                            f"{column.words / column.present:.1f}): free text, tokenized into words{missing}")
        if id_like:
            return "excluded", "strings, a distinct value in (almost) every row: an id, nothing that generalises"
        return "categorical", f"strings, {column.distinct} distinct values{missing}" + (
            f"; {several:.0%} of them several words, but each whole value recurs (in "
            f"{column.present / column.distinct:.0f} rows on average): names, not free text"
            if several >= TEXT_MULTI_WORD else "")
    if column.kind == "int":
        if id_like and column.distinct == column.present:
            return "excluded", "integers, a distinct value in every row: an id, nothing that generalises"
        if column.distinct <= CATEGORICAL_INTEGERS:
            return "categorical", f"integers with {column.distinct} distinct values: codes, not amounts{missing}"
        return "numeric", (f"integers with {'many' if column.many else column.distinct} distinct values, "
                           f"{column.low:g} to {column.high:g}{missing}")
    return "numeric", f"floats, {column.low:.4g} to {column.high:.4g}{missing}"


def infer(records: List[bytes], label: str):
    """TFDV's schema of the records, with TRAINING/SERVING environments and the label only in TRAINING."""
    import tensorflow_data_validation as tfdv
    from tensorflow_data_validation.statistics import stats_impl
    from tfx_bsl.coders import example_coder

    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)
    schema = tfdv.infer_schema(stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions()))
    schema.default_environment.extend([TRAINING, SERVING])
    tfdv.get_feature(schema, label).not_in_environment.append(SERVING)
    return schema


def _yaml(value) -> str:
    """A value in YAML flow style, quoted only where YAML needs it."""
    if isinstance(value, list):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return yaml.safe_dump([value], default_flow_style=True, width=10_000).strip()[1:-1]


def _majority_share(label: ColumnProfile) -> float:
    return max(label.counts.values()) / label.present


def choose_family(train_rows: int) -> Tuple[str, str]:
    """(training.model, why) for a train split of `train_rows` rows.

    `auto` whenever it can hold out enough rows to choose: it trains dnn, linear and
    gbdt and keeps the best on held-out training data, which on the datasets measured
    (docs/model-families.md) was never worse than the best single family beyond noise,
    and each family wins somewhere (linear on mostly-linear data, gbdt on interactions).
    Below that, `linear`: on a few dozen rows a regularized linear model has the fewest
    parameters to overfit.
    """
    share = TrainingConfig.auto_validation_share
    held_out = int(train_rows * share)
    if held_out >= AUTO_MIN_VALIDATION_ROWS:
        return "auto", (f"{train_rows} training rows: dnn, linear and gbdt are each trained and the best on "
                        f"{held_out} of them held out is kept (training.auto_validation_share {share:g})")
    return "linear", (f"only {train_rows} training rows, too few for auto to hold out "
                      f"{AUTO_MIN_VALIDATION_ROWS} to choose a family by: a regularized linear model overfits least")


def config_text(name: str, data_root: str, out: str, layout: Layout, rows: int, label: ColumnProfile,
                guess: Guess, slices: List[str], family: Tuple[str, str], data_format: str, format_why: str,
                window: int) -> str:
    """config.yaml with a comment on every guess."""
    lines = [f"# Written by `tfx-edge schema init` from {rows} rows under {data_root} "
             f"({time.strftime('%Y-%m-%d')}).",
             "# Each guess says why; edit what is wrong (pipeline/configs/default.yaml lists every setting), then:",
             f"#   make run ARGS=\"--config {os.path.join(out, CONFIG_FILE)}\"",
             f"pipeline_name: {_yaml(name)}",
             f"model_name: {_yaml(name)}",
             f"output_dir: {_yaml(os.path.join(out, 'outputs'))}   # runs, models and ML Metadata of this dataset, "
             "apart from any other",
             f"schema_file: {_yaml(os.path.join(out, SCHEMA_FILE))}   # inferred by init; curate it (domains, "
             "presence)",
             "data:",
             f"  input_base: {_yaml(data_root)}",
             f"  format: {data_format}   # {format_why}"]
    if layout.hashed:
        lines += [f"  pattern: {_yaml(layout.patterns['all'])}   # {layout.why}",
                  f"  hash_buckets: {_yaml(list(HASH_BUCKETS))}"]
    else:
        lines += [f"  train_pattern: {_yaml(layout.patterns['train'])}   # {layout.why}",
                  f"  eval_pattern: {_yaml(layout.patterns['eval'])}"]
    if layout.partitions:
        lines.append(f"  span_window: {window}   # train on the latest {window} of the {len(layout.partitions)} date "
                     "partitions found; a run first ingests those no run ingested yet")
    lines += ["features:", f"  task: {guess.task}   # {guess.why}", f"  label_column: {_yaml(label.name)}"]
    if guess.threshold is not None:
        lines.append(f"  label_threshold: {guess.threshold:g}   # positive above the midpoint of its two values")
    if guess.classes:
        meaning = ("the second is the positive class" + (" (the rarer value)" if label.kind == "string" else "")
                   if tasks.task(guess.task).has_positive_class else "the class names every output carries")
        lines.append(f"  classes: {_yaml(guess.classes)}   # class ids in this order; {meaning}")
    else:
        lines.append("  classes: []")
    lines.append('  label_relative_to: ""')
    for role in ROLES:
        entries = guess.roles[role]
        if not entries:
            lines.append(f"  {role}: []")
            continue
        lines.append(f"  {role}:")
        lines += [f"    - {_yaml(column)}   # {why}" for column, why in entries]
    if guess.roles["excluded"]:
        lines.append("  # excluded (give one a role above to use it):")
        lines += [f"  #   {column}: {why}" for column, why in guess.roles["excluded"]]
    lines += ["training:", f"  model: {family[0]}   # {family[1]}"]
    lines.append("evaluator:   # blessing thresholds on the eval split; raise them once you know what good is")
    share = math.floor(_majority_share(label) * 100) / 100 if label.counts else 0.0
    lines += [f"  {setting}: {value:g}   # {why}"
              for setting, value, why in tasks.task(guess.task).init_thresholds(label.std, share)]
    lines.append(f"  slice_features: {_yaml(slices)}" + (
        "   # metrics per value of this categorical feature, reported (not gated)" if slices else ""))
    lines += ["validation:", "  allow_anomalies: []   # anomalies in the data stop the run; tolerate one as "
                             "\"feature:ANOMALY_TYPE\""]
    return "\n".join(lines) + "\n"


def initialise(data_root: str, label_name: str, out: str, task: str = "auto", name: str = "",
               pattern: str = "", window: int = 0) -> Dict[str, object]:
    """Reads the data, guesses, writes `out/config.yaml` and `out/schema.pbtxt`; returns what it found."""
    import tensorflow_data_validation as tfdv

    data_root, out = os.path.abspath(data_root), os.path.abspath(out)
    layout = find_layout(data_root, pattern)
    data_format = formats.detect([f for files in layout.files.values() for f in files])
    split_profiles, records = {}, []
    for split in layout.files:
        split_profiles[split], split_records = read_split(layout.units(split), data_format)
        records += split_records
    profile = merged(split_profiles.values())
    for column in profile.columns.values():
        conflict = kind_conflict(column)
        if conflict:
            raise ConfigError(f"column {column.name!r} has {conflict[0]} values in {conflict[1]} but {conflict[2]} "
                              f"values in {conflict[3]}; a column needs one type in every file: fix the producer"
                              + (f" ({data_format.type_hint})" if data_format.type_hint else ""))
    label = profile.column(label_name)
    if label is None:
        raise ConfigError(f"label column {label_name!r} is in none of the {profile.rows} rows under {data_root}; "
                          f"columns there: {', '.join(sorted(profile.columns))}")
    guess = guess_task(label, profile.rows, task)
    for column in sorted(profile.columns.values(), key=lambda c: c.name):
        if column.name != label_name:
            role, why = guess_role(column, profile.rows)
            guess.roles[role].append((column.name, why))
    if not any(guess.roles[r] for r in ROLES):
        raise ConfigError(f"no column under {data_root} can be a feature: " +
                          "; ".join(f"{c} ({why})" for c, why in guess.roles["excluded"]))
    categorical = [profile.columns[c] for c, _ in guess.roles["categorical"]]
    small = sorted((c for c in categorical if 2 <= c.distinct <= 10), key=lambda c: (c.distinct, c.name))
    slices = [small[0].name] if small else []
    window = min(window or MAX_WINDOW, len(layout.partitions))

    name = name or default_name(data_root)
    schema = infer(records, label_name)
    optional = nullable_columns(data_format, [f for files in layout.files.values() for f in files])
    if layout.partitions:  # one span may lack what the whole sample has in a few rows
        optional |= {c.name for c in profile.columns.values() if c.present < profile.rows}
    make_optional(schema, optional)
    mark_text(schema, [c for c, _ in guess.roles["text"]])
    os.makedirs(out, exist_ok=True)
    schema_path, config_path = os.path.join(out, SCHEMA_FILE), os.path.join(out, CONFIG_FILE)
    header = (f"# Inferred by `tfx-edge schema init` from {profile.rows} rows under {data_root}: what the data had,\n"
              "# not yet what you accept. Curate it: domains, presence, value ranges; skew/drift thresholds\n"
              "# (skew_comparator, drift_comparator) per feature. The label exists only in the TRAINING environment.\n")
    schema_text = header + _schema_text(schema, tfdv)
    train_rows = (profile.rows * HASH_BUCKETS[0] // sum(HASH_BUCKETS) if layout.hashed
                  else split_profiles["train"].rows)
    family = choose_family(train_rows)
    format_why = FORMAT_WHY[data_format.name]
    text = config_text(name, data_root, out, layout, profile.rows, label, guess, slices, family, data_format.name,
                       format_why, window)
    # Whole files or none: written beside, then renamed.
    for path, content in ((schema_path, schema_text), (config_path, text)):
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(content)
    for path in (schema_path, config_path):
        os.replace(path + ".tmp", path)
    return {"rows": profile.rows, "files": sum(len(f) for f in layout.files.values()), "layout": layout,
            "guess": guess, "label": label, "schema": schema_path, "config": config_path, "slices": slices,
            "features": len(schema.feature), "family": family, "format": data_format.name, "format_why": format_why,
            "optional": sorted(optional & {f.name for f in schema.feature}), "window": window}


# How `init` tells each format, for the config comment and its report.
FORMAT_WHY = {"tfrecord": "tf.Example TFRecords: no Parquet magic, no .csv name, the records parse as tf.Examples",
              "parquet": "Parquet: every file starts with the Parquet magic bytes PAR1",
              "csv": "CSV: every file is named .csv; its first line is the header"}


def nullable_columns(data_format: formats.DataFormat, files: List[str]) -> set:
    """Columns a file's own schema declares nullable (Parquet); none for formats without one."""
    found = set()
    if data_format.name == "parquet":
        for path in files:
            found |= {field.name for field in data_format.schema(path) if field.nullable}
    return found


def make_optional(schema, names) -> None:
    """Features that may be absent whatever the sample held (a nullable column may be null in a row, or in every
    row of a partition): no presence constraint, one value when present."""
    for feature in schema.feature:
        if feature.name not in names:
            continue
        feature.ClearField("presence")
        if feature.HasField("shape"):
            size = math.prod(d.size for d in feature.shape.dim)
            feature.ClearField("shape")
            feature.value_count.min, feature.value_count.max = size, size


def mark_text(schema, names) -> None:
    """A natural-language domain for each text column, instead of a domain of its whole strings (a new title is no
    anomaly); validation then compares the column's token statistics (validation/text.py)."""
    dropped = set()
    for feature in schema.feature:
        if feature.name in names:
            if feature.WhichOneof("domain_info") == "domain":
                dropped.add(feature.domain)
            feature.natural_language_domain.SetInParent()
    kept = [d for d in schema.string_domain if d.name not in dropped]
    del schema.string_domain[:]
    schema.string_domain.extend(kept)


def default_name(data_root: str) -> str:
    """The data directory's name (its parent's when it is called data, tfrecords, ...): penguin/data -> penguin."""
    parts = [p for p in data_root.split(os.sep) if p]
    while len(parts) > 1 and parts[-1].lower() in GENERIC_DIRECTORIES:
        parts.pop()
    return re.sub(r"[^A-Za-z0-9_-]+", "-", parts[-1] if parts else "").strip("-") or "model"


def _schema_text(schema, tfdv) -> str:
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".pbtxt") as f:
        tfdv.write_schema_text(schema, f.name)
        return open(f.name, encoding="utf-8").read()


def report(found: Dict[str, object], data_root: str) -> str:
    guess: Guess = found["guess"]  # type: ignore[assignment]
    layout: Layout = found["layout"]  # type: ignore[assignment]
    lines = [f"read {found['rows']} rows from {found['files']} file(s) under {os.path.abspath(data_root)}: "
             f"{layout.why}",
             f"format: {found['format']} ({found['format_why']})"]
    if layout.partitions:
        lines.append(f"window: the latest {found['window']} of {len(layout.partitions)} date partitions "
                     f"(data.span_window; --window N to change it)")
    lines.append(f"task: {guess.task} ({guess.why})")
    if guess.classes:
        lines.append(f"classes: {', '.join(guess.classes)}" +
                     (f" (positive: {guess.classes[1]})" if tasks.task(guess.task).has_positive_class else ""))
    if guess.threshold is not None:
        lines.append(f"label rule: {found['label'].name} > {guess.threshold:g}")  # type: ignore[union-attr]
    for role in ROLES:
        if guess.roles[role]:
            lines.append(f"{role} ({len(guess.roles[role])}): {', '.join(c for c, _ in guess.roles[role])}")
    # Text and categories look alike (strings): say why each text column is one.
    lines += [f"  {column} is text: {why}" for column, why in guess.roles["text"]]
    for column, why in guess.roles["excluded"]:
        lines.append(f"excluded: {column} ({why})")
    if found["slices"]:
        lines.append(f"slices: {', '.join(found['slices'])}")
    family, why = found["family"]  # type: ignore[misc]
    lines.append(f"model family: {family} ({why})")
    if found["optional"]:
        lines.append(f"optional in the schema (nullable in the Parquet schema, or missing from some rows of date "
                     f"partitions): {', '.join(found['optional'])}")
    lines += [f"wrote {found['schema']} ({found['features']} features; TRAINING and SERVING environments, "
              f"{found['label'].name} only in TRAINING)",  # type: ignore[union-attr]
              f"wrote {found['config']}",
              f"next: make run ARGS=\"--config {found['config']}\""]
    return "\n".join(lines)
