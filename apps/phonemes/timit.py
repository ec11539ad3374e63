"""TIMIT: read a TIMIT-layout tree and fold its 61 phones to 48 and 39.

Layout (as the LDC distributes it; file and directory names in any case)::

    ROOT/TRAIN/DR1/FCJF0/SA1.WAV   audio: NIST SPHERE (uncompressed) or RIFF
    ROOT/TRAIN/DR1/FCJF0/SA1.PHN   "start end phone" lines, 61-phone set
    ROOT/TEST/...                  (.WRD and .TXT files are ignored)

ROOT may also be a folder holding one such tree (the LDC disc's ``TIMIT/``).
Copies converted to RIFF as ``SA1.WAV.wav`` next to the NIST file are read
too. soundfile (and so librosa) reads both audio forms; a shorten-compressed
SPHERE file is not readable by it.

The corpus is licensed, so nothing of it ships here; the tables below are the
public standard ones.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from lstm_core.errors import UserError

# Lee & Hon (1989) folding of the 61 TIMIT phones to 48 (training) and 39
# (scoring), verbatim from Kaldi, egs/timit/s5/conf/phones.60-48-39.map
# (github.com/kaldi-asr/kaldi): "phone61 phone48 phone39"; q has no target:
# the glottal stop is deleted.
_MAP = """\
aa aa aa|ae ae ae|ah ah ah|ao ao aa|aw aw aw|ax ax ah|ax-h ax ah|axr er er|ay ay ay
b b b|bcl vcl sil|ch ch ch|d d d|dcl vcl sil|dh dh dh|dx dx dx|eh eh eh|el el l
em m m|en en n|eng ng ng|epi epi sil|er er er|ey ey ey|f f f|g g g|gcl vcl sil
h# sil sil|hh hh hh|hv hh hh|ih ih ih|ix ix ih|iy iy iy|jh jh jh|k k k|kcl cl sil
l l l|m m m|n n n|ng ng ng|nx n n|ow ow ow|oy oy oy|p p p|pau sil sil|pcl cl sil|q
r r r|s s s|sh sh sh|t t t|tcl cl sil|th th th|uh uh uh|uw uw uw|ux uw uw|v v v
w w w|y y y|z z z|zh zh sh"""

# The 24-speaker core test set and the 50-speaker development set (both drawn
# from TEST), from Kaldi, egs/timit/s5/conf/test_spk.list and dev_spk.list.
CORE_TEST_SPEAKERS = frozenset("""
mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0
mbpm0 mklt0 fnlp0 mcmj0 mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0
""".split())
DEV_SPEAKERS = frozenset("""
faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0
fadg0 fdms0 fedw0 mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0
mbns0 mmjr0 mdls0 mdlf0 mdvc0 mers0 fmah0 fdrw0 mrcs0 mrjm4 fcal1 mmwh0 fjsj0
majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 mteb0 mjfc0 mrjr0 fmml0 mrws1
""".split())


def _tables():
    rows = [entry.split() for entry in _MAP.replace("\n", "|").split("|")]
    to48 = {row[0]: row[1] if len(row) > 1 else None for row in rows}
    to39 = {row[0]: row[2] if len(row) > 1 else None for row in rows}
    # A 48-set symbol folds to one 39-set symbol whichever 61 phone it came
    # from, so predictions in the 48 set can be scored in the 39 set.
    from48 = {}
    for phone61, phone48 in to48.items():
        if phone48 is not None:
            assert from48.setdefault(phone48, to39[phone61]) == to39[phone61], phone48
    return [row[0] for row in rows], to48, to39, from48


PHONES_61, _TO48, _TO39, _48_TO_39 = _tables()
PHONES_48 = sorted(_48_TO_39)
PHONES_39 = sorted(set(_48_TO_39.values()))
assert (len(PHONES_61), len(PHONES_48), len(PHONES_39)) == (61, 48, 39)

# fold accepts 61-set and 48-set symbols; the two tables agree where they
# overlap (every 48 symbol that is also a 61 phone folds to itself).
_FOLD = {48: {**{p: p for p in PHONES_48}, **_TO48}, 39: {**_48_TO_39, **_TO39}}


def fold(phones, to: int = 39, where: str = "") -> list[str]:
    """Fold TIMIT phones (61-set, or 48-set such as a model's predictions) to
    the 48- or 39-phone set; ``q`` is deleted. An unknown symbol raises a
    ``UserError`` (prefixed with ``where``, e.g. the file, when given)."""
    if to not in _FOLD:
        raise UserError(f"TIMIT phones fold to 48 or 39, not {to!r}")
    table = _FOLD[to]
    folded = []
    for phone in phones:
        if phone not in table:
            prefix = f"{where}: " if where else ""
            raise UserError(f"{prefix}unknown TIMIT phone {phone!r} (expected one of the "
                            f"61 TIMIT phones or the 48-phone set)")
        if table[phone] is not None:
            folded.append(table[phone])
    return folded


@dataclass
class Utterance:
    audio: Path  # the .WAV file (NIST SPHERE or RIFF)
    phones: list[str]  # the 61-phone transcription, q and h# included
    speaker: str  # lower case, e.g. "fcjf0"
    dialect: str  # lower case, e.g. "dr1"
    id: str  # "<speaker>_<sentence>", e.g. "fcjf0_si1027"


SPLITS = ("train", "dev", "test")
_DIALECT = re.compile(r"dr\d+")


def read_timit(root, split: str, core_test: bool = False,
               include_sa: bool = False) -> list[Utterance]:
    """The utterances of one split of a TIMIT tree, sorted by dialect region,
    speaker and sentence.

    ``split``: ``"train"`` (TRAIN), ``"test"`` (all of TEST, or with
    ``core_test`` its 24-speaker core test set) or ``"dev"`` (the standard
    50-speaker development set from TEST, disjoint from the core set). The SA
    sentences, read by every speaker, are left out unless ``include_sa``.
    A missing or malformed .PHN file raises a ``UserError`` naming it.
    """
    if split not in SPLITS:
        raise UserError(f"TIMIT split must be one of {', '.join(SPLITS)}, got {split!r}")
    if core_test and split != "test":
        raise UserError(f"core_test applies to the test split, not {split!r}")
    speakers = CORE_TEST_SPEAKERS if core_test else DEV_SPEAKERS if split == "dev" else None
    top = _split_dir(Path(root), "train" if split == "train" else "test")
    utterances = []
    for dialect in _children(top, lambda d: d.is_dir() and _DIALECT.fullmatch(d.name.lower())):
        for speaker in _children(dialect, Path.is_dir):
            if speakers is None or speaker.name.lower() in speakers:
                utterances += _speaker_utterances(speaker, dialect.name.lower(), include_sa)
    if not utterances:
        raise UserError(f"{top}: no TIMIT utterances for split {split!r}"
                        + (" (core test set)" if core_test else "")
                        + " (expected DR*/SPEAKER/*.WAV with .PHN files)")
    return utterances


def _children(folder: Path, keep) -> list[Path]:
    return sorted((p for p in folder.iterdir() if keep(p)), key=lambda p: p.name.lower())


def _split_dir(root: Path, name: str) -> Path:
    """ROOT/TRAIN in any case, or one level further down (ROOT/TIMIT/TRAIN)."""
    if not root.is_dir():
        raise UserError(f"TIMIT root not found: {root}")
    for folder in [root] + _children(root, Path.is_dir):
        for child in _children(folder, Path.is_dir):
            if child.name.lower() == name:
                return child
    raise UserError(f"{root}: no {name.upper()} directory (expected a TIMIT tree with "
                    f"TRAIN/ and TEST/, in any case)")


def _speaker_utterances(folder: Path, dialect: str, include_sa: bool) -> list[Utterance]:
    files = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    speaker = folder.name.lower()
    utterances = []
    for sentence in sorted({name.split(".", 1)[0] for name in files}):
        audio = files.get(f"{sentence}.wav") or files.get(f"{sentence}.wav.wav")
        if audio is None or (sentence.startswith("sa") and not include_sa):
            continue
        phn = files.get(f"{sentence}.phn")
        if phn is None:
            expected = folder / (audio.name.split(".", 1)[0] + ".PHN")
            raise UserError(f"{audio}: transcription {expected} not found (.PHN, any case)")
        utterances.append(Utterance(audio, read_phn(phn), speaker, dialect,
                                    f"{speaker}_{sentence}"))
    return utterances


def read_phn(path) -> list[str]:
    """The phones of a TIMIT .PHN file (``start end phone`` lines, sample
    offsets), checked against the 61-phone set; errors name ``file:line``."""
    path = Path(path)
    phones = []
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 3 or not (fields[0].isdigit() and fields[1].isdigit()):
            raise UserError(f"{where}: expected 'start end phone', got {line.strip()!r}")
        if fields[2] not in _TO48:
            raise UserError(f"{where}: unknown TIMIT phone {fields[2]!r}")
        phones.append(fields[2])
    if not phones:
        raise UserError(f"{path}: empty TIMIT transcription")
    return phones
