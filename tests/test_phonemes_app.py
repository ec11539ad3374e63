"""The phonemes app end to end through the CLI, on tiny synthesized audio the
tests write as WAV files: manifests and bad audio, resampling, training,
evaluation with a beam, prediction, and the export contract (served in a
fresh process and a TF1 session, padding-invariant, phonemes as predict's),
and the front end's options (MFCCs with deltas, global statistics kept with
the run, trimming, speed, noise and warp augmentation, convolutional
subsampling)."""

from importlib import metadata

import numpy as np
import pytest
import soundfile
import tensorflow as tf
from keras.src.backend.common.masking import get_keras_mask

from apps.phonemes import data as audio_data
from apps.phonemes.app import TRIM_KEEP_SECONDS, PhonemeApp
from lstm_core import apps
from lstm_core.cli import main
from lstm_core.errors import UserError
from lstm_core.recipes import RecipeError

RATE = 8000
# Each "phoneme" is a tone: a sequence of them is a sequence of tones.
TONES = {"a": 400.0, "b": 900.0, "ʃ": 1800.0, "i": 2700.0}
PHONES = ("a", "b", "ʃ")  # of the corpus the module's model trains on; "i" is for fine-tuning


def tone_sequence(phonemes, seed, rate=RATE, seconds=0.12):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    parts = [0.4 * np.sin(2 * np.pi * TONES[p] * t) for p in phonemes]
    return (np.concatenate(parts) + 0.01 * rng.normal(size=len(t) * len(phonemes))).astype("float32")


def write_corpus(root, count=16, phones=PHONES):
    """``count`` utterances of ``phones`` by two speakers in ``root/audio``,
    a TSV manifest (dev = the last four, split column) at ``root/manifest.tsv``."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["path\tspeaker\tsplit\tphonemes"]
    for index in range(count):
        phonemes = list(rng.choice(list(phones), size=rng.integers(1, 4)))
        soundfile.write(root / "audio" / f"u{index}.wav", tone_sequence(phonemes, index), RATE)
        split = "dev" if index >= count - 4 else "train"
        lines.append(f"audio/u{index}.wav\ts{index % 2}\t{split}\t{' '.join(phonemes)}")
    (root / "manifest.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


RECIPE = """
app: phonemes
data: {train_manifest: manifest.tsv, train_split: train, dev_split: dev, sample_rate: 8000}
model:
  features: {n_mels: 16}
  spec_augment: {enabled: true, freq_masks: 1, freq_mask_width: 2, time_masks: 1, time_mask_width: 2}
  subsample: {factor: 2}
  encoder: {units: 8, num_layers: 1, cell_options: {cell_clip: 3.0, num_proj: 6}}
decode: {beam_width: 2}
train: {epochs: 2, batch_size: 6, optimizer: {learning_rate: 0.01}}
export: {check: true}
"""


def _with_phonemes_app():
    points = {ep.name: ep for ep in metadata.entry_points(group=apps.ENTRY_POINT_GROUP)}
    points["phonemes"] = metadata.EntryPoint("phonemes", "apps.phonemes.app:PhonemeApp",
                                             apps.ENTRY_POINT_GROUP)
    return lambda: points


@pytest.fixture(scope="module", autouse=True)
def phonemes_registered():
    """``app: phonemes`` resolvable even where the installed metadata predates it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(apps, "_entry_points", _with_phonemes_app())
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("phonemes")
    write_corpus(root)
    (root / "recipe.yaml").write_text(RECIPE)
    run = root / "run"
    assert main(["train", str(root / "recipe.yaml"), "--data-dir", str(root),
                 "--run-dir", str(run), "--quiet"]) == 0
    return root, run


def config_for(root, **data):
    app = PhonemeApp()
    config = {"data": {**{k: spec.default for k, spec in app.data_schema.items()}, **data}}
    return app, config


# -- data ---------------------------------------------------------------------


