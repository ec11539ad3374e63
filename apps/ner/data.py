"""NER data: CoNLL files and tensorflow-datasets sets in, tag schemes, the
tokenizer for plain-text input, vocabularies and prediction files out.

Everything here works on plain Python lists so that it can be tested and
reused without TensorFlow; the graph-side features live in ``features.py``.

Entity boundaries are read everywhere with conlleval's chunk rules (see
``chunks``), the rules the metrics use too, so that conversion, extraction and
scoring can never disagree about where an entity is.
"""

import contextlib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lstm_core.crf import SCHEME_PREFIXES
from lstm_core.errors import UserError, not_utf8

SCHEMES = ("iob1", "bio", "iobes")
_ALIASES = {"iob2": "bio"}
_TAG = re.compile(r"O|[BIES]-\S+")


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]


# -- CoNLL files ----------------------------------------------------------------


def read_conll(path, tag_column: int = -1) -> list[Sentence]:
    """Sentences of a CoNLL file: one ``token ... tag`` line per token, blank
    lines between sentences.

    Both the 2-column (``token tag``) and the 4-column CoNLL-2003 form
    (``token POS chunk tag``) are read; the token is the first column and the
    tag the ``tag_column``-th (default: the last). ``-DOCSTART-`` lines are
    skipped. Every token line must have as many columns as the file's first
    one, and every tag must be ``O`` or ``X-TYPE`` with X in B, I, E, S: a
    broken line would otherwise shift tokens and tags silently, so it is
    reported as ``file:line`` for the user to fix.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CoNLL file not found: {path}")
    sentences, tokens, tags = [], [], []
    columns = None
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
            for number, line in enumerate(f, 1):
                fields = line.split()
                if not fields or fields[0] == "-DOCSTART-":
                    if tokens:
                        sentences.append(Sentence(tokens, tags))
                        tokens, tags = [], []
                    continue
                where = f"{path}:{number}"
                if columns is None:
                    columns = len(fields)
                    if columns < 2:
                        raise UserError(f"{where}: expected a token and a tag, got 1 column: "
                                        f"{line.strip()!r}")
                    if not -columns <= tag_column < columns:
                        raise UserError(f"{where}: tag_column {tag_column} is out of range "
                                        f"for {columns} columns")
                if len(fields) != columns:
                    raise UserError(f"{where}: expected {columns} columns, got {len(fields)}: "
                                    f"{line.strip()!r}")
                tag = fields[tag_column]
                if not _TAG.fullmatch(tag):
                    raise UserError(f"{where}: bad tag {tag!r} (expected O or B-/I-/E-/S-TYPE): "
                                    f"{line.strip()!r}")
                tokens.append(fields[0])
                tags.append(tag)
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    if tokens:  # no blank line at the end of the file
        sentences.append(Sentence(tokens, tags))
    return sentences


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file (a BOM tolerated; only newlines break
    lines, so Unicode line separators stay inside a sentence)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines[-1] == "" else lines


def _output(path):
    """An open text file for ``path``, or stdout for ``None`` / ``"-"``."""
    if path is None or str(path) == "-":
        return contextlib.nullcontext(sys.stdout)
    return open(path, "w", encoding="utf-8")


def write_conll(path, sentences, predicted_tags) -> None:
    """Predictions as CoNLL: ``token gold pred`` lines when the sentences have
    gold tags (so that conlleval can score the file directly), else
    ``token pred``; a blank line after each sentence. ``None`` -> stdout."""
    with _output(path) as f:
        for sentence, predicted in zip(sentences, predicted_tags, strict=True):
            gold = sentence.tags or [None] * len(sentence.tokens)
            for token, tag, pred in zip(sentence.tokens, gold, predicted, strict=True):
                f.write(f"{token} {tag} {pred}\n" if tag is not None else f"{token} {pred}\n")
            f.write("\n")


def write_jsonl(path, items) -> None:
    """One JSON object per line (``{"text", "tokens", "tags", "entities"}`` for
    predictions), UTF-8 kept readable. ``None`` -> stdout."""
    with _output(path) as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


# -- tensorflow-datasets --------------------------------------------------------

# The token and tag feature names of each supported set (from the tfds
# builders), and the split names each one uses for the development set.
_TFDS = {
    "conll2003": ("tokens", "ner", {"validation": "dev"}),
    "wikiann": ("tokens", "tags", {"dev": "validation"}),
}


def load_tfds(name: str, split: str, data_dir=None) -> list[Sentence]:
    """Sentences of a prepared tensorflow-datasets set: ``conll2003`` or
    ``wikiann/<lang>`` (e.g. ``wikiann/en``).

    Never downloads: preparing a set is a separate, explicit step
    (``tfds build``). ``dev`` and ``validation`` are accepted for either set.
    Tag ids become strings through the set's own ClassLabel names. Tokens
    holding whitespace are joined with ``_`` because the model sees a sentence
    as its tokens joined by spaces.
    """
    import tensorflow_datasets as tfds

    base = name.split("/")[0]
    if base not in _TFDS:
        raise UserError(f"unsupported tensorflow-datasets set {name!r}: "
                        f"expected conll2003 or wikiann/<language>")
    if base == "wikiann" and "/" not in name:
        raise UserError("wikiann needs a language, e.g. wikiann/en")
    token_key, tag_key, split_names = _TFDS[base]
    split_name, bracket, rest = split.partition("[")  # keep slices: "train[:10%]"
    split = split_names.get(split_name, split_name) + bracket + rest
    try:
        ds, info = tfds.load(name, split=split, download=False, data_dir=data_dir, with_info=True)
    except AssertionError:  # tfds' way of saying "not prepared"
        where = data_dir or "the default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
        raise UserError(f"tensorflow-datasets set {name} is not prepared in {where}: "
                        f"prepare it first with `tfds build {name}"
                        f"{' --data_dir ' + str(data_dir) if data_dir else ''}`") from None
    except (tfds.core.DatasetNotFoundError, ValueError) as error:
        raise UserError(f"tensorflow-datasets set {name}, split {split}: {error}") from None
    names = info.features[tag_key].feature.names
    sentences = []
    for index, example in enumerate(tfds.as_numpy(ds)):
        tokens = ["_".join(t.decode("utf-8").split()) or "_" for t in example[token_key]]
        tags = [names[i] for i in example[tag_key]]
        if len(tokens) != len(tags):
            raise UserError(f"tensorflow-datasets set {name}, split {split}, example {index}: "
                            f"{len(tokens)} tokens but {len(tags)} tags")
        if tokens:
            sentences.append(Sentence(tokens, tags))
    return sentences


# -- tag schemes ----------------------------------------------------------------


def _scheme(name: str) -> str:
    scheme = _ALIASES.get(name, name)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {name!r}: expected iob1, bio (iob2) or iobes")
    return scheme


def chunks(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities as ``(type, start, end)`` token ranges (``end`` exclusive).

    These are conlleval's chunk rules, extended to IOBES as seqeval does, so
    one reader serves IOB1, BIO and IOBES alike and reads ill-formed
    sequences (an I- after O, a type switch) the way the scorer does: an
    entity ends after E-/S-, before B-/S-/O, or where the type changes; any
    non-O tag that does not continue an entity starts one.
    """
    found = []
    start = kind = None
    previous = "O"
    for index, tag in enumerate(list(tags) + ["O"]):
        if not _TAG.fullmatch(tag):
            raise ValueError(f"bad tag {tag!r}: expected O or B-/I-/E-/S-TYPE")
        prefix, _, type_ = tag.partition("-")
        if start is not None and (previous in "ES" or prefix in "BSO" or type_ != kind):
            found.append((kind, start, index))
            start = None
        if prefix != "O" and start is None:
            start, kind = index, type_
        previous = prefix
    return found


