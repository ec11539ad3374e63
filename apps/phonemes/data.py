"""Reading phoneme-transcribed audio: manifests, audio files, word
transcripts through a lexicon, the train/dev selection and phone maps."""

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from apps.phonemes.lexicon import transcribe_all
from lstm_core.errors import UserError, not_utf8

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".sph", ".aiff", ".aif")
BAD_AUDIO = ("skip", "fail")


@dataclass
class Utterance:
    path: Path
    phonemes: list  # symbols, any Unicode strings
    split: str | None = None
    speaker: str | None = None
    text: str | None = None  # words, transcribed through a lexicon when phonemes is empty
    origin: str | None = None  # where it was read: "manifest.tsv:7"
    # audio already in memory (tensorflow-datasets) at ``rate``; else read from path
    samples: np.ndarray | None = field(default=None, compare=False, repr=False)
    rate: int | None = None


@dataclass
class Skipped:
    """Utterances left out for bad audio, with the reason for each."""
    reasons: list = field(default_factory=list)

    def __len__(self):
        return len(self.reasons)


def read_manifest(path, data_root=None):
    """Utterances of a TSV (or ``.csv``) manifest with a header: ``path``
    (relative to the manifest's folder, or absolute), ``phonemes``
    (space-separated symbols) and/or ``text`` (words, for a lexicon to
    transcribe where ``phonemes`` is empty), and optional ``split`` and
    ``speaker``. A TSV has no quoting (a ``"`` is text, as in LJSpeech's
    sentences); a CSV has the csv module's standard quoting.

    A manifest under ``data_root`` must not lead out of it with a relative
    path (``../x.wav``): the data root moves as one tree (a run finds its
    data under a new root), and a path out of it would then name another
    file or none. Audio elsewhere is named by an absolute path, as a recipe
    names data outside the root."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}")
    csv_file = path.suffix.lower() == ".csv"
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="," if csv_file else "\t",
                                quoting=csv.QUOTE_MINIMAL if csv_file else csv.QUOTE_NONE)
        try:
            return _utterances(reader, path, data_root if _within(path, data_root) else None)
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except csv.Error as error:  # a field past the csv module's limit, say
            raise UserError(f"{path}:{reader.reader.line_num}: {error}") from None


def _within(path, folder):
    """Whether ``path`` is ``folder`` or under it, by their names (a data
    root may hold symbolic links to corpora stored elsewhere)."""
    if folder is None:
        return False
    path, folder = (Path(os.path.normpath(os.path.abspath(p))) for p in (path, folder))
    return path.is_relative_to(folder)


def _utterances(reader, path, data_root):
    """The rows of a manifest's ``csv.DictReader`` as utterances."""
    columns = reader.fieldnames or []
    missing = ([] if "path" in columns else ["path"]) + (
        [] if {"phonemes", "text"} & set(columns) else ["phonemes or text"])
    if missing:
        raise UserError(f"{path}: no {' or '.join(missing)} column in the header "
                        f"(found: {', '.join(columns) or 'nothing'})")
    utterances = []
    for number, row in enumerate(reader, 2):
        name = (row.get("path") or "").strip()
        if not name:
            raise UserError(f"{path}:{number}: empty path")
        if any("\n" in value for value in row.values() if isinstance(value, str)):
            raise UserError(f"{path}:{number}: a field runs over several lines (a quote that "
                            f"is never closed?)")
        if data_root is not None and not (Path(name).is_absolute()
                                          or _within(path.parent / name, data_root)):
            raise UserError(f"{path}:{number}: {name} is outside the data root {data_root}; "
                            f"name audio outside it by an absolute path")
        utterances.append(Utterance(
            path=path.parent / name,
            phonemes=(row.get("phonemes") or "").split(),
            split=(row.get("split") or "").strip() or None,
            speaker=(row.get("speaker") or "").strip() or None,
            text=row.get("text"),
            origin=f"{path}:{number}"))
    return utterances


def with_phonemes(utterances, lexicon, missing_words="fail", lexicon_name="the lexicon"):
    """``(utterances, report)``: those without phonemes but with a text get
    the text's phonemes from ``lexicon`` (``{word: phonemes}``). An utterance
    with words the lexicon lacks fails (naming its origin and the word) or,
    with ``missing_words="skip"``, is left out and counted in ``report``
    ("" when nothing was missing)."""
    def needs_lexicon(utterance):
        return not utterance.phonemes and (utterance.text or "").strip()

    needed = [u for u in utterances if needs_lexicon(u)]
    if not needed:
        return utterances, ""
    if lexicon is None:
        raise UserError(f"{needed[0].origin or needed[0].path}: no phonemes, and no lexicon "
                        f"(data.lexicon) to transcribe its text")
    phonemes, report = transcribe_all([u.text for u in needed],
                                      [u.origin or str(u.path) for u in needed],
                                      lexicon, missing_words, lexicon_name)
    found = iter(phonemes)
    out = [replace(u, phonemes=next(found)) if needs_lexicon(u) else u for u in utterances]
    return [u for u in out if u.phonemes is not None], report


def select(utterances, manifest, split=None, speakers=None, exclude_speakers=None, paths=None,
           exclude_paths=None):
    """The utterances of ``split`` (if given), of ``speakers`` (if given),
    and not of ``exclude_speakers``, whose audio path (as a POSIX string) a
    compiled regular expression ``paths`` finds (if given) and
    ``exclude_paths`` does not; a column the choice needs must exist."""
    if split is not None and any(u.split is None for u in utterances):
        raise UserError(f"{manifest}: a split is chosen but some rows have no 'split' value")
    if (speakers or exclude_speakers) and any(u.speaker is None for u in utterances):
        raise UserError(f"{manifest}: speakers are chosen but some rows have no 'speaker' value")
    chosen = [u for u in utterances
              if (split is None or u.split == split)
              and (not speakers or u.speaker in speakers)
              and not (exclude_speakers and u.speaker in exclude_speakers)
              and (paths is None or paths.search(u.path.as_posix()))
              and not (exclude_paths and exclude_paths.search(u.path.as_posix()))]
    return chosen


