"""Raw features -> the edge model's inputs, with numpy and the standard library only.

Reproduces the pipeline's Transform (models/preprocessing.py) from the numbers the
Trainer read out of the fitted Transform graph (`edge_mapping.json`, see
models/trainer/edge_signature.py), plus the clip range the edge export calibrated:
- numeric: z = scale * sign(x) * log1p(|x|) + offset, clipped to the calibrated range;
- bucketized, and numeric features' quantile buckets: index of the bucket (number of boundaries <= x);
- categorical: index in the vocabulary, or the OOV id for unseen values;
- text: the words and n-grams of contract/text.py (the rule the Transform graph runs),
  their vocabulary ids (unseen ones in the OOV bucket), and per distinct id its TF-IDF
  weight, float32(float32(count / terms) x idf) as `tft.tfidf` computes it, or 1;
- category sets: 1 at the vocabulary id of each value (unseen values: the OOV id).
Missing values get the same defaults as in Transform, so a device scores an
incomplete record exactly as TF Serving would.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections import Counter
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from contract import text


class FeatureError(ValueError):
    """A raw feature value the model cannot take (not a number, not finite)."""


def _single(value: Any) -> Any:
    """tf.Example-style one-element lists become their element; empty means missing."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _number(feature: str, value: Any) -> float:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FeatureError(f"feature {feature!r}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise FeatureError(f"feature {feature!r}: {value!r} is not a finite number")
    return number


def _float32(x: float) -> float:
    """x as TensorFlow parses it: boundaries are float32, so comparisons must be too."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _category_key(feature: str, raw_type: str, value: Any) -> str:
    """The string Transform looks up: tf.strings.as_string for numbers, the text itself otherwise."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if raw_type == "string":
        return str(value)
    number = _number(feature, value)
    if raw_type == "int":
        if not number.is_integer():
            raise FeatureError(f"feature {feature!r}: {value!r} is not an integer")
        return str(int(number))
    return "%f" % number


class FeatureEncoder:
    """Encodes one raw record (a mapping of feature name -> value) for the edge model."""

    def __init__(self, mapping: Dict[str, Any]):
        self.mapping = mapping
        missing = mapping["missing"]
        clip = mapping.get("clip", {})
        self.numeric: List[Tuple[str, str, float, float, float, float]] = []
        # A missing number takes its raw type's default (an int column's -1, a float column's 0.0), as in Transform.
        self.defaults: Dict[str, float] = {}
        for entry in mapping["numeric"]:
            low, high = clip.get(entry["input"], (-math.inf, math.inf))
            self.numeric.append((entry["feature"], entry["input"], entry["scale"], entry["offset"], low, high))
            self.defaults[entry["feature"]] = float(missing[entry.get("raw_type", "float")])
        # The packed numeric input and the one-hot input; a model without numeric (or one-hot) features has none.
        self.numeric_input = mapping["numeric_input"]
        self.one_hot_input = mapping["one_hot"]["input"]
        self.one_hot_size = mapping["one_hot"]["size"]
        self.bucketized: List[Tuple[str, int, List[float]]] = []
        self.categorical: List[Tuple[str, int, str, Dict[str, int], int, str]] = []
        for entry in mapping["one_hot"]["features"]:
            default = missing[entry["raw_type"]]
            if entry["kind"] == "bucketized":
                self.bucketized.append((entry["feature"], entry["offset"], entry["boundaries"]))
                self.defaults[entry["feature"]] = float(default)
            else:
                vocabulary = {v: i for i, v in enumerate(entry["vocabulary"])}
                self.categorical.append((entry["feature"], entry["offset"], entry["raw_type"], vocabulary,
                                         entry["oov_id"], _category_key(entry["feature"], entry["raw_type"],
                                                                        default)))
        bags = mapping.get("bags", {"input": "", "size": 0, "features": []})
        self.bags_input, self.bags_size = bags["input"], bags["size"]
        self.bags = [dict(entry, index={v: i for i, v in enumerate(entry["vocabulary"])}) for entry in bags["features"]]
        # A numeric feature can also feed a one-hot block (its quantile bucket): each name once.
        self.features = tuple(dict.fromkeys([name for name, *_ in self.numeric] + [
            e["feature"] for e in mapping["one_hot"]["features"]] + [e["feature"] for e in self.bags]))
        self.input_names = tuple(name for name in (self.numeric_input, self.one_hot_input, self.bags_input) if name)

    def encode(self, record: Mapping[str, Any]) -> Tuple[List[float], List[int]]:
        """(numeric z-scores in input order, positions set to 1 in the one-hot input)."""
        numeric = []
        for feature, _, scale, offset, low, high in self.numeric:
            value = _single(record.get(feature))
            x = self.defaults[feature] if value is None or value == "" else _number(feature, value)
            z = scale * math.copysign(math.log1p(abs(x)), x) + offset
            numeric.append(low if z < low else high if z > high else z)
        hot = []
        for feature, offset, boundaries in self.bucketized:
            value = _single(record.get(feature))
            x = self.defaults[feature] if value is None or value == "" else _number(feature, value)
            hot.append(offset + bisect.bisect_right(boundaries, _float32(x)))
        for feature, offset, raw_type, vocabulary, oov_id, missing_key in self.categorical:
            value = _single(record.get(feature))
            key = missing_key if value is None or (value == "" and raw_type != "string") else \
                _category_key(feature, raw_type, value)
            hot.append(offset + vocabulary.get(key, oov_id))
        return numeric, hot

    def bag_ids(self, entry: Dict[str, Any], value: Any) -> List[int]:
        """The vocabulary id of each term of a raw value, in order (text: its n-grams; a set: its values)."""
        index, oov_id = entry["index"], entry["oov_id"]
        if entry["kind"] == "text":
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            if isinstance(value, bytes):
                value = value.decode("utf-8")
            terms = text.terms(value, entry["ngram_range"]) if value is not None else []
        else:
            values = value if isinstance(value, (list, tuple)) else ([] if value is None else [value])
            terms = [_category_key(entry["feature"], entry["raw_type"], v) for v in values]
        return [index.get(term, oov_id) for term in terms]

    def encode_bags(self, record: Mapping[str, Any]) -> List[Tuple[int, float]]:
        """(position in the bags input, weight) of every id a bag block of the record holds."""
        found = []
        for entry in self.bags:
            ids = self.bag_ids(entry, record.get(entry["feature"]))
            if not ids:
                continue
            if entry["weighting"] == "tfidf":
                idf, terms = entry["idf"], len(ids)
                found += [(entry["offset"] + i, _float32(_float32(count / terms) * _float32(idf[i])))
                          for i, count in Counter(ids).items()]
            else:
                found += [(entry["offset"] + i, 1.0) for i in dict.fromkeys(ids)]
        return found

    def unused_and_absent(self, columns: Sequence[str]) -> Tuple[List[str], List[str]]:
        """Input columns the model ignores, and model features the input lacks (both worth a warning)."""
        known = set(self.features)
        return sorted(set(columns) - known), sorted(known - set(columns))