def detect_scheme(sentences) -> str:
    """``iobes`` if any E-/S- tag occurs; else ``iob1`` if an I- tag ever
    starts an entity (IOB1 uses B- only between two adjacent entities of one
    type); else ``bio``. E-/S- win because they only exist in IOBES (an I-
    starting an entity there is an error, not a sign of IOB1)."""
    iob1 = False
    for sentence in sentences:
        previous = "O"
        for tag in sentence.tags:
            if tag[:2] in ("E-", "S-"):
                return "iobes"
            if tag.startswith("I-") and previous not in ("B-" + tag[2:], tag):
                iob1 = True
            previous = tag
    return "iob1" if iob1 else "bio"


def convert_tags(tags: list[str], source: str, target: str) -> list[str]:
    """``tags`` re-encoded from scheme ``source`` to ``target`` (``iob1``,
    ``bio`` alias ``iob2``, ``iobes``).

    Entities are read with ``chunks`` and written out again, so conversions
    between well-formed sequences round-trip exactly, and ill-formed input
    comes out as the entities the scorer would have seen in it.
    """
    _scheme(source)  # validated; the chunk rules read every scheme
    target = _scheme(target)
    out = ["O"] * len(tags)
    previous_end, previous_kind = None, None
    for kind, start, end in chunks(tags):
        if target == "iobes" and end - start == 1:
            out[start] = "S-" + kind
        else:
            inside = "I-" + kind
            out[start:end] = [inside] * (end - start)
            if target != "iob1" or (previous_end == start and previous_kind == kind):
                out[start] = "B-" + kind
            if target == "iobes":
                out[end - 1] = "E-" + kind
        previous_end, previous_kind = end, kind
    return out