def test_manifest_paths_are_relative_to_it_and_splits_choose_rows(tmp_path):
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "sub" / "m.csv"
    manifest.write_text("path,phonemes,split,speaker\n"
                        "x/1.wav,ʃ a  b,train,ann\nx/2.wav,a,dev,bob\nx/3.wav,b,train,bob\n",
                        encoding="utf-8")
    rows = audio_data.read_manifest(manifest)
    assert rows[0].path == tmp_path / "sub" / "x" / "1.wav"
    assert rows[0].phonemes == ["ʃ", "a", "b"]
    app, config = config_for(tmp_path, train_manifest=str(manifest), train_split="train",
                             dev_split="dev")
    assert [u.path.name for u in app.utterances(config, "train")] == ["1.wav", "3.wav"]
    assert [u.path.name for u in app.utterances(config, "dev")] == ["2.wav"]
    # a held-out speaker instead of splits: left out of training
    app, config = config_for(tmp_path, train_manifest=str(manifest), dev_speakers=["bob"])
    assert [u.path.name for u in app.utterances(config, "train")] == ["1.wav"]
    assert [u.path.name for u in app.utterances(config, "dev")] == ["2.wav", "3.wav"]
    # dev = the rows whose path matches a pattern, likewise left out of training
    app, config = config_for(tmp_path, train_manifest=str(manifest), dev_paths=r"x/[23]\.wav$")
    assert [u.path.name for u in app.utterances(config, "train")] == ["1.wav"]
    assert [u.path.name for u in app.utterances(config, "dev")] == ["2.wav", "3.wav"]
    app, config = config_for(tmp_path, train_manifest=str(manifest), dev_paths="[")
    with pytest.raises(RecipeError, match=r"data\.dev_paths: '\[' is not a regular expression"):
        app.utterances(config, "dev")
    # every row of an extra manifest is training data, whatever its columns say
    extra = tmp_path / "extra" / "e.tsv"
    extra.parent.mkdir()
    extra.write_text("path\tspeaker\ttext\tphonemes\ny/9.wav\tbob\tnine\tn ai n\n")
    app, config = config_for(tmp_path, train_manifest=str(manifest), dev_speakers=["bob"],
                             extra_train_manifest=str(extra))
    assert [u.path.name for u in app.utterances(config, "train")] == ["1.wav", "9.wav"]
    assert [u.path.name for u in app.utterances(config, "dev")] == ["2.wav", "3.wav"]


def test_manifest_errors_name_the_file(tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("file\ttext\na.wav\thello\n")
    with pytest.raises(UserError, match=r"m\.tsv: no path column"):
        audio_data.read_manifest(manifest)
    manifest.write_text("path\tspeaker\na.wav\tann\n")
    with pytest.raises(UserError, match=r"m\.tsv: no phonemes or text column"):
        audio_data.read_manifest(manifest)
    with pytest.raises(UserError, match="manifest not found"):
        audio_data.read_manifest(tmp_path / "none.tsv")
    manifest.write_text("path\tphonemes\na.wav\ta\n")
    rows = audio_data.read_manifest(manifest)
    with pytest.raises(UserError, match="no 'split' value"):
        audio_data.select(rows, manifest, split="train")


def test_manifest_rows_under_the_data_root_stay_under_it(tmp_path):
    root, elsewhere = tmp_path / "data", tmp_path / "corpus"
    (root / "lists").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "linked").symlink_to(elsewhere)  # a corpus stored elsewhere, linked in: inside
    inside = root / "lists" / "m.tsv"
    inside.write_text(f"path\tphonemes\n../audio/1.wav\ta\n../linked/2.wav\ta\n"
                      f"{elsewhere}/3.wav\ta\n")
    rows = audio_data.read_manifest(inside, root)
    assert [row.path for row in rows] == [root / "lists/../audio/1.wav",
                                          root / "lists/../linked/2.wav", elsewhere / "3.wav"]
    escaping = root / "lists" / "out.tsv"
    escaping.write_text("path\tphonemes\n../audio/1.wav\ta\n../../corpus/3.wav\ta\n")
    with pytest.raises(UserError, match=r"out\.tsv:3: \.\./\.\./corpus/3\.wav is outside the "
                                        r"data root .*data; name audio outside it by an absolute"):
        audio_data.read_manifest(escaping, root)
    assert len(audio_data.read_manifest(escaping)) == 2  # no data root: predict's inputs
    outside = elsewhere / "m.tsv"  # named by an absolute recipe path or --data: not bounded
    outside.write_text("path\tphonemes\n../data/audio/1.wav\ta\n")
    assert len(audio_data.read_manifest(outside, root)) == 1


