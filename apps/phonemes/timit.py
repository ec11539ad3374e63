"""TIMIT-layout corpora as a data source: the tree, its phone transcriptions,
and the standard foldings of its 61 phones.

Written from the corpus's own documentation (the TIMIT CD-ROM's
``readme.doc``, ``phoncode.doc`` and ``testset.doc``) and from Lee & Hon,
"Speaker-independent phone recognition using hidden Markov models", IEEE
Trans. ASSP 37(11), 1989. The layout::

    TRAIN/DR1/FCJF0/SA1.WAV   SA1.PHN   SX127.WAV   SX127.PHN ...
    TEST/DR1/MDAB0/SI1039.WAV SI1039.PHN ...

eight dialect regions (``DR1``..``DR8``), one folder per speaker (sex, initials
and a digit), and per sentence the audio (16 kHz 16-bit NIST SPHERE, or RIFF
in converted copies) and a ``.PHN`` file of ``start end phone`` lines (sample
ranges). Sentences ``SA1``/``SA2`` are the two dialect sentences every speaker
reads; recognition work leaves them out, since they would weigh two texts
hundreds of times. Names are matched ignoring case (some copies are lower case).

TIMIT is licensed by the LDC: the suite ships none of it; tests make tiny trees.
"""

from pathlib import Path

from apps.phonemes.data import Utterance
from lstm_core.errors import UserError

#: The 61 phones of TIMIT's transcriptions (``phoncode.doc``).
PHONES_61 = (
    # stops and their closures, the flap and the glottal stop
    "b", "d", "g", "p", "t", "k", "bcl", "dcl", "gcl", "pcl", "tcl", "kcl", "dx", "q",
    # affricates and fricatives
    "jh", "ch", "s", "sh", "z", "zh", "f", "th", "v", "dh",
    # nasals
    "m", "n", "ng", "em", "en", "eng", "nx",
    # semivowels and glides
    "l", "r", "w", "y", "hh", "hv", "el",
    # vowels
    "iy", "ih", "eh", "ey", "ae", "aa", "aw", "ay", "ah", "ao", "oy", "ow", "uh", "uw",
    "ux", "er", "ax", "ix", "axr", "ax-h",
    # pause, epenthetic silence, the begin/end-of-utterance marker
    "pau", "epi", "h#",
)

#: Lee & Hon 1989's folding of the 61 phones to the 48 they trained on; the
#: other 41 phones are kept as they are, and ``q`` (the glottal stop) is
#: deleted (``None``).
FOLD_48 = {
    "ux": "uw", "axr": "er", "ax-h": "ax", "em": "m", "nx": "n", "eng": "ng", "hv": "hh",
    "pcl": "cl", "tcl": "cl", "kcl": "cl",      # unvoiced closures
    "bcl": "vcl", "dcl": "vcl", "gcl": "vcl",   # voiced closures
    "h#": "sil", "pau": "sil",
    "q": None,
}

#: Lee & Hon's further folding of the 48 phones into the 39 classes they
#: scored: confusions within a class are not counted as errors.
FOLD_39 = {
    "ao": "aa", "ax": "ah", "ix": "ih", "el": "l", "en": "n", "zh": "sh",
    "cl": "sil", "vcl": "sil", "epi": "sil",
}

#: The core test set (``testset.doc``): two men and a woman from each dialect
#: region, 24 speakers of the test set, 8 sentences each without the SA ones.
CORE_TEST_SPEAKERS = frozenset({
    "MDAB0", "MWBT0", "FELC0",  # DR1
    "MTAS1", "MWEW0", "FPAS0",  # DR2
    "MJMP0", "MLNT0", "FPKT0",  # DR3
    "MLLL0", "MTLS0", "FJLM0",  # DR4
    "MBPM0", "MKLT0", "FNLP0",  # DR5
    "MCMJ0", "MJDH0", "FMGD0",  # DR6
    "MGRT0", "MNJM0", "FDHC0",  # DR7
    "MJLN0", "MPAM0", "FMLD0",  # DR8
})

#: ``data.timit_dev``: which speakers of the test set are the dev set.
DEV_SETS = {
    "core_test": lambda speaker: speaker.upper() in CORE_TEST_SPEAKERS,
    "test": lambda speaker: True,
    # the 144 others: a dev set for tuning that leaves the core test unseen
    "test_minus_core": lambda speaker: speaker.upper() not in CORE_TEST_SPEAKERS,
}

