"""The translation app end to end through the CLI, on a slice of the shipped
English -> Tokipo sample: training with dev BLEU and sacreBLEU signatures,
the length filters, the export contract (raw strings in and out, served in
a fresh process with only tensorflow_text, an empty sentence in a batch,
the same translations as predict), n-best JSON lines, decode settings
after training, the attention figure, and an ensemble of two runs against
an independent greedy decoding of the averaged models; the model's loss and
tied embeddings against NumPy."""

import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import apps.translation
from apps.translation import plots, subwords
from apps.translation.app import TranslationApp
from apps.translation.model import Translator, smoothed_cross_entropy
from lstm_core import apps as core_apps
from lstm_core.cli import main
from lstm_core.export import check_in_fresh_process
from lstm_core.recipes import RecipeError
from lstm_core.runs import load_run

SAMPLE = Path(apps.translation.__file__).parent / "sample"

RECIPE = """
app: translation
data:
  train_pairs: train.tsv
  dev_pairs: dev.tsv
  test_pairs: test.tsv
  source_language: en
  target_language: tokipo
  subwords: {vocab_size: 400}
  max_source_length: 40
  max_target_length: 40
model:
  source_embedding_dim: 16
  target_embedding_dim: 16
  encoder: {units: 16, num_layers: 1, cell_options: {cell_clip: 3.0, num_proj: 12}}
  decoder: {units: 24, num_layers: 2, dropout: 0.1, bridge: mean}
decode: {beam_width: 3, n_best: 2}
train: {epochs: 2, batch_size: 16, optimizer: {learning_rate: 0.02}, jit_compile: false}
export: {check: true}
"""


def _with_translation_app():
    points = {ep.name: ep for ep in metadata.entry_points(group=core_apps.ENTRY_POINT_GROUP)}
    points["translation"] = metadata.EntryPoint(
        "translation", "apps.translation.app:TranslationApp", core_apps.ENTRY_POINT_GROUP)
    return lambda: points


