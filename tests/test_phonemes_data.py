"""The phonemes app's data sources, on tiny data the tests write: manifests
(quoting, word transcripts through a lexicon, missing words), a TIMIT-layout
tree (SPHERE and RIFF audio, SA sentences, the core test set, the 61/48/39
foldings), tensorflow-datasets ``spoken_digit`` (mocked, offline) and the
phone folding applied when scoring."""

import numpy as np
import pytest
import soundfile

from apps.phonemes import data as audio_data
from apps.phonemes import timit, tfds_source
from apps.phonemes.app import PhonemeApp
from lstm_core.errors import UserError

LEXICON = """\
;;; a CMUdict-format lexicon
HELLO  HH AH0 L OW1
WORLD  W ER1 L D
DON'T  D OW1 N T
STOP  S T AA1 P
"""


def config_for(**data):
    app = PhonemeApp()
    defaults = {key: spec.default for key, spec in app.data_schema.items()}
    return app, {"data": {**defaults, **data}}


def tone(seconds=0.05, rate=16000, pitch=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * pitch * t)).astype("float32")


# -- manifests ----------------------------------------------------------------


def test_tsv_manifests_have_no_quoting_and_csv_keeps_it(tmp_path):
    # LJSpeech-style text: quotes are characters. With csv's default quoting
    # the unbalanced one would swallow the next row.
    (tmp_path / "m.tsv").write_text(
        'path\ttext\tphonemes\n'
        '1.wav\t"Hi," she said.\ta\n'
        '2.wav\t"unbalanced\tb\n'
        '3.wav\tsay "no"\ta b\n', encoding="utf-8")
    rows = audio_data.read_manifest(tmp_path / "m.tsv")
    assert [r.text for r in rows] == ['"Hi," she said.', '"unbalanced', 'say "no"']
    assert [r.phonemes for r in rows] == [["a"], ["b"], ["a", "b"]]
    assert [r.origin for r in rows] == [f"{tmp_path / 'm.tsv'}:{n}" for n in (2, 3, 4)]
    (tmp_path / "m.csv").write_text('path,text,phonemes\n1.wav,"Hello, ""world""",a\n',
                                    encoding="utf-8")
    (row,) = audio_data.read_manifest(tmp_path / "m.csv")
    assert (row.text, row.phonemes) == ('Hello, "world"', ["a"])


def write_text_corpus(root):
    """Four utterances with word transcripts (one also with phonemes), a
    lexicon, and the audio files."""
    for index in range(4):
        soundfile.write(root / f"{index}.wav", tone(), 16000)
    (root / "lex.dict").write_text(LEXICON, encoding="utf-8")
    (root / "m.tsv").write_text(
        "path\tspeaker\ttext\tphonemes\n"
        "0.wav\tann\tHello, WORLD!\t\n"
        "1.wav\tann\t\u201cDon\u2019t stop\u201d\t\n"
        "2.wav\tbob\thello zorp blick zorp\t\n"
        "3.wav\tbob\tzorp\tx y\n", encoding="utf-8")   # phonemes win over text


def test_text_is_transcribed_through_the_lexicon(tmp_path, capsys):
    write_text_corpus(tmp_path)
    app, config = config_for(train_manifest=str(tmp_path / "m.tsv"), dev_speakers=["bob"],
                             lexicon=str(tmp_path / "lex.dict"), missing_words="skip")
    train = app.utterances(config, "train")
    assert [u.phonemes for u in train] == [["HH", "AH", "L", "OW", "W", "ER", "L", "D"],
                                           ["D", "OW", "N", "T", "S", "T", "AA", "P"]]
    assert capsys.readouterr().err == ""
    dev = app.utterances(config, "dev")
    assert [(u.path.name, u.phonemes) for u in dev] == [("3.wav", ["x", "y"])]
    report = capsys.readouterr().err
    assert report.startswith("dev data: skipped 1 utterance with words missing from ")
    assert "lex.dict: zorp (2), blick (1) (first: " in report and "m.tsv:4)" in report
    # stress kept when asked
    app, config = config_for(train_manifest=str(tmp_path / "m.tsv"), dev_speakers=["bob"],
                             lexicon=str(tmp_path / "lex.dict"), strip_stress=False)
    assert app.utterances(config, "train")[0].phonemes[:4] == ["HH", "AH0", "L", "OW1"]
    # the audio of transcribed utterances reads as any other
    waveforms, kept, skipped = app.audio(config, train, "train")
    assert len(kept) == 2 and not skipped


