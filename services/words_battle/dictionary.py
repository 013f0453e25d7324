"""The word list Words Battle judges attempts against.

The real list comes from the `english-words` package (2.0.x), source ``web2``
(Webster's Second International, lower-cased): 234,450 entries, all plain a-z,
234,424 once the single letters below are dropped.
``gcide`` is not added: lower-cased it brings in abbreviations ("hq", "fm",
"aaas") and, with ``alpha=True``, multi-word phrases squashed into one ("iron
works" -> "ironworks"), none of which should score. Single letters other than
"a" and "i" are dropped: they are letters of the alphabet, not words, and would
let a player answer any turn with its own letter.

Loading takes about half a second, so it happens once, on first use, and the
result is shared as a frozenset by every game of the process.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Final

SOURCES: Final = ("web2",)
ONE_LETTER_WORDS: Final = frozenset({"a", "i"})
_WORD: Final = re.compile(r"[a-z]+")


def word_set(words: Iterable[str] | None = None) -> frozenset[str]:
    """The dictionary: `words` normalised (tests pass small lists), or the real list when None."""
    if words is None:
        return english_words()
    return _normalise(words)


@functools.cache
def english_words() -> frozenset[str]:
    """The real English word list, loaded on the first call only."""
    from english_words import get_english_words_set  # deferred: the data loads on call, not import

    return _normalise(get_english_words_set(SOURCES, lower=True))


def _normalise(words: Iterable[str]) -> frozenset[str]:
    # Attempts are judged lower-cased and trimmed, so the list is kept that way too.
    out = set()
    for word in words:
        if not isinstance(word, str):
            continue
        w = word.strip().lower()
        if _WORD.fullmatch(w) and (len(w) > 1 or w in ONE_LETTER_WORDS):
            out.add(w)
    return frozenset(out)
