"""Statistics of text columns: TFDV's natural-language statistics of their tokens, for `validate`, skew and drift.

A text column's whole strings say little: nearly every title is new, so their
distribution always "drifts". What a model sees is its tokens. For every feature the
schema gives a natural-language domain (`init` writes one for each text column),
the rows get a derived feature `<name>__tokens` holding the column's words (the
tokenizer of contract/text.py, the Transform graph's), and TFDV computes its
statistics with its natural-language generator: tokens per row (sequence length
histogram), token lengths, the token rank histogram, plus the string statistics of
the tokens. Skew and drift then compare token distributions: the text feature's
`skew_comparator`/`drift_comparator` (infinity norm) applies to its tokens, and the
vocabulary coverage (the share of the current data's tokens that the control data
has) is checked against the domain's `coverage.min_coverage` when the schema sets it.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from contract.text import tokens

TOKENS_SUFFIX = "__tokens"
# Distinct tokens TFDV ranks per feature: the coverage is measured over them (exact below this many).
RANKED_TOKENS = 10_000


def text_features(schema: Optional[schema_pb2.Schema]) -> List[str]:
    """Features the schema gives a natural-language domain."""
    if schema is None:
        return []
    return [f.name for f in schema.feature if f.WhichOneof("domain_info") == "natural_language_domain"]


def tokens_name(name: str) -> str:
    return name + TOKENS_SUFFIX


def with_tokens(batch, names: Sequence[str]):
    """An Arrow record batch (tfx_bsl's decoding of tf.Examples) with a `<name>__tokens` column per text column."""
    import pyarrow as pa

    arrays, fields = list(batch.columns), list(batch.schema.names)
    for name in names:
        if name not in fields:
            continue
        rows = []
        for values in batch.column(fields.index(name)).to_pylist():
            text = values[0] if values else None
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            rows.append(None if text is None else [t.encode("utf-8") for t in tokens(text)])
        arrays.append(pa.array(rows, pa.large_list(pa.large_binary())))
        fields.append(tokens_name(name))
    return pa.RecordBatch.from_arrays(arrays, fields)


def token_schema(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """The schema as comparisons and statistics read it: each text feature's comparators move to its tokens
    feature (which has the natural-language domain); the text feature itself keeps its type and presence."""
    derived = copy.deepcopy(schema)
    for feature in list(derived.feature):
        if feature.WhichOneof("domain_info") != "natural_language_domain":
            continue
        added = derived.feature.add(name=tokens_name(feature.name), type=schema_pb2.BYTES)
        added.natural_language_domain.CopyFrom(feature.natural_language_domain)
        added.natural_language_domain.ClearField("coverage")
        # TFDV computes natural-language statistics only for a domain naming a vocabulary or tokens to exclude or
        # count as OOV. No token is empty (contract/text.py drops them): this one turns them on and counts nothing.
        added.natural_language_domain.coverage.oov_string_tokens.append("")
        added.not_in_environment.extend(feature.not_in_environment)
        for comparator in ("skew_comparator", "drift_comparator"):
            if feature.HasField(comparator):
                getattr(added, comparator).CopyFrom(getattr(feature, comparator))
                feature.ClearField(comparator)
        feature.ClearField("natural_language_domain")
    return derived


def _token_counts(statistics: statistics_pb2.DatasetFeatureStatisticsList, name: str) -> Dict[str, float]:
    """Token -> occurrences, from the tokens feature's rank histogram (its RANKED_TOKENS most frequent)."""
    for feature in statistics.datasets[0].features:
        if feature.path.step and feature.path.step[-1] == tokens_name(name) and feature.HasField("string_stats"):
            return {b.label: b.sample_count for b in feature.string_stats.rank_histogram.buckets}
    return {}


def coverage(newer: statistics_pb2.DatasetFeatureStatisticsList,
             known: statistics_pb2.DatasetFeatureStatisticsList, name: str) -> Optional[float]:
    """Share of the newer data's token occurrences whose token the known data has (None without tokens)."""
    seen, now = _token_counts(known, name), _token_counts(newer, name)
    total = sum(now.values())
    if not total:
        return None
    return sum(count for token, count in now.items() if token in seen) / total


def summary(statistics: statistics_pb2.DatasetFeatureStatisticsList, name: str) -> str:
    """One line of a text column's token statistics: tokens per row, token length, distinct tokens."""
    for feature in statistics.datasets[0].features:
        if feature.path.step and feature.path.step[-1] == tokens_name(name):
            common = feature.string_stats.common_stats
            per_row = common.avg_num_values
            return (f"{name}: {per_row:.1f} tokens per row ({common.min_num_values}-{common.max_num_values}), mean "
                    f"token length {feature.string_stats.avg_length:.1f}, {feature.string_stats.unique} distinct "
                    "tokens")
    return f"{name}: no tokens"