def test_missing_words_fail_naming_manifest_line_and_word(tmp_path):
    write_text_corpus(tmp_path)
    app, config = config_for(train_manifest=str(tmp_path / "m.tsv"), dev_speakers=["bob"],
                             lexicon=str(tmp_path / "lex.dict"))  # missing_words: fail
    with pytest.raises(UserError, match=r"m\.tsv:4: 'zorp' is not in .*lex\.dict "
                                        r"\(words missing in 1 utterance: zorp \(2\)"):
        app.utterances(config, "dev")
    app, config = config_for(train_manifest=str(tmp_path / "m.tsv"))
    with pytest.raises(UserError, match=r"m\.tsv:2: no phonemes, and no lexicon"):
        app.utterances(config, "train")


def test_one_data_source(tmp_path):
    app, config = config_for()
    with pytest.raises(UserError, match="set exactly one of data.train_manifest, "
                                        "data.timit_root, data.tfds$"):
        app.utterances(config, "train")
    app, config = config_for(train_manifest="m.tsv", timit_root="timit")
    with pytest.raises(UserError, match=r"\(found train_manifest, timit_root\)"):
        app.utterances(config, "train")


# -- TIMIT ----------------------------------------------------------------------

# Short .PHN transcriptions: every one of them folds somewhere interesting.
SENTENCES = {
    "SA1": "h# sh iy hv ae dcl d h#",
    "SX127": "h# q ux pcl p ax-h tcl t bcl b h#",
    "SI648": "h# dh ix n eng kcl k el pau gcl g h#",
}


def write_sentence(folder, name, phones, audio_format):
    """``name``.WAV (``audio_format``: NIST or WAV) and ``name``.PHN with
    sample ranges, 160 samples a phone; names in the folder's case."""
    folder.mkdir(parents=True, exist_ok=True)
    lower = folder.name.islower()
    phones = phones.split()
    samples = np.concatenate([tone(0.01, pitch=200.0 + 50 * i) for i in range(len(phones))])
    stem = name.lower() if lower else name
    soundfile.write(folder / f"{stem}.{'wav' if lower else 'WAV'}", samples, 16000,
                    format=audio_format, subtype="PCM_16")
    lines = [f"{160 * i} {160 * (i + 1)} {p}" for i, p in enumerate(phones)]
    (folder / f"{stem}.{'phn' if lower else 'PHN'}").write_text("\n".join(lines) + "\n")
    return samples


@pytest.fixture(scope="module")
def timit_tree(tmp_path_factory):
    """TRAIN in upper case with NIST SPHERE audio, test in lower case with
    RIFF audio; one core test speaker (MDAB0) and one other (MREB0)."""
    root = tmp_path_factory.mktemp("timit")
    for speaker in ("TRAIN/DR1/FCJF0", "TRAIN/DR2/MDAC0"):
        for name, phones in SENTENCES.items():
            write_sentence(root / speaker, name, phones, "NIST")
    for speaker in ("test/dr1/mdab0", "test/dr1/mreb0"):
        for name, phones in SENTENCES.items():
            write_sentence(root / speaker, name, phones, "WAV")
    return root


def test_timit_folding_tables():
    assert len(timit.PHONES_61) == len(set(timit.PHONES_61)) == 61
    folded_48 = {timit.FOLD_48.get(p, p) for p in timit.PHONES_61} - {None}
    assert len(folded_48) == 48
    classes_39 = set(timit.score_map_39().values()) - {None}
    assert {timit.FOLD_39.get(p, p) for p in folded_48} == classes_39 and len(classes_39) == 39
    for phone, expected in {"ux": "uw", "ax-h": "ax", "pcl": "cl", "tcl": "cl", "kcl": "cl",
                            "bcl": "vcl", "dcl": "vcl", "gcl": "vcl", "h#": "sil", "pau": "sil",
                            "q": None, "iy": "iy", "epi": "epi"}.items():
        assert timit.FOLD_48.get(phone, phone) == expected, phone
    scored = timit.score_map_39()
    for phone, expected in {"ao": "aa", "zh": "sh", "ix": "ih", "ax": "ah", "el": "l", "en": "n",
                            "nx": "n", "eng": "ng", "em": "m", "cl": "sil", "vcl": "sil",
                            "epi": "sil", "ax-h": "ah", "pcl": "sil", "q": None}.items():
        assert scored[phone] == expected, phone
    assert len(timit.CORE_TEST_SPEAKERS) == 24


