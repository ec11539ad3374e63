"""CMUdict-format pronunciation lexicons: read one, turn word transcripts into
phonemes, and count the words it is missing across a data source.

The format is CMUdict's (both the ``cmudict-0.7b`` and the ``cmudict.dict``
flavours)::

    ;;; a comment line
    HELLO  HH AH0 L OW1
    HELLO(2)  HH EH0 L OW1
    don't  D OW1 N T  # a trailing comment (cmudict.dict)

one word and its phonemes per line, separated by any whitespace; ``WORD(n)``
lines are alternate pronunciations. Phonemes may be any symbols (ARPAbet,
IPA...). The ``cmudict`` PyPI package is GPL-3, so the suite never depends on
it: users point the recipe at a lexicon file of their own.

Encoding: a file is read as UTF-8 (a BOM is tolerated); if it is not valid
UTF-8 it is read as latin-1, which is what ``cmudict-0.7b`` uses for its few
non-ASCII bytes. latin-1 decodes any byte, so no text file fails on
encoding; a file with NUL bytes (UTF-16, or not text) is refused.
"""

import re
from collections import Counter
from pathlib import Path

from lstm_core.errors import UserError

SKIP, FAIL = "skip", "fail"

_ALTERNATE = re.compile(r"(.+)\((\d+)\)")
# A stress digit ends an ARPAbet vowel (AH0, IY1, ER2); the \D keeps a
# phoneme that is only a digit intact.
_STRESS = re.compile(r"(?<=\D)[012]$")
# A word: letters/digits, with apostrophes only inside (don't, o'clock).
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data:  # latin-1 would read it, as nonsense words
        raise UserError(f"{path}: NUL bytes in a lexicon (UTF-16 text?); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _parse_line(line: str, where: str):
    """(word, alternate number or 0, phonemes) of one entry line, or None for a
    blank or comment line."""
    line = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
    if not line or line.startswith(";;;"):
        return None
    fields = line.split()
    if len(fields) < 2:
        raise UserError(f"{where}: expected a word and its phonemes, got {line!r}")
    word, phonemes = fields[0], fields[1:]
    alternate = word.endswith(")") and _ALTERNATE.fullmatch(word)
    if alternate:
        return alternate.group(1), int(alternate.group(2)), phonemes
    return word, 0, phonemes  # other brackets are part of the word: CMUdict has "(PAREN"



def read_lexicon(path, strip_stress: bool = True) -> dict[str, list[str]]:
    """``{word: phonemes}`` of a CMUdict-format lexicon, one pronunciation per
    word: the unnumbered entry, else the first alternate in the file.

    Words are case-folded (``transcribe`` folds text the same way), so
    ``HELLO`` and ``hello`` are one word. With ``strip_stress`` a trailing
    stress digit 0/1/2 is removed (``AH0`` -> ``AH``). A line that is not a
    word followed by phonemes raises a ``UserError`` naming ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"lexicon file not found: {path}")
    lexicon, is_alternate, stripped = {}, {}, {}
    for number, line in enumerate(_decode(path).splitlines(), 1):
        entry = _parse_line(line, f"{path}:{number}")
        if entry is None:
            continue
        word, alternate, phonemes = entry
        word = word.casefold()
        if word in lexicon and not (is_alternate[word] and not alternate):
            continue  # keep the first pronunciation; a main entry beats an alternate
        if strip_stress:  # memoised: a lexicon has few distinct phonemes
            phonemes = [stripped.get(p) or stripped.setdefault(p, _STRESS.sub("", p))
                        for p in phonemes]
        lexicon[word], is_alternate[word] = phonemes, bool(alternate)
    if not lexicon:
        raise UserError(f"{path}: no lexicon entries (expected lines like 'WORD  PH1 PH2')")
    return lexicon


def words(text: str) -> list[str]:
    """The normalised words of ``text``: case-folded, punctuation dropped except
    apostrophes inside a word (``"Don't stop!"`` -> ``["don't", "stop"]``;
    typographic apostrophes count as ``'``). Hyphens and other punctuation
    separate words."""
    return _WORD.findall(text.translate(_APOSTROPHES).casefold())


def transcribe(text: str, lexicon: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """``(phonemes, missing_words)`` of ``text``: the concatenated
    pronunciations of its words (see ``words``) and, in order of occurrence,
    the words the lexicon lacks (these contribute no phonemes, so the
    phonemes are only usable when nothing is missing)."""
    phonemes, missing = [], []
    for word in words(text):
        if word in lexicon:
            phonemes.extend(lexicon[word])
        else:
            missing.append(word)
    return phonemes, missing


def transcribe_all(texts, names, lexicon: dict[str, list[str]], missing_words: str = FAIL,
                   lexicon_name: str = "the lexicon") -> tuple[list, str]:
    """``(phonemes, report)`` of the texts of a data source, handling words
    missing from the lexicon as the recipe chooses (``data.missing_words``).

    ``names[i]`` says where text i is (``manifest.tsv:7``). With ``"fail"`` a
    missing word raises a ``UserError`` naming the first place, its word and
    the totals. With ``"skip"`` a text with missing words gets ``None``
    phonemes and ``report`` says how many were skipped, the missing words
    (most frequent first) and the first few places; it is ``""`` when no word
    is missing.
    """
    if missing_words not in (SKIP, FAIL):
        raise UserError(f"data.missing_words must be {SKIP!r} or {FAIL!r}, got {missing_words!r}")
    phonemes, counts, places = [], Counter(), []
    for name, text in zip(names, texts, strict=True):
        found, missing = transcribe(text, lexicon)
        if missing:
            counts.update(missing)
            places.append((name, missing[0]))
        phonemes.append(None if missing else found)
    if not places:
        return phonemes, ""
    shown = ", ".join(f"{word} ({count})" for word, count in counts.most_common(10))
    more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
    noun = "utterance" if len(places) == 1 else "utterances"
    if missing_words == FAIL:
        name, word = places[0]
        raise UserError(f"{name}: {word!r} is not in {lexicon_name} (words missing in "
                        f"{len(places)} {noun}: {shown}{more}); add them to the lexicon, or set "
                        f"data.missing_words: skip")
    first = ", ".join(name for name, _ in places[:3]) + (", ..." if len(places) > 3 else "")
    return phonemes, (f"skipped {len(places)} {noun} with words missing from {lexicon_name}: "
                      f"{shown}{more} (first: {first})")


def inventory(lexicon: dict[str, list[str]]) -> list[str]:
    """The sorted set of phonemes the lexicon uses."""
    return sorted({p for phonemes in lexicon.values() for p in phonemes})
