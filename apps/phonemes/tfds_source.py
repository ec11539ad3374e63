"""tensorflow-datasets audio sets as a data source: read from a folder where
tfds has prepared them (never downloaded at run time, so a run cannot stall
or change under its recipe), their labels turned into words for a lexicon.

``spoken_digit`` is the Free Spoken Digit Dataset: 8 kHz recordings of the
digits 0-9 by a few speakers, with a ``label`` and the original file name
(``7_jackson_32.wav``: digit, speaker, take) as ``audio/filename``. It has
only a train split, so the recipe carves out dev, by speaker or by share.
"""

from pathlib import Path

import numpy as np

from apps.phonemes.data import Utterance
from lstm_core.errors import UserError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: CMUdict's pronunciations of the ten digit words, shipped so that a digits
#: recipe needs no lexicon of its own.
DIGITS_LEXICON = Path(__file__).with_name("digits.dict")


def _spoken_digit(example):
    """``(words, speaker)`` of a ``spoken_digit`` example."""
    speaker = Path(example["audio/filename"].decode()).stem.split("_")
    return DIGIT_WORDS[int(example["label"])], speaker[1] if len(speaker) == 3 else None


#: The sets a recipe may name in ``data.tfds``: how to get words and speaker.
DATASETS = {"spoken_digit": _spoken_digit}


def _prepare_hint(name, data_dir):
    return (f"prepare it once, with network access: python -c \"import tensorflow_datasets "
            f"as tfds; tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare()\"")


def read(name, data_dir):
    """Every example of ``name``'s train split in tfds's (fixed) order, as
    utterances holding their audio (float32 in [-1, 1)) and words."""
    import tensorflow_datasets as tfds

    if name not in DATASETS:
        raise UserError(f"data.tfds must be one of {', '.join(DATASETS)}, got {name!r}")
    if data_dir is None:
        raise UserError(f"data.tfds_data_dir is not set: the folder where tfds prepared {name}")
    try:
        dataset, info = tfds.load(name, split="train", data_dir=str(data_dir), download=False,
                                  with_info=True)
    except AssertionError:  # tfds's way of saying the data is not there
        raise UserError(f"{data_dir}: tensorflow-datasets {name!r} is not prepared there; "
                        + _prepare_hint(name, data_dir)) from None
    rate = int(info.features["audio"].sample_rate)
    utterances = []
    for example in tfds.as_numpy(dataset):
        filename = example["audio/filename"].decode()
        words, speaker = DATASETS[name](example)
        audio = example["audio"]
        if np.issubdtype(audio.dtype, np.integer):  # 16-bit PCM values, held as int16 or int64
            audio = audio / 32768.0
        utterances.append(Utterance(Path(name) / filename, [], speaker=speaker, text=words,
                                    origin=f"{name}:{filename}",
                                    samples=audio.astype("float32"), rate=rate))
    if not utterances:
        raise UserError(f"{data_dir}: tensorflow-datasets {name!r} has no examples")
    return utterances


def split(utterances, which, name, dev_speakers=(), dev_percent=0):
    """The ``which`` (train/dev) part of the one split: dev is the
    ``dev_speakers`` (then left out of train), or else the last
    ``dev_percent`` % of the examples in tfds's order."""
    if bool(dev_speakers) == bool(dev_percent):
        raise UserError(f"data.tfds: {name} has only a train split: choose dev with either "
                        f"data.dev_speakers or data.tfds_dev_percent"
                        + (", not both" if dev_speakers else ""))
    if dev_speakers:
        unknown = [u.origin for u in utterances if u.speaker is None]
        if unknown:
            raise UserError(f"{unknown[0]}: no speaker in the file name, so data.dev_speakers "
                            f"cannot choose dev")
        dev = set(dev_speakers)
        return [u for u in utterances if (u.speaker in dev) == (which == "dev")]
    cut = len(utterances) - round(len(utterances) * dev_percent / 100)
    return utterances[cut:] if which == "dev" else utterances[:cut]