def test_timit_tree_train_and_dev(timit_tree):
    app, config = config_for(timit_root=str(timit_tree))
    train = app.utterances(config, "train")
    assert [(u.speaker, u.path.name) for u in train] == [
        ("FCJF0", "SI648.WAV"), ("FCJF0", "SX127.WAV"),
        ("MDAC0", "SI648.WAV"), ("MDAC0", "SX127.WAV")]  # no SA sentences
    assert train[0].phonemes == "sil dh ix n ng cl k el sil vcl g sil".split()
    assert train[1].phonemes == "sil uw cl p ax cl t vcl b sil".split()  # q removed
    dev = app.utterances(config, "dev")  # the core test set
    assert {(u.speaker, u.path.name) for u in dev} == {("mdab0", "si648.wav"),
                                                      ("mdab0", "sx127.wav")}
    for dev_set, speakers in (("test", {"mdab0", "mreb0"}), ("test_minus_core", {"mreb0"})):
        app, config = config_for(timit_root=str(timit_tree), timit_dev=dev_set)
        assert {u.speaker for u in app.utterances(config, "dev")} == speakers
    app, config = config_for(timit_root=str(timit_tree), timit_sa=True, timit_phones=61)
    train = app.utterances(config, "train")
    assert len(train) == 6 and train[0].path.name == "SA1.WAV"
    assert train[2].phonemes == SENTENCES["SX127"].split()  # 61 phones, as transcribed


def test_timit_sphere_and_riff_audio_read_the_same(timit_tree, tmp_path):
    app, config = config_for(timit_root=str(timit_tree))
    expected = write_sentence(tmp_path, "SX127", SENTENCES["SX127"], "WAV")
    for utterance in (app.utterances(config, "train")[1], app.utterances(config, "dev")[1]):
        assert utterance.path.name.lower() == "sx127.wav"
        np.testing.assert_allclose(audio_data.load_audio(utterance.path, 16000), expected,
                                   atol=1e-4)
    assert (timit_tree / "TRAIN/DR1/FCJF0/SX127.WAV").read_bytes()[:8] == b"NIST_1A\n"


def test_shortened_sphere_is_named(tmp_path):
    soundfile.write(tmp_path / "SX1.WAV", tone(), 16000, format="NIST", subtype="PCM_16")
    data = (tmp_path / "SX1.WAV").read_bytes()
    header = data[:1024].replace(b"sample_coding -s3 pcm",
                                 b"sample_coding -s26 pcm,embedded-shorten-v2.00")
    (tmp_path / "SX1.WAV").write_bytes(header[:1024] + data[1024:1200])
    with pytest.raises(UserError, match=r"SX1\.WAV: NIST SPHERE audio compressed with shorten"):
        audio_data.load_audio(tmp_path / "SX1.WAV", 16000)


def test_timit_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="no TRAIN folder"):
        timit.utterances(tmp_path, "train")
    folder = tmp_path / "TIMIT" / "TRAIN" / "DR1" / "FAKS0"  # found one level down
    write_sentence(folder, "SX1", "h# b h#", "WAV")
    assert len(timit.utterances(tmp_path, "train")) == 1
    (folder / "SX1.PHN").write_text("0 160 h#\n160 320 zz\n")
    with pytest.raises(UserError, match=r"SX1\.PHN:2: 'zz' is not one of TIMIT's 61 phones"):
        timit.utterances(tmp_path, "train")
    (folder / "SX1.PHN").write_text("0 160\n")
    with pytest.raises(UserError, match=r"SX1\.PHN:1: expected 'start end phone'"):
        timit.utterances(tmp_path, "train")
    (folder / "SX1.WAV").unlink()
    with pytest.raises(UserError, match=r"SX1\.PHN: no audio file"):
        timit.utterances(tmp_path, "train")