#: ``data.timit_phones``: the training labels.
PHONE_SETS = (48, 61)


def _folded(mapping, phone):
    return mapping.get(phone, phone)


def score_map_39():
    """Phone -> scored class for the 39-class scoring, from either label set:
    the 61 phones (via the 48) and the 48 (``cl``, ``vcl``, ``sil`` included);
    ``q`` maps to ``None`` (deleted)."""
    mapping = {}
    for phone in PHONES_61:
        folded = _folded(FOLD_48, phone)
        mapping[phone] = None if folded is None else _folded(FOLD_39, folded)
    for phone in set(FOLD_48.values()) - {None}:
        mapping[phone] = _folded(FOLD_39, phone)
    return mapping


def read_phn(path, phones=48):
    """The phone sequence of a ``.PHN`` file, folded to ``phones`` (48: Lee &
    Hon's training set, ``q`` removed; 61: as transcribed). A line that is not
    ``start end phone`` with a TIMIT phone is an error naming ``file:line``."""
    sequence = []
    for number, line in enumerate(Path(path).read_text(encoding="ascii", errors="replace")
                                  .splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or not (fields[0].isdigit() and fields[1].isdigit()):
            raise UserError(f"{path}:{number}: expected 'start end phone', got {line.strip()!r}")
        phone = fields[2].lower()
        if phone not in PHONES_61:
            raise UserError(f"{path}:{number}: {fields[2]!r} is not one of TIMIT's 61 phones")
        folded = phone if phones == 61 else _folded(FOLD_48, phone)
        if folded is not None:
            sequence.append(folded)
    return sequence


def _child(folder, name):
    """The subfolder of ``folder`` called ``name`` in any case, or None."""
    return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == name),
                None)


def _part(root, name):
    """``root``'s ``TRAIN`` or ``TEST`` folder; also found one level down, as
    in copies that keep the CD's ``TIMIT/`` (or a ``data/``) folder."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"TIMIT folder not found: {root}")
    found = _child(root, name)
    inner = sorted(p for p in root.iterdir() if p.is_dir())
    while found is None and inner:
        found = _child(inner.pop(0), name)
    if found is None:
        raise UserError(f"{root}: no {name.upper()} folder (expected a TIMIT tree: "
                        f"TRAIN/DR1/FCJF0/SX127.WAV + .PHN, TEST/...)")
    return found


def _sentences(part):
    """``(speaker, audio, phn)`` of every sentence under ``TRAIN``/``TEST``,
    sorted; a ``.PHN`` file without its audio is an error."""
    regions = (p for p in part.iterdir() if p.is_dir() and p.name.lower().startswith("dr"))
    for region in sorted(regions):
        for speaker in sorted(p for p in region.iterdir() if p.is_dir()):
            files = {p.name.lower(): p for p in speaker.iterdir() if p.is_file()}
            for name in sorted(n for n in files if n.endswith(".phn")):
                audio = files.get(name[:-4] + ".wav")
                if audio is None:
                    raise UserError(f"{files[name]}: no audio file {files[name].stem}.WAV "
                                    f"next to it")
                yield speaker.name, audio, files[name]


def utterances(root, split, dev="core_test", sa=False, phones=48):
    """The utterances of ``split`` in the TIMIT tree at ``root``: train = the
    ``TRAIN`` speakers, dev = the ``TEST`` speakers that ``dev`` chooses (see
    :data:`DEV_SETS`); SA sentences only with ``sa``."""
    if dev not in DEV_SETS:
        raise UserError(f"data.timit_dev must be one of {', '.join(DEV_SETS)}, got {dev!r}")
    if phones not in PHONE_SETS:
        raise UserError(f"data.timit_phones must be 48 or 61, got {phones!r}")
    part = _part(root, "train" if split == "train" else "test")
    chosen = []
    for speaker, audio, phn in _sentences(part):
        wanted = split == "train" or DEV_SETS[dev](speaker)
        if wanted and (sa or not audio.stem.lower().startswith("sa")):
            chosen.append(Utterance(audio, read_phn(phn, phones), split=split, speaker=speaker))
    if not chosen:
        which = "" if split == "train" else f" ({dev} speakers)"
        raise UserError(f"{part}: no {split} sentences{which} with .WAV and .PHN files")
    return chosen
