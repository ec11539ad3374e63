"""The NER app end to end through the CLI, on tiny generated data: train,
evaluate, predict, export (served in a fresh process, tagging exactly as
predict does), pretrained vectors and fine-tuning."""

import gc
import json
import shutil
import warnings
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.ner.app import NERApp, _looks_like_conll, read_embeddings
from apps.ner.features import Featurizer
from lstm_core.apps import MODEL_CACHE
from lstm_core.cli import main
from lstm_core.crf import viterbi_decode
from lstm_core.errors import UserError
from lstm_core.export import check_in_fresh_process
from lstm_core.recipes import read_config
from lstm_core.runs import load_run

NAMES = ["Anna Berg", "Omar Haddad", "Li Wei"]
PLACES = ["Paris", "Oslo", "Lima"]


def write_conll(path, count, seed):
    rng = np.random.default_rng(seed)
    lines = ["-DOCSTART- O", ""]
    for _ in range(count):
        name, place = NAMES[rng.integers(3)].split(), PLACES[rng.integers(3)]
        tokens = name + ["visited", place, "."]
        tags = ["B-PER"] + ["I-PER"] * (len(name) - 1) + ["O", "B-LOC", "O"]
        lines += [f"{t} {g}" for t, g in zip(tokens, tags)] + [""]
    path.write_text("\n".join(lines) + "\n")