# -- scoring after a phone map ----------------------------------------------------


class FixedServing:
    """Stands in for the model: transcribes each utterance as told."""

    def __init__(self, hypotheses):
        self.hypotheses = hypotheses

    def transcribe(self, waveforms):
        assert len(waveforms) == len(self.hypotheses)
        return self.hypotheses


def score(tmp_path, hypotheses, **data):
    app, config = config_for(**data)
    config["decode"] = {"beam_width": 1}
    app.serving = lambda model, config, assets, beam: FixedServing(hypotheses)
    return app.evaluate(None, config, tmp_path, {"sample_rate": 16000},
                        path=tmp_path / "m.tsv", final=False)


def test_evaluate_scores_after_the_phone_map(tmp_path):
    for index in range(2):
        soundfile.write(tmp_path / f"{index}.wav", tone(), 16000)
    (tmp_path / "m.tsv").write_text("path\tphonemes\n0.wav\tsil aa sh ih q\n"
                                    "1.wav\tcl n ah\n")
    hypotheses = [["sil", "ao", "zh", "ix"], ["vcl", "epi", "en", "ax", "b"]]
    plain = score(tmp_path, hypotheses)
    assert (plain["substitutions"], plain["deletions"], plain["insertions"],
            plain["reference_length"]) == (6, 1, 2, 8)
    folded = score(tmp_path, hypotheses, score_map="timit39")
    # sil aa sh ih | sil n ah  vs  sil aa sh ih | sil sil n ah b: two insertions
    assert (folded["substitutions"], folded["deletions"], folded["insertions"],
            folded["reference_length"]) == (0, 0, 2, 7)
    assert folded["per"] == pytest.approx(100 * 2 / 7)
    (tmp_path / "map.tsv").write_text("# phone -> scored\nao\taa\nzh\tsh\nix\tih\nq\n"
                                      "vcl\tcl\nepi\t\nen\tn\nax\tah\nb\n")
    from_file = score(tmp_path, hypotheses, score_map_file=str(tmp_path / "map.tsv"))
    assert (from_file["substitutions"], from_file["deletions"], from_file["insertions"],
            from_file["reference_length"]) == (0, 0, 0, 7)
    with pytest.raises(UserError, match="not both"):
        score(tmp_path, hypotheses, score_map="timit39", score_map_file=str(tmp_path / "map.tsv"))


def test_phone_map_file_errors(tmp_path):
    (tmp_path / "map.tsv").write_text("ao\taa\nzh\tsh\textra\n")
    with pytest.raises(UserError, match=r"map\.tsv:2: expected 'phone<TAB>scored phone'"):
        audio_data.read_phone_map(tmp_path / "map.tsv")
    assert audio_data.fold(["ao", "q", "b"], {"ao": "aa", "q": None}) == ["aa", "b"]


# -- tensorflow-datasets spoken_digit ----------------------------------------------

SPEAKERS = ("jackson", "theo", "yweweler")
DIGIT_PHONEMES = {0: "Z IH R OW", 1: "W AH N", 2: "T UW", 3: "TH R IY", 4: "F AO R",
                  5: "F AY V", 6: "S IH K S", 7: "S EH V AH N", 8: "EY T", 9: "N AY N"}


def spoken_digit_examples():
    """Ten int64 16-bit PCM examples at 8 kHz, named as FSDD names them."""
    rng = np.random.default_rng(0)
    for index in range(10):
        label = (3 * index) % 10
        audio = rng.integers(-20000, 20000, size=400 + 40 * index).astype("int64")
        yield {"audio": audio, "label": np.int64(label),
               "audio/filename": f"{label}_{SPEAKERS[index % 3]}_{index}.wav".encode()}


@pytest.fixture
def mocked_spoken_digit():
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def as_dataset(self, split, *args, **kwargs):
        assert split == "train"
        return tf.data.Dataset.from_generator(spoken_digit_examples, output_signature={
            "audio": tf.TensorSpec([None], tf.int64), "label": tf.TensorSpec([], tf.int64),
            "audio/filename": tf.TensorSpec([], tf.string)})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield list(spoken_digit_examples())