@pytest.fixture(scope="module", autouse=True)
def translation_registered():
    """``app: translation`` resolvable even where the installed metadata predates it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(core_apps, "_entry_points", _with_translation_app())
        yield


def sample_slice(root, **counts):
    for split, count in counts.items():
        lines = (SAMPLE / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[:count]
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("translation")
    sample_slice(root, train=320, dev=16, test=8)
    (root / "recipe.yaml").write_text(RECIPE)
    run = root / "run"
    assert main(["train", str(root / "recipe.yaml"), "--data-dir", str(root),
                 "--run-dir", str(run), "--quiet"]) == 0
    return root, run


def dev_sources(root):
    return [line.split("\t")[0] for line in (root / "dev.tsv").read_text().splitlines()]


# -- training -------------------------------------------------------------------


def test_training_scores_dev_bleu_with_signatures_and_the_test_set(trained):
    root, run = trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert all(isinstance(record[f"dev_{k}"], float) for k in ("bleu", "chrf", "bleu_lowercase"))
        assert record["dev_sentences"] == 16 and isinstance(record["dev_reference_length"], int)
    report = (run / "report.txt").read_text(encoding="utf-8")
    assert "signature bleu: nrefs:1|case:mixed|eff:no|tok:13a" in report
    assert "signature bleu_lowercase: nrefs:1|case:lc" in report and "signature chrf:" in report
    assert "decoding: greedy" in report and "== test" in report and "decoding: beam 3" in report
    result = json.loads((run / "result.json").read_text())
    assert result["monitor"] == "dev_bleu" and result["test"]["test"]["sentences"] == 8
    assert sorted(p.name for p in (run / "figures").iterdir()) == [
        "dev-epoch-001.png", "dev-epoch-002.png", "test-test.png"]
    assets = json.loads((run / "assets.json").read_text())
    assert assets["source_model"] == assets["target_model"] == "shared.model"
    assert (run / "assets" / "shared.model").is_file() and assets["source_vocab"] <= 400


def test_long_and_empty_training_pairs_are_left_out_and_counted(trained, tmp_path, capsys):
    root, run = trained
    app, config, assets, _ = load_run(run, root)
    lines = (root / "train.tsv").read_text(encoding="utf-8").splitlines()[:40]
    (tmp_path / "train.tsv").write_text("\n".join(lines + ["\tNothing to translate.", ""]) + "\n",
                                        encoding="utf-8")
    source, target = app.processors(assets)
    lengths = [(len(source.encode(s)), len(target.encode(t)))
               for s, t in (line.split("\t") for line in lines)]
    limits = [int(np.median(side)) for side in zip(*lengths)]  # about half are longer
    long = sum(n > limits[0] or m > limits[1] for n, m in lengths)
    assert 0 < long < 40
    data = {**config["data"], "train_pairs": str(tmp_path / "train.tsv"),
            "max_source_length": limits[0], "max_target_length": limits[1]}
    capsys.readouterr()
    dataset = app.dataset("train", {**config, "data": data}, assets, shuffle=True)
    assert f"{40 - long} pairs kept; left out 2 with an empty side and {long} longer than " \
           f"{limits[0]} source or {limits[1]} target subwords" in capsys.readouterr().err
    kept = sum(int(y.shape[0]) for _, y in dataset)
    assert kept == 40 - long and dataset.cardinality() == len(list(dataset))
    # a budget of subwords per batch: rows x padded length within it
    budgeted = app.dataset("train", {**config, "data": {**data, "batch_tokens": 60}}, assets,
                           shuffle=False)
    shapes = [(y.shape[0], max(x["source"].shape[1], y.shape[1])) for x, y in budgeted]
    assert sum(rows for rows, _ in shapes) == kept
    assert all(rows * length <= 60 or rows == 1 for rows, length in shapes)


def test_subword_sampling_draws_other_pieces_of_the_same_text_each_epoch(trained):
    root, run = trained
    app, config, assets, _ = load_run(run, root)
    _, target = app.processors(assets)
    sampling = {**config["data"]["subwords"], "sampling_alpha": 0.2}
    sampled = {**config, "data": {**config["data"], "subwords": sampling}}

    def epoch(dataset):
        """The target pieces of each pair in one pass (sorted; no padding,
        no end id), once target_in is checked to be them after the start id."""
        rows = [(x_in[x_in > 0].tolist(), y[y > 0].tolist())
                for x, ys in dataset for x_in, y in zip(x["target_in"].numpy(), ys.numpy())]
        assert all(t_in == [subwords.BOS, *y[:-1]] and y[-1] == subwords.EOS for t_in, y in rows)
        return sorted(tuple(y[:-1]) for _, y in rows)

    plain = app.dataset("train", config, assets, shuffle=True)
    assert epoch(plain) == epoch(plain)
    texts = sorted(target.decode(list(pieces)) for pieces in epoch(plain))
    draws = app.dataset("train", sampled, assets, shuffle=True)
    first, second = epoch(draws), epoch(draws)
    assert first != second and first != epoch(plain)
    for pieces in (first, second):
        assert sorted(target.decode(list(p)) for p in pieces) == texts
    # dev (and test, export) keep the single best segmentation
    assert epoch(app.dataset("dev", sampled, assets, shuffle=False)) == epoch(
        app.dataset("dev", config, assets, shuffle=False))
    one_best = {**sampling, "sampling_nbest_size": 1}  # would quietly not sample
    with pytest.raises(RecipeError, match="data.subwords.sampling_nbest_size: -1 .all. or at "
                                          "least 2"):
        app.dataset("train", {**config, "data": {**config["data"], "subwords": one_best}},
                    assets, shuffle=True)


# -- the export contract -----------------------------------------------------------


def test_export_serves_raw_text_in_a_fresh_process_like_predict(trained):
    root, run = trained
    export = root / "export"
    assert main(["export", str(run), str(export), "--no-check"]) == 0
    (root / "input.txt").write_text("\n".join(dev_sources(root)) + "\n", encoding="utf-8")
    predicted = root / "predicted.txt"
    assert main(["predict", str(run), str(root / "input.txt"), "--output", str(predicted)]) == 0
    expected = predicted.read_text(encoding="utf-8").splitlines()
    assert len(expected) == 16 and any(expected)
    # a process without this suite (TF2 and TF1 loaders), tensorflow_text its one import
    served = check_in_fresh_process(export, {"source": dev_sources(root) + ["", "   "]},
                                    imports=TranslationApp.serving_imports)
    assert list(served) == ["translation"]
    assert served["translation"] == expected + ["", ""]
    # the SentencePiece model ships with the export; its signature is the contract
    assert (export / "assets" / "shared.model").is_file()
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["source"]
    assert serve.structured_input_signature[1]["source"].dtype == tf.string


def test_predict_json_lines_give_the_n_best_with_scores(trained):
    root, run = trained
    (root / "some.txt").write_text("\n".join(dev_sources(root)[:5]) + "\n", encoding="utf-8")
    out = root / "n_best.jsonl"
    assert main(["predict", str(run), str(root / "some.txt"), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    best = root / "best.txt"
    assert main(["predict", str(run), str(root / "some.txt"), "--output", str(best)]) == 0
    assert [r["translation"] for r in rows] == best.read_text(encoding="utf-8").splitlines()
    for row, source in zip(rows, dev_sources(root)):
        assert row["source"] == source and 1 <= len(row["n_best"]) <= 2  # decode.n_best
        assert row["n_best"][0]["translation"] == row["translation"]
        scores = [h["score"] for h in row["n_best"]]
        assert scores == sorted(scores, reverse=True) and all(h["log_prob"] <= 0
                                                              for h in row["n_best"])


def test_decode_settings_change_at_evaluate_and_the_figure_is_drawn(trained, capsys):
    root, run = trained
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data-dir", str(root), "--set", "decode.beam_width=1",
                 "--set", "decode.length_penalty=0.0"]) == 0
    out = capsys.readouterr().out
    assert "decoding: greedy" in out and "signature bleu:" in out and "bleu: " in out
    figure = run / "figures" / "evaluate-dev.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["evaluate", str(run), "--set", "model.decoder.units=3"]) == 2
    assert "only decode.* settings can change" in capsys.readouterr().err


def test_the_attention_figure_shows_subwords_on_both_axes(trained, tmp_path):
    from matplotlib.image import imread

    root, run = trained
    app, config, assets, model = load_run(run, root)
    serving = app.serving(model, config, assets, 1)
    sentences = dev_sources(root)[:plots.SENTENCES] + [""]
    rows = plots.attention_rows(model, serving, *app.processors(assets), sentences)
    source, target = app.processors(assets)
    for sentence, (source_pieces, output_pieces, weights) in zip(sentences, rows):
        assert source_pieces == source.encode(sentence, out_type=str)
        assert weights.shape == (len(output_pieces), len(source_pieces))
        if source_pieces:  # each output subword's weights: a distribution over the source
            np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert rows[-1][:2] == ([], [])  # an empty source: nothing translated
    one, three = tmp_path / "one.png", tmp_path / "three.png"
    plots.draw_attention(one, rows[:1], ["a"])
    plots.draw_attention(three, rows[:3], ["a", "b", "c"])
    assert imread(three).shape[0] > 2 * imread(one).shape[0]


# -- an ensemble ----------------------------------------------------------------


def greedy_reference(models, source_ids, max_length):
    """Greedy decoding of the mean log probabilities, by teacher forcing each
    model on the whole prefix at every step (no decoder state carried)."""
    forced = [tf.function(lambda x, m=m: tf.nn.log_softmax(m(x)[0, -1]), reduce_retracing=True)
              for m in models]
    prefix = [subwords.BOS]
    for _ in range(max_length):
        batch = {"source": tf.constant([source_ids]), "target_in": tf.constant([prefix])}
        log_probs = np.mean([f(batch).numpy() for f in forced], axis=0)
        log_probs[[subwords.PAD, subwords.BOS]] = -np.inf
        prefix.append(int(log_probs.argmax()))
        if prefix[-1] == subwords.EOS:
            return prefix[1:-1]
    return prefix[1:]


def test_two_runs_export_as_an_ensemble_that_averages_their_log_probs(trained):
    root, run = trained
    # another run of the recipe (its assets the same), its weights elsewhere:
    # those of the first moved by noise, which costs less than training
    other = root / "other"
    shutil.copytree(run, other)
    model = load_run(other).model
    rng = np.random.default_rng(2)
    model.set_weights([w + rng.normal(scale=0.5 * (w.std() + 0.01), size=w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    model.save(other / "best.keras")
    # the recipe's export.check: served in a fresh process with tensorflow_text
    assert main(["export", str(run), str(other), str(root / "ensemble"), "--set",
                 "decode.beam_width=1"]) == 0
    runs = [load_run(path, root, overrides=["decode.beam_width=1"]) for path in (run, other)]
    app, config, assets, _ = runs[0]
    models = [r.model for r in runs]
    serving = app.serving(app.ensemble(models), config, assets, 1)
    source, target = app.processors(assets)
    sentences = dev_sources(root)[:3]
    for sentence, translation in zip(sentences, serving.translate(sentences)):
        ids = source.encode(sentence)
        expected = greedy_reference(models, ids, max_length=int(np.ceil(2.0 * len(ids) + 10)))
        assert translation == target.decode(expected)
    loaded = tf.saved_model.load(str(root / "ensemble"))
    served = loaded.signatures["serving_default"](source=tf.constant(sentences))["translation"]
    assert [t.decode() for t in served.numpy()] == serving.translate(sentences)


# -- the model ------------------------------------------------------------------


def test_label_smoothed_loss_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype("float32")
    labels = np.array([[4, 1, 0], [3, 2, 2]])
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = 0.9 * np.eye(5)[labels] + 0.1 / 5
    expected = -(targets * log_probs).sum(-1)
    np.testing.assert_allclose(smoothed_cross_entropy(labels, logits, 0.1), expected, rtol=1e-5)
    model = Translator(7, 5, 4, 4, encoder={"units": 3}, decoder={"units": 4},
                       label_smoothing=0.1)
    y = tf.constant(labels)
    mask = labels != subwords.PAD
    np.testing.assert_allclose(model.compute_loss(None, y, tf.constant(logits)),
                               expected[mask].mean(), rtol=1e-5)


def test_guided_attention_adds_its_weighted_loss_in_training_only():
    from lstm_core.attention import diagonal_attention_loss

    model = Translator(7, 9, 4, 6, encoder={"units": 3}, decoder={"units": 5},
                       guided_attention={"weight": 2.0, "width": 0.3})
    batch = {"source": tf.constant([[4, 5, 6, 0], [5, 4, 0, 0]]),
             "target_in": tf.constant([[2, 6, 7], [2, 8, 0]])}
    model(batch)
    assert not model.losses  # inference adds nothing
    model(batch, training=True)
    _, alignments = model.teacher_forced(batch)  # no dropout: as in training
    expected = 2.0 * diagonal_attention_loss(alignments, batch["source"] != 0,
                                             batch["target_in"] != 0, 0.3)
    assert len(model.losses) == 1 and float(model.losses[0]) == pytest.approx(float(expected))
    assert float(expected) > 0
    restored = Translator.from_config(model.get_config())
    assert restored.settings["guided_attention"] == {"weight": 2.0, "width": 0.3}


def test_word_dropout_zeroes_whole_subword_embeddings_in_training_only():
    model = Translator(7, 9, 4, 6, encoder={"units": 3}, decoder={"units": 5},
                       word_dropout=0.5, seed=3)
    ids = tf.constant([[4, 5, 6, 4, 5, 6, 4, 5]] * 4)
    full = model.source_embedding(ids).numpy()
    np.testing.assert_array_equal(model.embed(model.source_embedding, ids, False), full)
    dropped = model.embed(model.source_embedding, ids, True).numpy()
    kept = (dropped != 0).all(-1)
    assert ((dropped == 0).all(-1) | kept).all()  # a subword goes whole or stays
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(dropped[kept], 2 * full[kept], rtol=1e-6)  # kept ones rescaled
    assert Translator.from_config(model.get_config()).settings["word_dropout"] == 0.5


def test_tied_embeddings_score_with_the_target_embeddings():
    model = Translator(7, 9, 4, 6, encoder={"units": 3}, decoder={"units": 5},
                       tie_embeddings=True)
    batch = {"source": tf.constant([[4, 5, 0]]), "target_in": tf.constant([[2, 6]])}
    logits = model(batch)
    assert not hasattr(model.logits, "kernel") and model.decoder.cell.output_units == 6
    outputs, _ = model.decoder(model.target_embedding(batch["target_in"]),
                               *model.encode(batch["source"]))
    expected = outputs.numpy() @ model.target_embedding.embeddings.numpy().T
    np.testing.assert_allclose(logits, expected + model.logits.bias.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"output_units \(5\) must be the target embedding size"):
        Translator(7, 9, 4, 6, decoder={"units": 5, "output_units": 5}, tie_embeddings=True)


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called")  # the build that failed
def test_dot_attention_of_mismatched_sizes_is_a_recipe_error(trained):
    _, run = trained
    app, config, assets, _ = load_run(run)
    decoder = {**config["model"]["decoder"], "attention": "dot", "units": 20}  # memory: 2 x 12
    model = {**config["model"], "decoder": decoder}
    with pytest.raises(RecipeError, match="dot attention needs queries and memory of one size"):
        app.build_model({**config, "model": model}, assets)
    assert app.dev_metric({"data": {"dev_score": "loss"}}) == ""


# -- fine-tuning --------------------------------------------------------------------


def new_domain(root):
    """Pairs the module's model never saw, all about named people: train from
    the rest of the sample's training text, dev from its dev text."""
    names = ("Anna", "Tom", "Maria", "Peter", "Lena", "Omar", "Yuki", "Carlos", "Ingrid", "Kofi")

    def about_people(lines):
        return [line for line in lines if any(name in line.split("\t")[0] for name in names)]

    train = (SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()[320:]
    dev = (SAMPLE / "dev.tsv").read_text(encoding="utf-8").splitlines()[16:]
    for split, lines, count in (("train", train, 240), ("dev", dev, 24)):
        (root / f"{split}.tsv").write_text("\n".join(about_people(lines)[:count]) + "\n",
                                           encoding="utf-8")
    (root / "test.tsv").write_text((root / "dev.tsv").read_text(encoding="utf-8"), encoding="utf-8")


def finetune_on_new_domain(trained, folder, *settings):
    """The fine-tuned run (dev scored by its loss) in ``folder``/tuned."""
    root, run = trained
    new_domain(folder)
    tuned = folder / "tuned"
    overrides = [arg for setting in ("data.dev_score=loss", *settings) for arg in ("--set", setting)]
    assert main(["finetune", str(root / "recipe.yaml"), "--from", str(run), "--data-dir",
                 str(folder), "--run-dir", str(tuned), "--quiet", *overrides]) == 0
    return tuned


def test_finetune_on_a_new_domain_keeps_the_subwords_and_lowers_its_loss(trained, tmp_path):
    run = trained[1]
    tuned = finetune_on_new_domain(trained, tmp_path, "train.epochs=3", "finetune.learning_rate=0.01")
    assert (tuned / "assets" / "shared.model").read_bytes() == (run / "assets" / "shared.model").read_bytes()
    assert not (tuned / "vocabularies.json").exists()
    losses = [json.loads(line)["dev_loss"] for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:])), losses  # epoch 0 first


def test_finetune_with_new_subwords_carries_the_shared_pieces_rows_over(trained, tmp_path):
    run = trained[1]
    tuned = finetune_on_new_domain(trained, tmp_path, "train.epochs=1", "data.subwords.finetune=new",
                                   "data.subwords.vocab_size=200", "finetune.learning_rate=0.0")
    changes = json.loads((tuned / "vocabularies.json").read_text())
    assert changes["source"]["kept"] > 50 and changes["source"]["added"] > 0
    old, new = load_run(run), load_run(tuned)
    pieces = {side: TranslationApp().vocabularies(r.assets)["target"] for side, r in
              (("old", old), ("new", new))}
    shared = [p for p in pieces["new"] if p in set(pieces["old"])]
    before, after = (np.asarray(r.model.target_embedding.embeddings) for r in (old, new))
    for piece in shared[:40]:
        np.testing.assert_array_equal(after[pieces["new"].index(piece)],
                                      before[pieces["old"].index(piece)])