RECIPE = """
app: ner
data: {train_file: train.txt, dev_file: dev.txt, test_file: test.txt}
model:
  word_dim: 8
  char_dim: 4
  char_units: 4
  encoder: {units: 8, cell_options: {cell_clip: 3.0}}
  dropout: 0.1
train: {epochs: 2, batch_size: 8, optimizer: {learning_rate: 0.02}}
export: {check: false}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    write_conll(root / "train.txt", 48, 0)
    write_conll(root / "dev.txt", 12, 1)
    (root / "recipe.yaml").write_text(RECIPE)
    run = root / "run"
    assert main(["train", str(root / "recipe.yaml"), "--data-dir", str(root),
                 "--run-dir", str(run), "--quiet"]) == 0
    return root, run


def test_training_scores_dev_and_the_missing_test_file_is_skipped(trained):
    root, run = trained
    assert not (root / "test.txt").exists()  # named by the recipe, absent on disk
    result = json.loads((run / "result.json").read_text())
    assert result["best"]["dev_f1"] > 50
    assert result["test"] == {}  # skipped, not scored as empty nor an error
    report = (run / "report.txt").read_text()
    assert "PER" in report and "== test" not in report
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    # counts go to metrics.jsonl; only scores are floats in the progress logs
    assert isinstance(records[-1]["dev_true_entities"], int) and records[-1]["dev_true_entities"] > 0


def test_a_misspelt_cell_option_is_a_recipe_error_naming_it(trained, capsys):
    root, _ = trained
    code = main(["train", str(root / "recipe.yaml"), "--data-dir", str(root), "--run-dir",
                 str(root / "misspelt"), "--set", "model.encoder.cell_options.cell_clp=3"])
    error = capsys.readouterr().err
    assert code == 2 and "model.encoder.cell_options: peephole_lstm takes no cell_clp" in error
    assert "did you mean cell_clip?" in error and not (root / "misspelt").exists()


def test_a_run_finds_its_data_under_a_new_data_root(trained, tmp_path, capsys):
    root, run = trained
    assert read_config(run / "recipe.yaml")["data"]["dev_file"] == "dev.txt"  # no machine path
    assert main(["evaluate", str(run), "--data-dir", str(root)]) == 0
    scores = capsys.readouterr().out
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "dev.txt").write_text((root / "dev.txt").read_text())
    assert main(["evaluate", str(run), "--data-dir", str(moved)]) == 0
    assert capsys.readouterr().out == scores
    assert main(["evaluate", str(run), "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert str(tmp_path / "nowhere" / "dev.txt") in capsys.readouterr().err

    # a run that recorded its data paths resolved (as earlier versions did)
    # is the same recipe: train reports it complete instead of refusing it
    resolved = tmp_path / "resolved"
    shutil.copytree(run, resolved)
    recipe = (resolved / "recipe.yaml").read_text()
    (resolved / "recipe.yaml").write_text(recipe.replace(": dev.txt", f": {root / 'dev.txt'}"))
    assert str(root / "dev.txt") in (resolved / "recipe.yaml").read_text()
    assert main(["train", str(root / "recipe.yaml"), "--data-dir", str(root),
                 "--run-dir", str(resolved)]) == 0
    assert "already complete" in capsys.readouterr().out


def test_data_without_sentences_is_an_error_not_a_score(trained, tmp_path, capsys):
    root, run = trained
    empty = tmp_path / "empty.txt"
    empty.write_text("-DOCSTART- O\n\n")
    assert main(["evaluate", str(run), "--data", str(empty)]) == 2
    assert f"{empty}: no sentences" in capsys.readouterr().err
    (tmp_path / "dev.txt").write_text((root / "dev.txt").read_text())
    (tmp_path / "train.txt").write_text("")
    assert main(["train", str(root / "recipe.yaml"), "--data-dir", str(tmp_path),
                 "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    assert f"{tmp_path / 'train.txt'}: no sentences" in capsys.readouterr().err


def test_export_serves_in_a_fresh_process_and_tags_like_predict(trained, capsys):
    root, run = trained
    assert main(["export", str(run), str(root / "export")]) == 0
    predicted = root / "predicted.conll"
    assert main(["predict", str(run), str(root / "dev.txt"), "--output", str(predicted)]) == 0
    blocks = [b.splitlines() for b in predicted.read_text().strip().split("\n\n")]
    sentences = [" ".join(line.split()[0] for line in block) for block in blocks]
    # one fresh process (it starts TensorFlow twice over: TF2 and a TF1 session)
    served = check_in_fresh_process(root / "export", {"sentences": sentences + ["Zyx", "", "  "]})
    for block, tags, length in zip(blocks, served["tags"], served["lengths"]):
        assert [line.split()[-1] for line in block] == tags[:length]
        assert all(tag == "" for tag in tags[length:])
    assert served["lengths"][-3:] == [1, 0, 0]  # unknown words and characters, empty sentences
    assert all(tag == "" for tags in served["tags"][-2:] for tag in tags)
    serve = tf.saved_model.load(str(root / "export")).signatures["serving_default"]
    assert serve(sentences=tf.constant([], tf.string))["tags"].shape == (0, 0)


def test_char_cnn_and_softmax_output_train_and_serve(trained):
    root, _ = trained
    run = root / "cnn-softmax"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(root / "recipe.yaml"), "--data-dir", str(root), "--run-dir",
                     str(run), "--set", "model.char_encoder=cnn", "--set", "model.output=softmax",
                     "--set", "train.epochs=1", "--quiet"]) == 0
    assert not [w for w in caught if "mask" in str(w.message)]
    assert main(["export", str(run), str(root / "cnn-softmax-export")]) == 0
    served = check_in_fresh_process(root / "cnn-softmax-export",
                                    {"sentences": ["Anna Berg visited Oslo .", "Li"]})
    assert served["lengths"] == [5, 1] and all(served["tags"][0]) and served["tags"][1][1:] == [""] * 4


def test_runs_of_other_seeds_and_variants_export_as_one_averaging_ensemble(trained):
    root, run = trained
    train = ["train", str(root / "recipe.yaml"), "--data-dir", str(root), "--quiet"]
    assert main([*train, "--run-dir", str(root / "seed2"), "--set", "train.seed=2",
                 "--set", "model.encoder.num_layers=2"]) == 0
    assert main(["export", str(run), str(root / "seed2"), str(root / "ensemble")]) == 0
    sentences = ["Anna Berg visited Lima .", "Li Wei visited Zyx", "Omar"]
    served = check_in_fresh_process(root / "ensemble", {"sentences": sentences})

    # independently: average the two taggers' scores and CRF scores, then Viterbi
    runs = [load_run(path) for path in (run, root / "seed2")]
    assets = runs[0][2]
    features = Featurizer(assets["words"], assets["chars"], assets["lowercase"],
                          assets["max_word_length"])(tf.constant(sentences))
    lengths = np.sum(features["words"].numpy() > 0, axis=1)
    scores = np.mean([model(features).numpy() for *_, model in runs], axis=0)
    crf = [np.mean(parts, axis=0) for parts in zip(*(model.crf.scores() for *_, model in runs))]
    ids = viterbi_decode(scores, lengths, *crf)[0].numpy()
    expected = [[assets["tags"][i].replace("S-", "B-").replace("E-", "I-") for i in row[:n]]
                for row, n in zip(ids, lengths)]
    assert [tags[:n] for tags, n in zip(served["tags"], served["lengths"])] == expected

    # only runs of one vocabulary can join: others are refused
    shutil.copytree(run, root / "lower")
    lowered = json.loads((root / "lower" / "assets.json").read_text())
    (root / "lower" / "assets.json").write_text(json.dumps({**lowered, "lowercase": True}))
    assert main(["export", str(run), str(root / "lower"), str(root / "mixed")]) == 2
    assert not (root / "mixed").exists()
    # nor a softmax tagger with CRF taggers
    app, config, assets, crf_tagger = runs[0]
    softmax = app.build_model({**config, "model": {**config["model"], "output": "softmax"}}, assets)
    with pytest.raises(UserError, match="all have model.output crf, or all softmax"):
        app.ensemble([crf_tagger, softmax])


def test_plain_text_prediction_gives_entity_offsets(trained):
    root, run = trained
    text = root / "input.txt"
    text.write_text("Anna Berg visited Oslo.\n\n")
    out = root / "tagged.jsonl"
    assert main(["predict", str(run), str(text), "--output", str(out)]) == 0
    first, empty = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["tokens"] == ["Anna", "Berg", "visited", "Oslo", "."]
    for entity in first["entities"]:
        assert first["text"][entity["start"]:entity["end"]] == entity["text"]
    assert empty["tokens"] == [] and empty["entities"] == []

    text.write_text("Traffic stopped on I-95\n")  # not a CoNLL line: no such entity type
    assert main(["predict", str(run), str(text), "--output", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["tokens"] == ["Traffic", "stopped", "on", "I-95"]


def test_conll_input_is_told_from_plain_text():
    tags = ["O", "B-PER", "I-PER", "B-LOC"]
    assert _looks_like_conll(["-DOCSTART-", "", "Anna B-PER", "Berg I-PER", "", "Oslo B-LOC"], tags)
    assert _looks_like_conll(["-DOCSTART- -X- -X- O", "", "Anna NNP B-NP B-PER"], tags)
    assert not _looks_like_conll(["Traffic stopped on I-95"], tags)  # no type "95"
    assert not _looks_like_conll(["Anna visited Oslo O", "Oslo B-LOC"], tags)  # ragged
    assert not _looks_like_conll(["", "-DOCSTART-"], tags)


def test_finetune_to_another_tag_scheme_keeps_the_rows_of_shared_tags(trained):
    root, run = trained
    assert main(["finetune", str(root / "recipe.yaml"), "--from", str(run), "--data-dir", str(root),
                 "--run-dir", str(root / "tuned"), "--set", "train.epochs=1",
                 "--set", "data.scheme=bio", "--quiet"]) == 0
    # Every tag of each seen type, though places are only ever single tokens.
    assert json.loads((run / "assets.json").read_text())["tags"] == [
        "O", "B-LOC", "B-PER", "E-LOC", "E-PER", "I-LOC", "I-PER", "S-LOC", "S-PER"]
    assert json.loads((root / "tuned" / "assets.json").read_text())["tags"] == [
        "O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    tags = json.loads((root / "tuned" / "vocabularies.json").read_text())["tags"]
    assert (tags["kept"], tags["added"], tags["dropped"]) == (5, 0, 4)


ORGS = ["Acme Corp", "Nordbank"]


def write_org_conll(path, count, seed):
    """Sentences of the old pattern with an organisation after it."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count):
        name, place = NAMES[rng.integers(3)].split(), PLACES[rng.integers(3)]
        org = ORGS[rng.integers(2)].split()
        tokens = name + ["visited", place, "for"] + org + ["."]
        tags = (["B-PER"] + ["I-PER"] * (len(name) - 1) + ["O", "B-LOC", "O", "B-ORG"]
                + ["I-ORG"] * (len(org) - 1) + ["O"])
        lines += [f"{t} {g}" for t, g in zip(tokens, tags)] + [""]
    path.write_text("\n".join(lines) + "\n")


