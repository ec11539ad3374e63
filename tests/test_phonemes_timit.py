"""TIMIT tree reading and 61 -> 48 -> 39 phone folding, on a tiny tree the tests
write (NIST SPHERE and RIFF audio by soundfile, hand-made .PHN files)."""

import numpy as np
import pytest
import soundfile as sf

from apps.phonemes import timit
from apps.phonemes.timit import fold, read_phn, read_timit
from lstm_core.errors import UserError

PHONES = {"sa1": "h# sh iy hv ae dcl d y er h#", "si1027": "h# q ao bcl b pau epi ux h#",
          "sx37": "h# dh ix kcl k ax-h tcl t eng zh h#"}


def write_utterance(folder, sentence, phones, fmt, upper, samples=160 * 3):
    folder.mkdir(parents=True, exist_ok=True)
    name = sentence.upper() if upper else sentence
    wav = ".WAV" if upper else ".wav"
    audio = (np.sin(np.arange(samples) / 7) * 0.3).astype(np.float32)
    sf.write(folder / (name + wav), audio, 16000, format=fmt, subtype="PCM_16")
    lines = [f"{i * 160} {(i + 1) * 160} {p}" for i, p in enumerate(phones.split())]
    (folder / (name + (".PHN" if upper else ".phn"))).write_text("\n".join(lines) + "\n")
    (folder / (name + (".WRD" if upper else ".wrd"))).write_text("0 160 she\n")
    (folder / (name + (".TXT" if upper else ".txt"))).write_text("0 480 She had.\n")


@pytest.fixture
def tree(tmp_path):
    """TRAIN/DR1/FCJF0 in upper case with NIST audio; TEST/dr1/mdab0 (a core
    test speaker) in lower case with RIFF audio; TEST/Dr2/Faks0 (a dev
    speaker) with mixed case and RIFF copies named like SX37.WAV.wav."""
    root = tmp_path / "timit"
    for sentence, phones in PHONES.items():
        write_utterance(root / "TRAIN/DR1/FCJF0", sentence, phones, "NIST", upper=True)
        write_utterance(root / "test/dr1/mdab0", sentence, phones, "WAV", upper=False)
    faks0 = root / "test/Dr2/Faks0"
    write_utterance(faks0, "sx37", PHONES["sx37"], "WAV", upper=True)
    (faks0 / "SX37.WAV").rename(faks0 / "SX37.WAV.wav")
    return root


def test_train_split_excludes_sa_and_reads_nist(tree):
    utterances = read_timit(tree, "train")
    assert [u.id for u in utterances] == ["fcjf0_si1027", "fcjf0_sx37"]
    first = utterances[0]
    assert first.phones == PHONES["si1027"].split()
    assert (first.speaker, first.dialect) == ("fcjf0", "dr1")
    assert first.audio == tree / "TRAIN/DR1/FCJF0/SI1027.WAV"
    audio, rate = sf.read(first.audio)
    assert sf.info(first.audio).format == "NIST" and rate == 16000 and audio.shape == (480,)
    with_sa = read_timit(tree, "train", include_sa=True)
    assert [u.id for u in with_sa] == ["fcjf0_sa1", "fcjf0_si1027", "fcjf0_sx37"]


def test_test_split_case_insensitive_riff_and_core_set(tree):
    everyone = read_timit(tree, "test")
    assert [u.id for u in everyone] == ["mdab0_si1027", "mdab0_sx37", "faks0_sx37"]
    assert everyone[2].audio.name == "SX37.WAV.wav" and everyone[2].dialect == "dr2"
    for utterance in everyone:
        assert sf.info(utterance.audio).format == "WAV"
        assert sf.read(utterance.audio)[0].shape == (480,)
    core = read_timit(tree, "test", core_test=True)
    assert {u.speaker for u in core} == {"mdab0"}
    dev = read_timit(tree, "dev")
    assert [u.id for u in dev] == ["faks0_sx37"]


def test_root_may_hold_the_tree_one_level_down(tree):
    assert len(read_timit(tree.parent, "train")) == 2


def test_standard_speaker_lists():
    assert len(timit.CORE_TEST_SPEAKERS) == 24 and len(timit.DEV_SPEAKERS) == 50
    assert not timit.CORE_TEST_SPEAKERS & timit.DEV_SPEAKERS
    # The core set is 2 men and 1 woman from each of the 8 dialect regions.
    assert sum(s.startswith("f") for s in timit.CORE_TEST_SPEAKERS) == 8


