"""Reading parallel text: two aligned files (one sentence a line, plain or
gzip), a TSV of pairs, or a tensorflow-datasets translation set; the
filters a training set goes through, with what they dropped counted.

Sentences stay raw (cased, punctuated, untokenized): the subword model
learns from them as they are and the output is scored against them.
"""

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from lstm_core.errors import UserError

#: Suffixes read as gzip.
GZIP_SUFFIXES = (".gz", ".gzip")


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    origin: str  # where it was read, for messages: "train.en.gz:7"


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    return gzip.open(path, "rb") if path.suffix.lower() in GZIP_SUFFIXES else open(path, "rb")


def read_lines(path, strip=True):
    """The lines of a UTF-8 text file (plain or gzip), without line ends and
    (with ``strip``) surrounding spaces; a byte that is not UTF-8 names the
    file and line."""
    lines = []
    number = 0
    try:
        with _open(path) as f:
            for number, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as error:
                    raise UserError(f"{path}:{number}: not UTF-8 text (byte "
                                    f"{raw[error.start]:#04x} at column {error.start + 1})") from None
                lines.append(text.strip() if strip else text.rstrip("\r\n"))
    except (OSError, EOFError, zlib.error) as error:  # a damaged or truncated gzip file
        raise UserError(f"{path}: cannot read it after line {number} ({error})") from None
    return lines


def read_parallel(source_path, target_path):
    """Pairs of two aligned files: line i of one translates line i of the
    other, so they must have as many lines."""
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        raise UserError(f"{source_path} has {len(sources)} lines but {target_path} has "
                        f"{len(targets)}: the files of a parallel corpus must be aligned line "
                        f"by line")
    name = Path(source_path).name
    return [Pair(s, t, f"{name}:{n}") for n, (s, t) in enumerate(zip(sources, targets), 1)]


def read_tsv(path):
    """Pairs of a ``source<TAB>target`` file (no header, no quoting: a ``"``
    is text); a blank line is an empty pair."""
    pairs = []
    name = Path(path).name
    for number, line in enumerate(read_lines(path, strip=False), 1):
        fields = line.split("\t") if line.strip() else ["", ""]
        if len(fields) != 2:
            raise UserError(f"{path}:{number}: expected source<TAB>target, found "
                            f"{len(fields)} tab-separated field{'s' if len(fields) > 1 else ''}")
        pairs.append(Pair(fields[0].strip(), fields[1].strip(), f"{name}:{number}"))
    return pairs


def _prepare_hint(name, data_dir):
    return (f"prepare it once, with network access: python -c \"import tensorflow_datasets "
            f"as tfds; tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare()\"")


def read_tfds(name, split, data_dir, source_key=None, target_key=None):
    """Pairs of split ``split`` of the tensorflow-datasets translation set
    ``name`` (``ted_hrlr_translate/pt_to_en``, ``wmt14_translate/de-en``),
    read where tfds prepared it (never downloaded at run time). The source
    and target are the features ``source_key`` and ``target_key``, by
    default the set's supervised keys (its own direction)."""
    import tensorflow_datasets as tfds

    if data_dir is None:
        raise UserError(f"data.tfds_data_dir is not set: the folder where tfds prepared {name}")
    try:
        builder = tfds.builder(name, data_dir=str(data_dir))
    except Exception as error:  # an unknown name: tfds raises its own DatasetNotFoundError
        raise UserError(f"data.tfds: {error}".splitlines()[0]) from None
    keys = builder.info.supervised_keys or (None, None)
    source_key, target_key = source_key or keys[0], target_key or keys[1]
    features = sorted(builder.info.features)
    for key in (source_key, target_key):
        if key not in features:
            raise UserError(f"tensorflow-datasets {name} has no feature {key!r}; it has "
                            f"{', '.join(features)} (set data.source_language and "
                            f"data.target_language to two of them)")
    if builder.info.splits and split not in builder.info.splits:  # (none known: not prepared)
        raise UserError(f"tensorflow-datasets {name} has no split {split!r}; it has "
                        f"{', '.join(sorted(builder.info.splits))}")
    try:
        dataset = builder.as_dataset(split=split)
    except AssertionError:  # tfds's way of saying the data is not there
        raise UserError(f"{data_dir}: tensorflow-datasets {name!r} is not prepared there; "
                        + _prepare_hint(name, data_dir)) from None
    pairs = []
    for number, example in enumerate(tfds.as_numpy(dataset), 1):
        texts = []
        for key in (source_key, target_key):
            try:
                texts.append(example[key].decode("utf-8").strip())
            except UnicodeDecodeError:
                raise UserError(f"tensorflow-datasets {name} {split} example {number}: "
                                f"{key} is not UTF-8 text") from None
        pairs.append(Pair(*texts, f"{name}:{split}:{number}"))
    return pairs


@dataclass
class Filtered:
    """What :func:`filter_pairs` kept (and at which positions of its input)
    and how many pairs it left out."""
    kept: list
    positions: list = field(default_factory=list)
    empty: int = 0
    too_long: int = 0

    def report(self, what, max_source, max_target):
        """One line for a person, or "" when nothing was left out."""
        if not (self.empty or self.too_long):
            return ""
        return f"{what}: {len(self.kept)} pairs kept; {self.left_out(max_source, max_target)}"

    def left_out(self, max_source, max_target):
        """What was left out, and why (the recipe keys of the limits)."""
        return (f"left out {self.empty} with an empty side and {self.too_long} longer than "
                f"{max_source} source or {max_target} target subwords (data.max_source_length, "
                f"data.max_target_length)")


def filter_pairs(source_ids, target_ids, max_source, max_target):
    """The pairs of subword ids that have both sides and fit the limits: a
    pair with an empty side teaches nothing, an over-long one costs memory
    for little. Returns a :class:`Filtered` of ``(source_ids, target_ids)``."""
    out = Filtered([])
    for position, (source, target) in enumerate(zip(source_ids, target_ids)):
        if not source or not target:
            out.empty += 1
        elif len(source) > max_source or len(target) > max_target:
            out.too_long += 1
        else:
            out.kept.append((source, target))
            out.positions.append(position)
    return out