def per_type_f1(run, path):
    from apps.ner import data as conll
    from apps.ner.metrics import entity_scores

    loaded = load_run(run)
    sentences = conll.read_conll(path)
    predicted = NERApp().serving(loaded.model, loaded.assets).tag([s.tokens for s in sentences])
    scores = entity_scores([s.tags for s in sentences], predicted)["per_type"]
    return {kind: s["f1"] for kind, s in scores.items()}


def test_finetune_learns_a_new_entity_type_and_keeps_the_old_ones(trained, tmp_path):
    root, run = trained
    write_org_conll(tmp_path / "train.txt", 48, 2)
    write_org_conll(tmp_path / "dev.txt", 12, 3)
    assert main(["finetune", str(root / "recipe.yaml"), "--from", str(run),
                 "--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "tuned"), "--quiet",
                 "--set", "train.epochs=4", "--set", "finetune.learning_rate=0.02"]) == 0
    changes = json.loads((tmp_path / "tuned" / "vocabularies.json").read_text())
    assert changes["tags"]["added_first"] == ["B-ORG", "E-ORG", "I-ORG", "S-ORG"]
    assert changes["tags"]["dropped"] == 0 and changes["tags"]["kept"] == 9
    assert {"Acme", "Corp", "Nordbank", "for"} <= set(changes["words"]["added_first"])
    records = [json.loads(line) for line in (tmp_path / "tuned" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    assert records[-1]["dev_f1"] > records[0]["dev_f1"] + 20  # before: no ORG found at all
    before, after = per_type_f1(run, root / "dev.txt"), per_type_f1(tmp_path / "tuned", root / "dev.txt")
    assert per_type_f1(tmp_path / "tuned", tmp_path / "dev.txt")["ORG"] >= 80
    for kind in ("PER", "LOC"):  # the old types on the old dev data: within 10 points
        assert after[kind] >= before[kind] - 10, (kind, before, after)


def test_finetune_starts_new_words_from_pretrained_vectors_and_keeps_known_ones(trained, tmp_path):
    root, run = trained
    write_org_conll(tmp_path / "train.txt", 8, 4)
    write_org_conll(tmp_path / "dev.txt", 4, 5)
    (tmp_path / "vectors.txt").write_text("Nordbank " + " ".join(["0.5"] * 8) + "\n"
                                          "Anna " + " ".join(["9"] * 8) + "\n")
    tuned = tmp_path / "tuned"
    assert main(["finetune", str(root / "recipe.yaml"), "--from", str(run), "--data-dir",
                 str(tmp_path), "--run-dir", str(tuned), "--quiet", "--set", "train.epochs=1",
                 "--set", "data.embeddings=vectors.txt", "--set", "finetune.learning_rate=0.0"]) == 0
    old, new = load_run(run), load_run(tuned)

    def row(loaded, word):  # ids 0 and 1 are padding and unknown
        table = keras.ops.convert_to_numpy(loaded.model.word_embedding.embeddings)
        return table[2 + loaded.assets["words"].index(word)]

    np.testing.assert_array_equal(row(new, "Nordbank"), [0.5] * 8)  # new: from the vectors
    np.testing.assert_array_equal(row(new, "Anna"), row(old, "Anna"))  # known: as trained


def test_vector_files_glove_and_word2vec(tmp_path):
    glove = tmp_path / "glove.txt"
    glove.write_text("the 1 2\n. . . 3 4\nParis 5 6\n")  # a word with spaces, as in GloVe 840B
    assert {w: v.tolist() for w, v in read_embeddings(glove, True).items()} == \
        {"the": [1, 2], "paris": [5, 6]}
    glove.write_text("the 1 2\nParis 5\n")
    with pytest.raises(UserError, match=r"glove.txt:2: 1 values where the vectors have 2"):
        read_embeddings(glove, False)
    word2vec = tmp_path / "w2v.txt"
    word2vec.write_text("2 1\nthe 1\n. . 2\n")
    assert {w: v.tolist() for w, v in read_embeddings(word2vec, False).items()} == {"the": [1]}


def test_pretrained_vectors_initialize_known_words(tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("2 3\nParis 1 2 3\nzebra 4 5 6\n")  # word2vec header
    app = NERApp()
    assets = tiny_assets()
    config = tiny_config(app, str(vectors))
    assets["words"] += [w for w in read_embeddings(vectors, False) if w not in assets["words"]]
    model = app.build_model(config, assets)
    app.initialize(model, config, assets)
    table = keras.ops.convert_to_numpy(model.word_embedding.embeddings)
    np.testing.assert_array_equal(table[2], [1, 2, 3])  # "Paris"
    np.testing.assert_array_equal(table[3], [4, 5, 6])  # "zebra", from the vectors only
    vectors.unlink()  # using a trained run does not need the vectors again
    app.build_model(config, assets)


def tiny_assets():
    return {"words": ["Paris"], "chars": list("Paris"), "tags": ["O", "B-LOC"],
            "scheme": "bio", "lowercase": False, "max_word_length": 10}


def tiny_config(app, embeddings=None):
    """The schema's defaults, with small sizes."""
    defaults = {k: f.default for k, f in app.model_schema.items() if not isinstance(f, dict)}
    encoder = {k: f.default for k, f in app.model_schema["encoder"].items()}
    return {"model": {**defaults, "word_dim": 3, "char_dim": 2, "char_units": 2, "caps_dim": 2,
                      "encoder": {**encoder, "units": 3}},
            "data": {"embeddings": embeddings}}


def test_a_model_has_one_serving_module_and_both_are_freed_with_it():
    app = NERApp()
    assets = tiny_assets()
    tagger = app.build_model(tiny_config(app), assets)
    serving = app.serving(tagger, assets)
    assert app.serving(tagger, assets) is serving
    tags = serving.tag([["Paris", "is"], ["Oslo"]])
    assert [len(t) for t in tags] == [2, 1] and app.serving(tagger, assets).tag([["Oslo"]]) == tags[1:]
    assert serving.serving_default.experimental_get_tracing_count() == 1  # traced once, reused
    # Not part of the model's state: no checkpoint or SavedModel of the model holds it.
    assert MODEL_CACHE not in tf.train.TrackableView(tagger).children(tagger)
    model, module = weakref.ref(tagger), weakref.ref(serving)
    del tagger, serving
    gc.collect()
    assert model() is None and module() is None
