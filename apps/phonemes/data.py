"""Reading phoneme-transcribed audio: manifests, audio files, the phone
inventory and the train/dev selection."""

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstm_core.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".sph", ".aiff", ".aif")
BAD_AUDIO = ("skip", "fail")


@dataclass
class Utterance:
    path: Path
    phonemes: list  # symbols, any Unicode strings
    split: str | None = None
    speaker: str | None = None


@dataclass
class Skipped:
    """Utterances left out for bad audio, with the reason for each."""
    reasons: list = field(default_factory=list)

    def __len__(self):
        return len(self.reasons)


def read_manifest(path):
    """Utterances of a TSV (or ``.csv``) manifest with a header: ``path``
    (relative to the manifest's folder, or absolute), ``phonemes``
    (space-separated symbols) and optional ``split`` and ``speaker``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}")
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        missing = [c for c in ("path", "phonemes") if c not in columns]
        if missing:
            raise UserError(f"{path}: no {' or '.join(missing)} column in the header "
                            f"(found: {', '.join(columns) or 'nothing'})")
        utterances = []
        for number, row in enumerate(reader, 2):
            if not (row.get("path") or "").strip():
                raise UserError(f"{path}:{number}: empty path")
            utterances.append(Utterance(
                path=path.parent / row["path"].strip(),
                phonemes=(row.get("phonemes") or "").split(),
                split=(row.get("split") or "").strip() or None,
                speaker=(row.get("speaker") or "").strip() or None))
    return utterances


def select(utterances, manifest, split=None, speakers=None, exclude_speakers=None):
    """The utterances of ``split`` (if given), of ``speakers`` (if given),
    and not of ``exclude_speakers``; a column the choice needs must exist."""
    if split is not None and any(u.split is None for u in utterances):
        raise UserError(f"{manifest}: a split is chosen but some rows have no 'split' value")
    if (speakers or exclude_speakers) and any(u.speaker is None for u in utterances):
        raise UserError(f"{manifest}: speakers are chosen but some rows have no 'speaker' value")
    chosen = [u for u in utterances
              if (split is None or u.split == split)
              and (not speakers or u.speaker in speakers)
              and not (exclude_speakers and u.speaker in exclude_speakers)]
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


def load_audio(path, sample_rate):
    """Mono float32 samples of ``path`` at ``sample_rate`` (resampled if the
    file has another rate). A missing, unreadable or empty file is a
    :class:`UserError` naming it."""
    import librosa
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file not found: {path}")
    _check_wav_length(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile's errors have no common type
        raise UserError(f"{path}: cannot read audio ({error})") from None
    samples = samples.mean(axis=1)
    if samples.size == 0:
        raise UserError(f"{path}: no audio samples (empty or truncated file)")
    if not np.all(np.isfinite(samples)):
        raise UserError(f"{path}: audio has NaN or infinite samples")
    if rate != sample_rate:
        # Polyphase filtering (scipy): librosa's default, soxr, is not a dependency.
        samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate,
                                   res_type="polyphase")
    return samples.astype("float32")


def load_utterances(utterances, sample_rate, bad_audio="fail"):
    """``(waveforms, kept utterances, skipped)``; a bad file raises, or with
    ``bad_audio="skip"`` is left out and recorded in ``skipped``."""
    if bad_audio not in BAD_AUDIO:
        raise UserError(f"data.bad_audio must be one of {', '.join(BAD_AUDIO)}, got {bad_audio!r}")
    waveforms, kept, skipped = [], [], Skipped()
    for utterance in utterances:
        try:
            waveforms.append(load_audio(utterance.path, sample_rate))
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