def _check_wav_length(path):
    """A RIFF WAV whose data chunk is shorter than its header says is
    truncated: libsndfile would read what is there without a word."""
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        size = path.stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            declared = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                present = size - f.tell()
                # 0 and 0xFFFFFFFF: written by streaming encoders that never knew the size.
                if declared not in (0, 0xFFFFFFFF) and present < declared:
                    raise UserError(f"{path}: truncated audio (the header says {declared} bytes "
                                    f"of samples, the file holds {present})")
                return
            f.seek(declared + declared % 2, 1)  # chunks are padded to even sizes


def _check_sphere(path):
    """A NIST SPHERE file compressed with shorten (as on the original TIMIT
    and WSJ discs) is one libsndfile cannot read; say so, and how to fix it."""
    with open(path, "rb") as f:
        if f.read(8) != b"NIST_1A\n":
            return
        header = f.read(1016)
    for line in header.split(b"end_head")[0].decode("ascii", "replace").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == "sample_coding" and "shorten" in fields[2]:
            raise UserError(f"{path}: NIST SPHERE audio compressed with shorten ({fields[2]}), "
                            f"which libsndfile cannot read; decompress it first, e.g. with "
                            f"sph2pipe -f wav")


def load_audio(path, sample_rate):
    """Mono float32 samples of ``path`` at ``sample_rate`` (resampled if the
    file has another rate). A missing, unreadable or empty file is a
    :class:`UserError` naming it."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file not found: {path}")
    if path.stat().st_size == 0:  # libsndfile would call it a format it does not know
        raise UserError(f"{path}: empty file, no audio")
    _check_wav_length(path)
    _check_sphere(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile's errors have no common type
        raise UserError(f"{path}: cannot read audio ({error})") from None
    return _checked(samples.mean(axis=1), rate, sample_rate, path)


def _checked(samples, rate, sample_rate, where):
    """``samples`` at ``sample_rate``, once known not empty and finite."""
    import librosa

    if samples.size == 0:
        raise UserError(f"{where}: no audio samples (empty or truncated file)")
    if not np.all(np.isfinite(samples)):
        raise UserError(f"{where}: audio has NaN or infinite samples")
    if rate != sample_rate:
        # Polyphase filtering (scipy): librosa's default, soxr, is not a dependency.
        samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate,
                                   res_type="polyphase")
    return samples.astype("float32")


def utterance_audio(utterance, sample_rate):
    """The samples of ``utterance`` at ``sample_rate``: those it holds, or its file's."""
    if utterance.samples is None:
        if utterance.origin and not utterance.path.is_file():  # name the row to fix
            raise UserError(f"{utterance.origin}: audio file not found: {utterance.path}")
        return load_audio(utterance.path, sample_rate)
    return _checked(np.asarray(utterance.samples, "float32"), utterance.rate, sample_rate,
                    utterance.origin or utterance.path)


def load_utterances(utterances, sample_rate, bad_audio="fail"):
    """``(waveforms, kept utterances, skipped)``; a bad file raises, or with
    ``bad_audio="skip"`` is left out and recorded in ``skipped``."""
    if bad_audio not in BAD_AUDIO:
        raise UserError(f"data.bad_audio must be one of {', '.join(BAD_AUDIO)}, got {bad_audio!r}")
    waveforms, kept, skipped = [], [], Skipped()
    for utterance in utterances:
        try:
            waveforms.append(utterance_audio(utterance, sample_rate))
        except UserError as error:
            if bad_audio == "fail":
                raise
            skipped.reasons.append(str(error))
            continue
        kept.append(utterance)
    return waveforms, kept, skipped


def audio_inputs(path):
    """Utterances to transcribe from ``path``: an audio file, a folder
    (its audio files, recursively, sorted) or a manifest (``.tsv``/``.csv``;
    its ``phonemes`` column may be empty)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise UserError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
        return [Utterance(p, []) for p in files]
    if not path.exists():
        raise UserError(f"input not found: {path}")
    if path.suffix.lower() in (".tsv", ".csv"):
        return read_manifest(path)
    return [Utterance(path, [])]


def pad_batch(waveforms):
    """Zero-padded ``[batch, samples]`` float32 and int32 lengths."""
    lengths = np.asarray([len(w) for w in waveforms], "int32")
    out = np.zeros((len(waveforms), max(int(lengths.max(initial=0)), 1)), "float32")
    for row, waveform in enumerate(waveforms):
        out[row, :len(waveform)] = waveform
    return out, lengths


def read_phone_map(path):
    """``{phone: scored phone or None}`` of a TSV file of ``phone<TAB>scored``
    lines (``#`` comments and blank lines ignored); a phone with no second
    field, or an empty one, is deleted before scoring."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"phone map not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    mapping = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) > 2 or not fields[0] or " " in fields[0] + fields[-1]:
            raise UserError(f"{path}:{number}: expected 'phone<TAB>scored phone' (or a phone "
                            f"alone, to delete it), got {line!r}")
        mapping[fields[0]] = fields[1] if len(fields) == 2 and fields[1] else None
    return mapping


def fold(phonemes, mapping):
    """``phonemes`` through ``mapping`` (phones it lacks unchanged; those it
    maps to None deleted)."""
    folded = (mapping.get(p, p) for p in phonemes)
    return [p for p in folded if p is not None]