def test_bad_audio_is_named_and_fails_or_is_skipped_and_counted(tmp_path):
    soundfile.write(tmp_path / "good.wav", tone_sequence("a", 0), RATE)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage, not a wave file")
    (tmp_path / "empty.wav").write_bytes(b"")
    soundfile.write(tmp_path / "silent.wav", np.zeros(0, "float32"), RATE)
    whole = (tmp_path / "good.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(whole[:len(whole) // 2])
    rows = [audio_data.Utterance(tmp_path / name, ["a"])
            for name in ("good.wav", "corrupt.wav", "empty.wav", "silent.wav", "truncated.wav",
                         "missing.wav")]
    for bad in rows[1:]:
        with pytest.raises(UserError, match=bad.path.name):
            audio_data.load_utterances([rows[0], bad], RATE, "fail")
    waveforms, kept, skipped = audio_data.load_utterances(rows, RATE, "skip")
    assert [u.path.name for u in kept] == ["good.wav"] and len(waveforms) == 1
    assert len(skipped) == 5
    assert all(name in reason for name, reason in
               zip(["corrupt", "empty", "silent", "truncated", "missing"], skipped.reasons))
    assert "truncated audio" in skipped.reasons[3]


def test_audio_is_resampled_to_the_recipe_rate(tmp_path):
    t = np.arange(4000) / 8000
    soundfile.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000)
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1)
    soundfile.write(tmp_path / "stereo.wav", stereo, 8000)
    up = audio_data.load_audio(tmp_path / "tone.wav", 16000)
    assert len(up) == 8000
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    # away from the edges the upsampled tone is the analytic one at 16 kHz
    assert np.max(np.abs(up[500:-500] - expected[500:-500])) < 0.01
    np.testing.assert_allclose(audio_data.load_audio(tmp_path / "stereo.wav", 8000),
                               audio_data.load_audio(tmp_path / "tone.wav", 8000), atol=1e-4)


# -- model --------------------------------------------------------------------


def model_config(**changes):
    """The model section with the schema's defaults, a tiny encoder and ``changes``."""
    def defaults(schema):
        return {k: defaults(v) if isinstance(v, dict) else v.default for k, v in schema.items()}

    model = defaults(PhonemeApp.model_schema)
    model["encoder"].update(units=8, num_layers=2)
    for key, value in changes.items():
        model[key] = {**model[key], **value} if isinstance(value, dict) else value
    return {"model": model}


def scores_alone_and_padded(model, wave):
    """A row's scores alone, and in a batch with a longer row, padded with non-zeros."""
    alone = model({"waveform": tf.constant(wave[None]), "lengths": tf.constant([len(wave)])})
    padded = np.concatenate([wave, np.ones(1500, "float32")])  # padding that is not zeros
    both = model({"waveform": tf.constant(np.stack([padded, padded])),
                  "lengths": tf.constant([len(wave), len(padded)])})
    steps = int(model.output_lengths(tf.constant([len(wave)]))[0])
    assert alone.shape[1] == steps
    return alone[0].numpy(), both[0, :steps].numpy()


@pytest.mark.parametrize("subsample", [{"type": "stack", "factor": 2},
                                       {"type": "conv", "factor": 3, "filters": 8}])
def test_padding_does_not_change_a_rows_scores(subsample):
    app = PhonemeApp()
    config = model_config(spec_augment={"enabled": False}, subsample=subsample,
                          features={"n_mels": 16})
    model = app.build_model(config, {"phones": ["a", "b"], "sample_rate": RATE})
    alone, padded = scores_alone_and_padded(model, tone_sequence("ab", 3))
    np.testing.assert_allclose(padded, alone, atol=1e-5)


