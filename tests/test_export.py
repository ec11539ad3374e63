"""Export: a SavedModel that a fresh process serves with TensorFlow alone and
the same outputs; never overwriting, never half-written."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from lstm_core import export
from lstm_core.errors import UserError
from lstm_core.runs import load_run
from tests.toy_app import ToyApp, toy_app, trained_run  # noqa: F401


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_export_serves_in_a_fresh_process_with_the_same_outputs(trained_run, toy_app, tmp_path,
                                                                monkeypatch):
    served = []
    check = export.check_in_fresh_process
    monkeypatch.setattr(export, "check_in_fresh_process",
                        lambda *args: served.append(check(*args)) or served[-1])
    out = export.export_run(trained_run, tmp_path / "saved")
    assert (out / "saved_model.pb").is_file() and not leftovers(tmp_path)
    assert len(served) == 1  # the recipe's export.check ran it

    app, config, assets, model = load_run(trained_run)
    example = app.serving_example(assets)
    module = app.serving_module(model, config, assets)  # kept: tf.function holds it weakly
    expected = module.serving_default(**example)
    np.testing.assert_allclose(served[0]["probabilities"], expected["probabilities"], atol=1e-5)
    assert served[0]["labels"] == [label.decode() for label in expected["labels"].numpy()]
    reloaded = tf.saved_model.load(str(out)).signatures["serving_default"]
    np.testing.assert_allclose(reloaded(values=tf.constant(example["values"]))["probabilities"],
                               expected["probabilities"], atol=1e-5)


def test_export_refuses_to_overwrite(trained_run, toy_app, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="won't overwrite"):
        export.export_run(trained_run, tmp_path / "taken", check=False)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()  # an empty directory is fine
    assert (export.export_run(trained_run, tmp_path / "empty", check=False) / "saved_model.pb").is_file()


def test_a_failed_export_leaves_nothing_behind(trained_run, toy_app, tmp_path, monkeypatch):
    def half_write(module, path, signatures):
        Path(path).mkdir()
        (Path(path) / "saved_model.pb").write_text("half")
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(export.tf.saved_model, "save", half_write)
    with pytest.raises(UserError, match="cannot write the SavedModel to .*out: No space left"):
        export.export_run(trained_run, tmp_path / "out", check=False)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_an_export_whose_outputs_differ_is_not_kept(trained_run, toy_app, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "check_in_fresh_process",
                        lambda path, example: {"labels": ["?", "?"], "probabilities": [[0, 1], [0, 1]]})
    with pytest.raises(UserError, match="export check failed"):
        export.export_run(trained_run, tmp_path / "out", check=True)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_a_serving_module_without_serving_default_is_refused(trained_run, toy_app, tmp_path,
                                                           monkeypatch):
    monkeypatch.setattr(ToyApp, "serving_module", lambda self, model, config, assets: tf.Module())
    with pytest.raises(UserError, match="no tf.function serving_default"):
        export.export_run(trained_run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