def convert_sentences(sentences, target, source="auto") -> list[Sentence]:
    """New sentences with tags in scheme ``target``; ``source="auto"``
    detects the scheme of the whole set (a single sentence can be ambiguous)."""
    source = detect_scheme(sentences) if source == "auto" else source
    return [Sentence(list(s.tokens), convert_tags(s.tags, source, target)) for s in sentences]


def entity_spans(tokens, tags, text=None, offsets=None) -> list[dict]:
    """Entities of one tagged sentence (BIO, IOBES or IOB1 tags) as dicts:
    ``type``, ``start_token``, ``end_token`` (exclusive) and ``text``; given
    the sentence's ``text`` and the ``offsets`` of its tokens in it (a
    ``(start, end)`` character pair per token, as ``tokenize`` gives) also
    ``start`` and ``end`` characters, and ``text`` is exactly ``text[start:end]``."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    spans = []
    for kind, start, end in chunks(tags):
        span = {"type": kind, "start_token": start, "end_token": end}
        if offsets is None:
            span["text"] = " ".join(tokens[start:end])
        else:
            first, last = offsets[start][0], offsets[end - 1][1]
            span.update(text=text[first:last], start=first, end=last)
        spans.append(span)
    return spans


# -- plain text -----------------------------------------------------------------

_WORD = r"[^\W_]"  # a letter or digit, in any script
_TOKEN = re.compile(rf"""
    (?:{_WORD}\.){{2,}}(?!{_WORD})        # dotted initialism, final period kept: U.S. e.g.
  | {_WORD}+                               # letters/digits ...
    (?:(?:[-\u2010.]                       #   joined by hyphens or periods,
         |['\u2019](?![sS](?!{_WORD}))     #   apostrophes (not a final 's),
         |(?<=\d),(?=\d)                   #   or commas between digits
       ){_WORD}+)*
  | ['\u2019][sS](?!{_WORD})               # possessive / clitic 's, as CoNLL splits it
  | \S                                     # any other character stands alone
""", re.VERBOSE)


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Split plain text into CoNLL-like tokens: ``(token, start, end)`` with
    ``text[start:end] == token``, so predicted entities can point back into
    the input.

    The rule (documented for users of ``predict`` on plain text):

    * a word is a maximal run of letters and digits, which may contain single
      hyphens, periods or apostrophes between letters/digits, and commas
      between digits: ``state-of-the-art``, ``O'Neil``, ``3.5``, ``3,000``;
    * a dotted initialism keeps its final period: ``U.S.``, ``e.g.``;
    * a final ``'s`` is split off as its own token (``Smith's`` ->
      ``Smith`` ``'s``), as in CoNLL-2003;
    * every other non-space character is a token by itself (``.``, ``,``,
      ``(``, ``$``, ``%``, ``"``, ``_``), and whitespace only separates.
    """
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


# -- vocabulary -----------------------------------------------------------------


def _by_frequency(counts: Counter, min_count: int = 1) -> list[str]:
    return [key for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            if count >= min_count]


def build_vocab(sentences, min_count=1, lowercase=False, scheme="iobes") -> dict:
    """``words`` (seen at least ``min_count`` times, lowercased if asked),
    ``chars`` (of the original tokens: the character encoder sees case) and
    ``tags`` of the training sentences.

    Words and characters are sorted by frequency, then alphabetically, so the
    vocabulary is deterministic. Tags are ``O`` and then, alphabetically,
    every tag of ``scheme`` for each entity type seen: a type seen only as
    single-token entities still gets its B-/I-/E- tags, which dev data or a
    fine-tuning set may use. No padding or unknown entries: the model
    reserves its own ids for those.
    """
    words, chars, types = Counter(), Counter(), set()
    for sentence in sentences:
        for token in sentence.tokens:
            words[token.lower() if lowercase else token] += 1
            chars.update(token)
        types.update(kind for kind, _, _ in chunks(sentence.tags))
    return {"words": _by_frequency(words, min_count), "chars": _by_frequency(chars),
            "tags": scheme_tags(types, scheme)}


def scheme_tags(types, scheme) -> list[str]:
    """``O``, then every tag of ``scheme`` for each entity type, sorted."""
    prefixes = SCHEME_PREFIXES[_scheme(scheme)]
    return ["O"] + sorted(f"{prefix}-{kind}" for kind in types for prefix in prefixes)
