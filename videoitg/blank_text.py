"""What counts as an empty instruction: text made only of characters that show nothing."""

from __future__ import annotations

import unicodedata

# Characters that show nothing although Unicode does not class them as controls, format characters or spaces:
# Hangul fillers, the braille blank, the combining grapheme joiner and the variation selectors.
_SHOW_NOTHING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f" + "".join(map(chr, range(0xFE00, 0xFE10)))
                          + "".join(map(chr, range(0xE0100, 0xE01F0))))
# Unicode categories of characters that carry no text: controls (NUL...), format characters (zero-width space and
# joiners, word joiner, BOM, soft hyphen, bidi marks, embeddings and isolates, tags) and separators.
_NO_TEXT_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})

EMPTY_INSTRUCTION = "instruction is empty (only whitespace, control, zero-width or bidi characters)"


def is_blank(text: str) -> bool:
    """Nothing but whitespace, controls, zero-width, bidi and other characters that show nothing: an instruction
    made only of these is empty."""
    return all(c.isspace() or c in _SHOW_NOTHING or unicodedata.category(c) in _NO_TEXT_CATEGORIES for c in text)