def test_spoken_digit_by_speaker_through_the_digits_lexicon(tmp_path, mocked_spoken_digit):
    app, config = config_for(tfds="spoken_digit", tfds_data_dir=str(tmp_path),
                             dev_speakers=["theo"], sample_rate=8000)
    train, dev = app.utterances(config, "train"), app.utterances(config, "dev")
    assert {u.speaker for u in train} == {"jackson", "yweweler"} and len(train) == 7
    assert {u.speaker for u in dev} == {"theo"} and len(dev) == 3
    examples = {e["audio/filename"].decode(): e for e in mocked_spoken_digit}
    for utterance in train + dev:
        example = examples[utterance.path.name]
        assert utterance.phonemes == DIGIT_PHONEMES[int(example["label"])].split()
    waveforms, kept, _ = app.audio(config, dev, "dev")
    for waveform, utterance in zip(waveforms, kept):
        np.testing.assert_allclose(waveform, examples[utterance.path.name]["audio"] / 32768,
                                   rtol=1e-6)
    app, config = config_for(tfds="spoken_digit", tfds_data_dir=str(tmp_path),
                             dev_speakers=["theo"], sample_rate=16000)
    waveforms, _, _ = app.audio(config, app.utterances(config, "dev"), "dev")
    assert [len(w) for w in waveforms] == [2 * len(examples[u.path.name]["audio"])
                                           for u in app.utterances(config, "dev")]


def test_spoken_digit_by_percentage(tmp_path, mocked_spoken_digit):
    app, config = config_for(tfds="spoken_digit", tfds_data_dir=str(tmp_path),
                             tfds_dev_percent=20)
    names = [e["audio/filename"].decode() for e in mocked_spoken_digit]
    assert [u.path.name for u in app.utterances(config, "train")] == names[:8]
    assert [u.path.name for u in app.utterances(config, "dev")] == names[8:]
    for choice in ({}, {"tfds_dev_percent": 20, "dev_speakers": ["theo"]}):
        app, config = config_for(tfds="spoken_digit", tfds_data_dir=str(tmp_path), **choice)
        with pytest.raises(UserError, match="only a train split: choose dev"):
            app.utterances(config, "dev")


def test_spoken_digit_not_prepared_names_the_folder(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path}: tensorflow-datasets 'spoken_digit' is "
                                        f"not prepared there; prepare it once"):
        tfds_source.read("spoken_digit", str(tmp_path))


# -- the recipes ---------------------------------------------------------------------


def test_the_timit_spoken_digit_and_fsdd_recipes_read_their_data(timit_tree, tmp_path,
                                                                 mocked_spoken_digit):
    from pathlib import Path

    from lstm_core.cli import load_config
    from lstm_core.schema import with_data_files

    recipes = Path(__file__).resolve().parents[1] / "recipes" / "phonemes"
    root = tmp_path / "data"
    (root / "tfds").mkdir(parents=True)
    (root / "timit").symlink_to(timit_tree, target_is_directory=True)
    (root / "fsdd").mkdir()  # dev: a held-out speaker (fsdd), upstream's takes 0-4 (fsdd_all)
    names = ["0_ann_3", "0_ann_5", "1_bob_12", "2_yweweler_0", "2_yweweler_40"]
    (root / "fsdd" / "manifest.tsv").write_text("path\tspeaker\tphonemes\n" + "".join(
        f"recordings/{name}.wav\t{name.split('_')[1]}\tZ\n" for name in names))
    for recipe, train, dev in (("timit.yaml", None, 2), ("spoken_digit.yaml", None, 3),
                               ("fsdd.yaml", [0, 1, 2], [3, 4]),
                               ("fsdd_all.yaml", [1, 2, 4], [0, 3])):
        app, config, data_root, _ = load_config(recipes / recipe, data_dir=str(root))
        config = with_data_files(app, config, data_root)
        if train is None:
            assert len(app.utterances(config, "dev")) == dev
            continue
        for split, chosen in (("train", train), ("dev", dev)):
            paths = [u.path.stem for u in app.utterances(config, split)]
            assert paths == [names[i] for i in chosen], (recipe, split)
