"""The text rule without a pipeline: the device's pure-Python tokenizer is the Transform graph's TensorFlow one, and
the edge encoder weighs n-grams as `tft.tfidf` does."""

import numpy as np
import pytest
import tensorflow as tf

from contract import text
from edge.encoder import FeatureEncoder
from models.preprocessing import text_terms

TRICKY = [
    "Café DÉJÀ-VU!! İstanbul", "ΟΔΟΣ straße ẞ", "北京 烤鸭 😀 don't", "x\u0301y e\u0301 ７Ｘ ﬁ ǅ",
    "a\u00a0b\u2003c\td\ne", "  --  ", "", "USB-C (2-pack) 4K/60Hz", "new!new!NEW", "Кофе, чай и сок",
    "naïve café — résumé… «quotes»", "tab\tseparated\tkeywords", "emoji👍inside", "١٢٣ arabic digits ٤٥",
]


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2), (2, 3)])
def test_python_tokenizer_equals_the_transform_graph(ngram_range):
    graph = tf.sparse.to_dense(text_terms(tf.constant(TRICKY), ngram_range), default_value=b"").numpy()
    for row, value in zip(graph, TRICKY):
        assert [t.decode("utf-8") for t in row if t] == text.terms(value, ngram_range), value


def test_tokens_are_lower_cased_words_split_at_everything_else():
    assert text.tokens("USB-C (2-pack) 4K/60Hz") == ["usb", "c", "2", "pack", "4k", "60hz"]
    assert text.tokens("Кофе, чай и сок") == ["кофе", "чай", "и", "сок"]
    assert text.ngrams(["a", "b", "c"], (1, 2)) == ["a", "a b", "b", "b c", "c"]


MAPPING = {
    "missing": {"string": "", "int": -1, "float": 0.0}, "numeric_input": "", "numeric": [],
    "one_hot": {"input": "", "size": 0, "features": []},
    "bags": {"input": "bags", "size": 7, "features": [
        {"feature": "title", "input": "title_xf", "kind": "text", "offset": 0, "size": 4, "raw_type": "string",
         "vocabulary": ["pan", "pro", "pan pro"], "oov_id": 3, "weighting": "tfidf", "ngram_range": [1, 2],
         "idf": [1.5, 2.0, 3.0, 4.0]},
        {"feature": "tags", "input": "tags_xf", "kind": "category_set", "offset": 4, "size": 3, "raw_type": "string",
         "vocabulary": ["sale", "gift"], "oov_id": 2, "weighting": "multi_hot"},
    ]},
}


def test_bags_weigh_terms_as_tfidf_and_sets_as_presence():
    encoder = FeatureEncoder(MAPPING)
    assert encoder.input_names == ("bags",)
    # "Pan PRO pan zz": terms pan, pro, pan, zz, "pan pro", "pro pan", "pan zz" -> 7; pan twice.
    found = dict(encoder.encode_bags({"title": "Pan PRO pan zz", "tags": ["gift", "new", "gift"]}))
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    assert found == {0: f32(f32(2 / 7) * 1.5), 1: f32(f32(1 / 7) * 2.0), 2: f32(f32(1 / 7) * 3.0),
                     3: f32(f32(3 / 7) * 4.0), 4 + 1: 1.0, 4 + 2: 1.0}
    assert encoder.encode_bags({"title": "", "tags": []}) == [] == encoder.encode_bags({})