def test_the_ctc_loss_scores_the_steps_of_speed_perturbed_audio():
    from lstm_core.ctc import ctc_loss

    app = PhonemeApp()
    config = model_config(augment={"speed": [0.5, 0.5]}, features={"n_mels": 16})
    model = app.build_model(config, {"phones": ["a", "b"], "sample_rate": RATE})
    waves, lengths = audio_data.pad_batch([tone_sequence("ab", 1), tone_sequence("a", 2)])
    x = {"waveform": tf.constant(waves), "lengths": tf.constant(lengths)}
    y = tf.constant([[1, 2], [1, 0]])
    scores = model(x, training=True)  # twice as long: played at half speed
    steps = model.output_lengths(tf.constant(1 + (lengths - 1) * 2))
    assert scores.shape[1] == max(steps) and max(steps) > max(model.output_lengths(lengths))
    expected = tf.reduce_mean(ctc_loss(y, scores, tf.constant([2, 1]), steps))
    np.testing.assert_allclose(model.compute_loss(x, y, scores), expected, rtol=1e-5)
    # at inference the audio is as given
    assert model(x).shape[1] == max(model.output_lengths(lengths))


def test_trimming_shortens_training_audio_to_no_less_than_the_floor():
    app = PhonemeApp()
    config = model_config(augment={"trim": [0.5, 0.5]}, features={"n_mels": 16})
    model = app.build_model(config, {"phones": ["a", "b"], "sample_rate": RATE})
    assert model.trim.min_samples == round(TRIM_KEEP_SECONDS * RATE)
    # 0.72 s loses half; 0.24 s only what lies above the floor; at inference none
    waves, lengths = audio_data.pad_batch([tone_sequence("abab", 1, seconds=0.18),
                                           tone_sequence("ab", 2)])
    x = {"waveform": tf.constant(waves), "lengths": tf.constant(lengths)}
    kept = tf.constant([lengths[0] // 2, round(TRIM_KEEP_SECONDS * RATE)])

    def steps(training):
        return tf.reduce_sum(tf.cast(get_keras_mask(model(x, training=training)), tf.int32), 1)

    np.testing.assert_array_equal(steps(True), model.output_lengths(kept))
    np.testing.assert_array_equal(steps(False), model.output_lengths(tf.constant(lengths)))


def test_model_setting_errors():
    assets = {"phones": ["a"], "sample_rate": RATE}
    with pytest.raises(UserError, match="no feature statistics"):
        PhonemeApp().build_model(model_config(normalize="global"), assets)
    with pytest.raises(UserError, match=r"model\.augment\.speed: expected \[min, max\]"):
        PhonemeApp().build_model(model_config(augment={"speed": [1.1, 0.9]}), assets)
    with pytest.raises(UserError, match=r"model\.augment\.trim: expected \[min, max\]"):
        PhonemeApp().build_model(model_config(augment={"trim": [0.3]}), assets)
    with pytest.raises(UserError, match="n_mfcc 20 is more than the 16 mel bands"):
        PhonemeApp().build_model(model_config(features={"type": "mfcc", "n_mels": 16,
                                                        "n_mfcc": 20}), assets)


# -- through the CLI ------------------------------------------------------------


def test_training_scores_dev_per_with_counts(trained):
    root, run = trained
    import json

    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs and all("dev_per" in e and isinstance(e["dev_deletions"], int) for e in epochs)
    assert json.loads((run / "assets.json").read_text())["phones"] == sorted(PHONES)


def test_evaluate_with_a_beam(trained, capsys):
    root, run = trained
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data-dir", str(root), "--set",
                 "decode.beam_width=4"]) == 0
    out = capsys.readouterr().out
    assert "PER" in out and "beam 4" in out and "substitutions" in out
    assert (run / "figures" / "evaluate-dev.png").is_file()


