"""Fine-tuning with changed vocabularies (lstm_core.transfer), through the toy app."""

import json

import keras
import numpy as np
import pytest

from lstm_core import runs, trainer, transfer
from lstm_core.recipes import RecipeError
from tests.toy_app import toy_app, toy_config, trained_run  # noqa: F401  (fixtures)


def weights(run):
    model = keras.saving.load_model(run / "best.keras", compile=False)
    return {layer.name: [np.asarray(w) for w in layer.weights] for layer in model.layers}


def assert_same(old, new, *layers):
    for name in layers:
        for a, b in zip(old[name], new[name]):
            np.testing.assert_array_equal(a, b)


def finetune(toy_app, tmp_path, trained_run, *overrides):
    app, config, root = toy_config(tmp_path, "train.epochs=1", *overrides)
    run = tmp_path / "tuned"
    trainer.train(app, config, run, root, quiet=True, init_from=trained_run)
    return run


def test_remap_copies_shared_entries_on_every_vocabulary_axis():
    old = np.arange(9.0).reshape(3, 3)  # transitions between tags a, b, c
    rows = transfer.positions(["a", "b", "c"], ["c", "a", "d"])
    np.testing.assert_array_equal(rows, [2, 0, -1])
    new = transfer.remap(old, np.full((3, 3), -1.0), [rows, rows])
    np.testing.assert_array_equal(new, [[8, 6, -1], [2, 0, -1], [-1, -1, -1]])
    kernel = transfer.remap(np.ones((2, 3)), np.zeros((2, 2)), [None, transfer.positions("abc", "bx")])
    np.testing.assert_array_equal(kernel, [[1, 0], [1, 0]])
    with pytest.raises(Exception, match="axis 0 is no vocabulary's"):
        transfer.remap(np.ones((2, 3)), np.zeros((4, 3)), [None, None])


def test_new_labels_keep_the_old_ones_rows_and_the_start_is_scored_as_epoch_0(
        trained_run, toy_app, tmp_path):
    run = finetune(toy_app, tmp_path, trained_run, "data.labels=[positive, negative, neutral]",
                   "finetune.learning_rate=0.0")
    old, new = weights(trained_run), weights(run)
    assert_same(old, new, "project", "lstm")
    (kernel, bias), (new_kernel, new_bias) = old["output"], new["output"]
    np.testing.assert_array_equal(new_kernel[:, :2], kernel[:, ::-1])  # reordered, kept
    np.testing.assert_array_equal(new_bias[:2], bias[::-1])
    assert new_kernel.shape == (kernel.shape[0], 3) and np.abs(new_kernel[:, 2]).sum() > 0
    report = runs.read_json(run / "vocabularies.json")
    assert report["labels"] == {"kept": 2, "added": 1, "dropped": 0, "added_first": ["neutral"],
                                "dropped_first": []}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert (run / "figures" / "dev-epoch-000.png").is_file()


def test_epoch_0_is_the_starting_models_dev_score(trained_run, toy_app, tmp_path):
    run = finetune(toy_app, tmp_path, trained_run)
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    source = runs.read_json(trained_run / "result.json")["best"]
    assert start["epoch"] == 0 and start["dev_accuracy"] == source["dev_accuracy"]
    assert not (run / "vocabularies.json").exists()  # nothing changed, nothing to report


def test_frozen_layers_keep_the_starting_weights(trained_run, toy_app, tmp_path):
    run = finetune(toy_app, tmp_path, trained_run, "finetune.freeze=[lst, project]",
                   "finetune.learning_rate=0.05")
    old, new = weights(trained_run), weights(run)
    assert_same(old, new, "project", "lstm")
    assert not np.array_equal(old["output"][0], new["output"][0])


def test_a_freeze_naming_no_layer_is_a_recipe_error(trained_run, toy_app, tmp_path):
    with pytest.raises(RecipeError, match=r"finetune.freeze: the model has no layer named or "
                                          r"starting with 'lsmt'; did you mean lstm\?"):
        finetune(toy_app, tmp_path, trained_run, "finetune.freeze=[lsmt]")
    assert not (tmp_path / "tuned").exists()


def test_finetuning_has_its_own_learning_rate(toy_app, tmp_path):
    _, config, _ = toy_config(tmp_path)  # the toy recipe trains at 0.01
    assert trainer.finetune_train(config)["optimizer"]["learning_rate"] == pytest.approx(0.001)
    _, config, _ = toy_config(tmp_path, "finetune.learning_rate=0.003")
    assert trainer.finetune_train(config)["optimizer"]["learning_rate"] == 0.003
    assert config["train"]["optimizer"]["learning_rate"] == 0.01  # the recipe's is untouched
