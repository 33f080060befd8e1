"""How free text becomes tokens and n-grams: the one rule the Transform graph and the edge runtime both apply.

Transform runs it with TensorFlow ops (models/preprocessing.py: `tf.strings.lower` with
ICU's Unicode case mapping, an RE2 `regex_replace` of `WORD_BREAK`, `tf.strings.split`
and `tft.ngrams`); a device runs `tokens`/`ngrams` below with the standard library only.
Both follow Unicode's general categories, so they agree on accents, CJK, Cyrillic,
emoji and punctuation (tests/test_text_features.py compares them on every eval row):
1. lower-case the text (full Unicode case mapping: "Straße" -> "straße", "ΟΔΟΣ" -> "οδος");
2. every run of characters that are not letters (L), combining marks (M) or numbers (N)
   is a break: punctuation, symbols, emoji and whitespace separate words and are dropped;
3. n-grams of `n` consecutive words for each n of the configured range, joined by one space.
A character Python's Unicode tables (13.0 in Python 3.10) do not know yet counts as a
break here while TensorFlow's newer tables may call it a letter: scripts encoded after
2020 can tokenize differently on a device.
"""

from __future__ import annotations

import unicodedata
from typing import List, Sequence

# RE2 (TensorFlow's regex engine): a run of characters outside letters, marks and numbers.
WORD_BREAK = r"[^\p{L}\p{M}\p{N}]+"
NGRAM_SEPARATOR = " "
_WORD_CATEGORIES = ("L", "M", "N")


def _is_word_character(character: str) -> bool:
    return unicodedata.category(character)[0] in _WORD_CATEGORIES


def tokens(text: str) -> List[str]:
    """The words of `text`, lower-cased, in order (steps 1 and 2 of the module docstring)."""
    lowered = text.lower()
    spaced = "".join(c if _is_word_character(c) else " " for c in lowered)
    return [word for word in spaced.split(" ") if word]


def ngrams(words: Sequence[str], ngram_range: Sequence[int]) -> List[str]:
    """Every n-gram of `words` for n in [low, high], in `tft.ngrams`' order: by start word, shortest first (step 3)."""
    low, high = int(ngram_range[0]), int(ngram_range[1])
    return [NGRAM_SEPARATOR.join(words[i:i + n]) for i in range(len(words)) for n in range(low, high + 1)
            if i + n <= len(words)]


def terms(text: str, ngram_range: Sequence[int]) -> List[str]:
    """What one text contributes to its bag: its n-grams (an empty text: none)."""
    return ngrams(tokens(text), ngram_range)