def test_export_serves_like_predict_in_a_fresh_process(trained, capsys):
    root, run = trained
    export = root / "export"
    # the recipe's export.check: a fresh process, and a TF1 session, on serving_example
    assert main(["export", str(run), str(export)]) == 0
    predicted = root / "predicted.tsv"
    assert main(["predict", str(run), str(root / "manifest.tsv"), "--output", str(predicted)]) == 0
    lines = [line.split("\t") for line in predicted.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 16 and all(path.endswith(".wav") for path, _ in lines)

    loaded = tf.saved_model.load(str(export))
    assert int(loaded.sample_rate.numpy()) == RATE
    serve = loaded.signatures["serving_default"]
    waves = [audio_data.load_audio(path, RATE) for path, _ in lines]
    batch, lengths = audio_data.pad_batch(waves)
    served = serve(waveform=tf.constant(batch), lengths=tf.constant(lengths))["phonemes"]
    assert served.dtype == tf.string and served.shape == (16,)
    assert [s.decode() for s in served.numpy()] == [phonemes for _, phonemes in lines]
    assert any(served.numpy()), "the tiny model emits only blanks: the comparison says nothing"
    # each row alone (no padding) gives what it gave in the padded batch
    for wave, expected in zip(waves[:4], served.numpy()[:4]):
        alone = serve(waveform=tf.constant(wave[None]), lengths=tf.constant([len(wave)], tf.int32))
        assert alone["phonemes"].numpy()[0] == expected


def test_a_phone_lm_from_the_training_transcriptions_rescores_the_beam_in_the_export(
        trained, capsys):
    import json
    import shutil

    from lstm_core.ngram import log_prob_table, sequence_log_probs

    root, run = trained
    assets = json.loads((run / "assets.json").read_text())
    ids = {phone: index for index, phone in enumerate(assets["phones"], start=1)}
    rows = [line.split("\t") for line in (root / "manifest.tsv").read_text().splitlines()[1:]]
    train = [[ids[p] for p in row[3].split()] for row in rows if row[2] == "train"]
    starts = {f"0 0 {i}": sum(1 for t in train if t[0] == i) for i in ids.values()}
    assert {k: v for k, v in assets["phone_ngrams"].items() if k.startswith("0 0 ")} == \
        {k: v for k, v in starts.items() if v}
    assert sum(assets["phone_ngrams"].values()) == sum(len(t) + 1 for t in train)

    lm = ["--set", "decode.beam_width=4", "--set", "decode.lm_weight=100"]
    decoded = {}
    for name, settings in (("plain", lm[:2]), ("lm", lm)):
        out = root / f"predicted-{name}.tsv"
        assert main(["predict", str(run), str(root / "manifest.tsv"), "--output", str(out),
                     *settings]) == 0
        decoded[name] = [line.split("\t")[1].split() for line in out.read_text().splitlines()]
    # a heavy LM weight picks, from the beam's n-best, sequences the LM likes at least as much
    table = log_prob_table(assets["phone_ngrams"], len(ids) + 1, 3, 0.1)
    scores = {}
    for name, sequences in decoded.items():
        labels = tf.ragged.constant([[ids[p] for p in s] for s in sequences], tf.int32)
        scores[name] = sequence_log_probs(table, labels.to_tensor(-1), labels.row_lengths()).numpy()
    assert (scores["lm"] >= scores["plain"] - 1e-4).all()
    # the export (checked in a fresh process and a TF1 session) decodes as predict did
    export = root / "export-lm"
    assert main(["export", str(run), str(export), *lm]) == 0
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    waves = [audio_data.load_audio(root / row[0], RATE) for row in rows]
    batch, lengths = audio_data.pad_batch(waves)
    served = serve(waveform=tf.constant(batch), lengths=tf.constant(lengths))["phonemes"]
    assert [s.decode().split() for s in served.numpy()] == decoded["lm"]

    # a run made before the counts were kept says so
    old = root / "old-run"
    shutil.copytree(run, old)
    del assets["phone_ngrams"]
    (old / "assets.json").write_text(json.dumps(assets))
    capsys.readouterr()
    assert main(["evaluate", str(old), "--data-dir", str(root), *lm]) != 0
    assert "no phone n-gram counts" in capsys.readouterr().err


def test_an_ensemble_of_seeds_exports_and_picks_what_its_runs_like_best_together(trained):
    import json

    from lstm_core.ctc import ctc_log_likelihoods
    from lstm_core.runs import load_run

    root, run = trained
    other = root / "run-seed-2"
    assert main(["train", str(root / "recipe.yaml"), "--data-dir", str(root), "--run-dir",
                 str(other), "--quiet", "--set", "train.seed=2"]) == 0
    export = root / "export-ensemble"
    assert main(["export", str(run), str(other), str(export)]) == 0  # checked fresh and in TF1
    rows = [line.split("\t") for line in (root / "manifest.tsv").read_text().splitlines()[1:]]
    waves = [audio_data.load_audio(root / row[0], RATE) for row in rows]
    batch, lengths = audio_data.pad_batch(waves)
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    decoded = {"ensemble": [s.decode().split() for s in serve(
        waveform=tf.constant(batch), lengths=tf.constant(lengths))["phonemes"].numpy()]}
    for member in (run, other):
        out = root / f"predicted-{member.name}.tsv"
        assert main(["predict", str(member), str(root / "manifest.tsv"), "--output",
                     str(out)]) == 0
        decoded[member.name] = [line.split("\t")[1].split()
                                for line in out.read_text().splitlines()]
    assert decoded[run.name] != decoded[other.name], "the seeds agree: the test says little"

    # the ensemble's answer is, of all the members found, the likeliest under both
    ids = {p: i for i, p in enumerate(json.loads((run / "assets.json").read_text())["phones"], 1)}
    models = [load_run(member).model for member in (run, other)]

    def mean_log_likelihood(sequences):
        labels = np.full((len(sequences), 1, max(map(len, sequences)) + 1), -1, "int32")
        for row, sequence in enumerate(sequences):
            labels[row, 0, :len(sequence)] = [ids[p] for p in sequence]
        counts = np.array([[len(s)] for s in sequences], "int32")
        return np.mean([ctc_log_likelihoods(labels, counts, model(
            {"waveform": batch, "lengths": lengths}), model.output_lengths(lengths))[:, 0]
            for model in models], axis=0)

    together = mean_log_likelihood(decoded["ensemble"])
    for member in (run, other):
        assert (together >= mean_log_likelihood(decoded[member.name]) - 1e-4).all()

    # an empty waveform in the batch gives no phonemes and changes no other row
    batch, lengths = audio_data.pad_batch(waves[:3] + [np.zeros(0, "float32")])
    served = serve(waveform=tf.constant(batch), lengths=tf.constant(lengths))["phonemes"]
    assert [s.decode().split() for s in served.numpy()] == decoded["ensemble"][:3] + [[]]


def test_evaluate_draws_spectrograms_and_posteriors_of_three_utterances(trained, tmp_path):
    from matplotlib.image import imread

    from lstm_core.runs import load_run

    root, run = trained
    # training drew every epoch's dev pass
    assert sorted(p.name for p in (run / "figures").glob("dev-*")) == [
        "dev-epoch-001.png", "dev-epoch-002.png"]
    app, config, assets, model = load_run(run, root)
    # one utterance: a block of one spectrogram and its posteriors
    manifest = tmp_path / "one.tsv"
    manifest.write_text(f"path\tphonemes\n{root / 'audio' / 'u0.wav'}\ta\n", encoding="utf-8")
    figure = tmp_path / "one.png"
    app.evaluate(model, config, root, assets, path=manifest, figure=figure)
    one = imread(figure).shape
    # the dev set's four: the first three drawn, one block each
    figure = tmp_path / "dev.png"
    scores = app.evaluate(model, config, root, assets, final=True, figure=figure)
    assert "per" in scores
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    three = imread(figure).shape
    assert one[1] == three[1] == 880 and abs(three[0] - 3 * one[0]) <= 2 and one[0] > 250


def test_predict_reads_a_file_and_a_folder(trained, capsys):
    root, run = trained
    capsys.readouterr()
    assert main(["predict", str(run), str(root / "audio" / "u0.wav")]) == 0
    single = capsys.readouterr().out.splitlines()
    assert len(single) == 1 and single[0].startswith(str(root / "audio" / "u0.wav") + "\t")
    assert main(["predict", str(run), str(root / "audio")]) == 0
    folder = capsys.readouterr().out.splitlines()
    assert len(folder) == 16 and single[0] in folder


def test_predict_json_lines_give_phoneme_times_of_the_greedy_path(trained):
    root, run = trained
    out = root / "aligned.jsonl"
    assert main(["predict", str(run), str(root / "manifest.tsv"), "--output", str(out),
                 "--set", "decode.beam_width=1"]) == 0
    import json

    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 16
    duration = 0.12 * 3 + 0.05  # the longest utterance, and a step of slack
    for row in rows:
        # greedy decoding: the aligned phonemes are the transcription
        assert [a["phoneme"] for a in row["alignment"]] == row["phonemes"].split()
        times = [t for a in row["alignment"] for t in (a["start"], a["end"])]
        assert times == sorted(times) and all(0 <= t <= duration for t in times)
    assert any(row["alignment"] for row in rows)


def test_the_shipped_sample_reads_and_splits():
    from pathlib import Path

    import apps.phonemes

    manifest = Path(apps.phonemes.__file__).parent / "sample" / "manifest.tsv"
    app, config = config_for(None, train_manifest=str(manifest), train_split="train",
                             dev_split="dev", sample_rate=8000)
    train, dev = app.utterances(config, "train"), app.utterances(config, "dev")
    assert (len(train), len(dev)) == (50, 10)
    assert not {u.path for u in train} & {u.path for u in dev}
    waveforms, kept, skipped = app.audio(config, dev, "dev")
    assert len(kept) == 10 and not skipped and all(0.1 * 8000 < len(w) < 1.5 * 8000 for w in waveforms)


FRONT_END_RECIPE = """
app: phonemes
data: {train_manifest: manifest.tsv, train_split: train, dev_split: dev, sample_rate: 8000}
model:
  features: {type: mfcc, n_mels: 16, n_mfcc: 8, deltas: 2}
  normalize: global
  augment: {speed: [0.9, 1.1], noise_snr_db: [15.0, 30.0], warp: [0.9, 1.1]}
  spec_augment: {enabled: false}
  subsample: {type: conv, factor: 3, filters: 12, kernel_size: 5}
  encoder: {units: 8, num_layers: 1}
decode: {beam_width: 1}
train: {epochs: 1, batch_size: 6}
export: {check: true}
"""


def librosa_features(wave):
    """MFCCs with deltas of FRONT_END_RECIPE's features, by librosa: ``[frames, 24]``."""
    import librosa

    mel = librosa.feature.melspectrogram(y=wave, sr=RATE, n_fft=256, win_length=200,
                                         hop_length=80, n_mels=16, fmin=0.0, fmax=RATE / 2)
    mfcc = librosa.feature.mfcc(S=np.log(mel + 1e-6), n_mfcc=8)
    return np.concatenate([mfcc, librosa.feature.delta(mfcc),
                           librosa.feature.delta(mfcc, order=2)]).T


def test_front_end_options_train_export_and_ignore_padding(tmp_path):
    import json

    from lstm_core.runs import load_run

    write_corpus(tmp_path)
    (tmp_path / "recipe.yaml").write_text(FRONT_END_RECIPE)
    run, export = tmp_path / "run", tmp_path / "export"
    assert main(["train", str(tmp_path / "recipe.yaml"), "--data-dir", str(tmp_path),
                 "--run-dir", str(run), "--quiet"]) == 0

    # global statistics: librosa's features of the 12 training utterances, kept with the run
    statistics = json.loads((run / "assets.json").read_text())["feature_statistics"]
    frames = np.concatenate([librosa_features(audio_data.load_audio(
        tmp_path / "audio" / f"u{index}.wav", RATE)) for index in range(12)])
    np.testing.assert_allclose(statistics["mean"], frames.mean(0), atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(statistics["std"], frames.std(0), atol=1e-3, rtol=1e-3)

    model = load_run(run).model
    np.testing.assert_allclose(model.normalize.weights[0].numpy(), statistics["mean"], rtol=1e-6)
    alone, padded = scores_alone_and_padded(model, tone_sequence("aʃb", 5))
    np.testing.assert_allclose(padded, alone, atol=1e-5)

    # the export (checked in a fresh process by the recipe) holds the statistics as weights
    assert main(["export", str(run), str(export)]) == 0
    loaded = tf.saved_model.load(str(export))
    assert any(v.shape == (24,) and np.allclose(v.numpy(), statistics["std"])
               for v in loaded.serving_variables)
    serve = loaded.signatures["serving_default"]
    waves = [tone_sequence(p, i) for i, p in enumerate(["ab", "ʃ", "baʃ"])]
    batch, lengths = audio_data.pad_batch(waves)
    served = serve(waveform=tf.constant(batch), lengths=tf.constant(lengths))["phonemes"].numpy()
    for wave, expected in zip(waves, served):
        alone = serve(waveform=tf.constant(wave[None]), lengths=tf.constant([len(wave)], tf.int32))
        assert alone["phonemes"].numpy()[0] == expected



@pytest.fixture(scope="module")
def source_model(tmp_path_factory):
    """A model that knows a, b and ʃ well enough to fine-tune (12 epochs)."""
    root = tmp_path_factory.mktemp("source")
    write_corpus(root, count=32)
    (root / "recipe.yaml").write_text(RECIPE)
    assert main(["train", str(root / "recipe.yaml"), "--data-dir", str(root), "--run-dir",
                 str(root / "run"), "--quiet", "--set", "train.epochs=12",
                 "--set", "train.optimizer.learning_rate=0.02"]) == 0
    return root, root / "run"


def classifier(run):
    from lstm_core.runs import load_run

    layer = load_run(run).model.classifier
    return np.asarray(layer.kernel), np.asarray(layer.bias)


def dev_per(run, manifest, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(manifest)]) == 0
    lines = capsys.readouterr().out.splitlines()
    return float(next(line for line in lines if line.startswith("per: ")).split()[1])


def test_finetune_to_another_phone_set_keeps_the_shared_phones_rows(source_model, tmp_path):
    import json

    root, run = source_model
    write_corpus(tmp_path, phones=("a", "b", "i"))  # gains i, loses ʃ
    assert main(["finetune", str(root / "recipe.yaml"), "--from", str(run), "--data-dir",
                 str(tmp_path), "--run-dir", str(tmp_path / "tuned"), "--quiet",
                 "--set", "train.epochs=1", "--set", "finetune.learning_rate=0.0"]) == 0
    changes = json.loads((tmp_path / "tuned" / "vocabularies.json").read_text())["phones"]
    assert (changes["kept"], changes["added_first"], changes["dropped_first"]) == (3, ["i"], ["ʃ"])
    (kernel, bias), (tuned_kernel, tuned_bias) = classifier(run), classifier(tmp_path / "tuned")
    # classes: blank a b ʃ before, blank a b i after
    np.testing.assert_array_equal(tuned_kernel[:, :3], kernel[:, :3])
    np.testing.assert_array_equal(tuned_bias[:3], bias[:3])
    assert not np.array_equal(tuned_kernel[:, 3], kernel[:, 3])
    first = json.loads((tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["epoch"] == 0 and "dev_per" in first


def test_finetune_learns_a_new_phone_and_keeps_the_old_ones(source_model, tmp_path, capsys):
    import json

    root, run = source_model
    write_corpus(tmp_path, count=24, phones=("a", "b", "ʃ", "i"))
    tuned = tmp_path / "tuned"
    assert main(["finetune", str(root / "recipe.yaml"), "--from", str(run), "--data-dir",
                 str(tmp_path), "--run-dir", str(tuned), "--quiet",
                 "--set", "train.epochs=10", "--set", "finetune.learning_rate=0.02"]) == 0
    records = [json.loads(line) for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["epoch"] == 0 and min(r["dev_per"] for r in records[1:]) < records[0]["dev_per"]
    capsys.readouterr()
    assert main(["predict", str(tuned), str(tmp_path / "manifest.tsv")]) == 0
    lines = capsys.readouterr().out.splitlines()
    manifest = (tmp_path / "manifest.tsv").read_text().splitlines()[1:]
    with_i = [line for line in manifest if "i" in line.split("\t")[3].split()]
    found = [line for line in lines if "i" in line.split("\t")[1].split()]
    assert with_i and len(found) >= len(with_i) / 2, (with_i, lines)
    # the old phones on the old dev data: PER at most 15 points worse
    old = root / "manifest.tsv"
    assert dev_per(tuned, old, capsys) <= dev_per(run, old, capsys) + 15