def test_inventories():
    assert (len(timit.PHONES_61), len(timit.PHONES_48), len(timit.PHONES_39)) == (61, 48, 39)
    assert {"h#", "pau", "epi", "q", "ax-h", "bcl", "eng"} <= set(timit.PHONES_61)
    assert {"cl", "vcl", "sil", "epi"} <= set(timit.PHONES_48)
    assert not {"q", "h#", "pau", "cl", "vcl", "epi", "ao", "zh"} & set(timit.PHONES_39)
    assert set(fold(timit.PHONES_61, 48)) == set(timit.PHONES_48)
    assert set(fold(timit.PHONES_61, 39)) == set(timit.PHONES_39)


@pytest.mark.parametrize("phone, to48, to39", [
    ("ao", "ao", "aa"), ("h#", "sil", "sil"), ("pau", "sil", "sil"), ("epi", "epi", "sil"),
    ("bcl", "vcl", "sil"), ("dcl", "vcl", "sil"), ("gcl", "vcl", "sil"),
    ("pcl", "cl", "sil"), ("tcl", "cl", "sil"), ("kcl", "cl", "sil"),
    ("ax-h", "ax", "ah"), ("ax", "ax", "ah"), ("axr", "er", "er"), ("ix", "ix", "ih"),
    ("el", "el", "l"), ("em", "m", "m"), ("en", "en", "n"), ("nx", "n", "n"),
    ("eng", "ng", "ng"), ("hv", "hh", "hh"), ("ux", "uw", "uw"), ("zh", "zh", "sh"),
    ("dx", "dx", "dx"), ("iy", "iy", "iy"),
])
def test_fold_hand_checked(phone, to48, to39):
    assert fold([phone], 48) == [to48]
    assert fold([phone], 39) == [to39]
    assert fold([to48], 39) == [to39]  # a 48-set prediction scores the same


def test_fold_deletes_q_and_keeps_order():
    phones = PHONES["si1027"].split()
    assert fold(phones, 48) == ["sil", "ao", "vcl", "b", "sil", "epi", "uw", "sil"]
    assert fold(phones, 39) == ["sil", "aa", "sil", "b", "sil", "sil", "uw", "sil"]
    assert fold(fold(phones, 48), 48) == fold(phones, 48)
    assert fold(fold(phones, 39), 39) == fold(phones, 39)


def test_fold_errors():
    with pytest.raises(UserError, match="x.PHN: unknown TIMIT phone 'xx'"):
        fold(["aa", "xx"], 39, where="x.PHN")
    with pytest.raises(UserError, match="48 or 39"):
        fold(["aa"], 61)


def test_missing_phn_names_the_file(tree):
    (tree / "TRAIN/DR1/FCJF0/SX37.PHN").unlink()
    with pytest.raises(UserError, match=r"SX37\.WAV: transcription .*SX37\.PHN not found"):
        read_timit(tree, "train")
    read_timit(tree, "test")  # the other split is unaffected


@pytest.mark.parametrize("line, message", [
    ("0 160", "expected 'start end phone'"), ("a 160 aa", "expected 'start end phone'"),
    ("0 160 AA", "unknown TIMIT phone 'AA'")])
def test_malformed_phn_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "SI1.PHN"
    path.write_text(f"0 160 h#\n{line}\n")
    with pytest.raises(UserError, match=f"{path}:2: {message}"):
        read_phn(path)
    path.write_text("\n")
    with pytest.raises(UserError, match="empty TIMIT transcription"):
        read_phn(path)


def test_bad_arguments_and_layout(tree, tmp_path):
    with pytest.raises(UserError, match="split must be one of"):
        read_timit(tree, "valid")
    with pytest.raises(UserError, match="core_test applies to the test split"):
        read_timit(tree, "train", core_test=True)
    with pytest.raises(UserError, match="TIMIT root not found"):
        read_timit(tmp_path / "nope", "train")
    with pytest.raises(UserError, match="no TRAIN directory"):
        read_timit(tree / "TRAIN", "train")
    (tmp_path / "empty/TRAIN/DR1/FCJF0").mkdir(parents=True)
    with pytest.raises(UserError, match="no TIMIT utterances"):
        read_timit(tmp_path / "empty", "train")
