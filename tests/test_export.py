"""Export: a SavedModel that a fresh process serves with TensorFlow alone
(and the app's declared serving imports), through both the TF2 loader and a
TF1 session as TensorFlow Serving loads it, with the same outputs; carrying
the run's asset files; never overwriting, never half-written."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from lstm_core import export
from lstm_core.errors import UserError
from lstm_core.runs import load_run
from tests.toy_app import LABELS, ToyApp, toy_app, trained_run  # noqa: F401


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")]


def in_tf1_session(saved_model_dir, inputs):
    """Outputs of serving_default as TensorFlow Serving computes them: the
    MetaGraph imported into a TF1 session, variables restored by its saver,
    fed and fetched by the signature's tensor names."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(saved_model_dir))
        signature = meta.signature_def["serving_default"]
        return session.run({name: info.name for name, info in signature.outputs.items()},
                           {signature.inputs[name].name: value for name, value in inputs.items()})


def expected_outputs(run_dir, example):
    app, config, assets, model = load_run(run_dir)
    module = app.serving_module(model, config, assets)  # kept: tf.function holds it weakly
    return {name: value.numpy() for name, value in module.serving_default(**example).items()}


def test_export_serves_through_both_loaders_and_moves_as_one_folder(trained_run, toy_app, tmp_path,
                                                                    monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    calls = []
    serve = export.serve_in_fresh_process
    monkeypatch.setattr(export, "serve_in_fresh_process",
                        lambda *args: calls.append(args) or serve(*args))
    out = export.export_run(run, tmp_path / "saved")
    assert (out / "saved_model.pb").is_file() and not leftovers(tmp_path)
    assert len(calls) == 1 and calls[0][2] == ["wave"]  # the recipe's export.check ran, importing wave
    # the run's asset file is in the export, once (the module's Asset and the core's are one file)
    assert sorted(p.name for p in (out / "assets").iterdir()) == ["labels.txt"]
    assert (out / "assets" / "labels.txt").read_bytes() == (run / "assets" / "labels.txt").read_bytes()

    example = ToyApp().serving_example(None)
    expected = expected_outputs(run, example)
    moved = tmp_path / "elsewhere" / "saved"
    moved.parent.mkdir()
    shutil.move(out, moved)
    shutil.rmtree(run)  # the export needs nothing of the run any more
    loaded = tf.saved_model.load(str(moved))
    assert Path(loaded.asset_files["labels.txt"].asset_path.numpy().decode()) == \
        moved / "assets" / "labels.txt"
    values = np.asarray(example["values"], "float32")
    tf2 = {k: v.numpy() for k, v in loaded.signatures["serving_default"](values=values).items()}
    for served in (tf2, in_tf1_session(moved, {"values": values})):
        assert served.keys() == {"labels", "probabilities"}
        np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=1e-5)
        assert served["labels"].tolist() == expected["labels"].tolist()
        assert set(served["labels"].tolist()) <= {label.encode() for label in LABELS}


def test_saving_the_module_itself_would_not_load_in_a_tf1_session(trained_run, toy_app, tmp_path):
    """Why the export builds an archive: Keras variables saved through the
    app's tf.Module restore under the TF2 loader only (keras#20095)."""
    app, config, assets, model = load_run(trained_run)
    module = app.serving_module(model, config, assets)
    tf.saved_model.save(module, str(tmp_path / "plain"),
                        signatures={"serving_default": module.serving_default})
    values = np.asarray(app.serving_example(assets)["values"], "float32")
    with pytest.raises(tf.errors.FailedPreconditionError, match="Could not find variable"):
        in_tf1_session(tmp_path / "plain", {"values": values})

    archive, concrete = export.serving_archive(module)
    tf.saved_model.save(archive, str(tmp_path / "archive"), signatures={"serving_default": concrete})
    np.testing.assert_allclose(in_tf1_session(tmp_path / "archive", {"values": values})["probabilities"],
                               module.serving_default(values)["probabilities"], atol=1e-5)


class Echo(tf.Module):
    """Bytes, doubles and int64s in and out, and a variable to restore."""

    def __init__(self):
        super().__init__()
        self.scale = tf.Variable(2.0, dtype=tf.float64)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="data"),
                                  tf.TensorSpec([None, 2], tf.float64, name="x"),
                                  tf.TensorSpec([None], tf.int64, name="n")])
    def serving_default(self, data, x, n):
        return {"data": data, "sizes": tf.strings.length(data), "x": x * self.scale, "n": n + 1}


def test_the_fresh_process_channel_carries_any_dtype_exactly(tmp_path):
    module = Echo()
    archive, concrete = export.serving_archive(module)
    tf.saved_model.save(archive, str(tmp_path / "echo"), signatures={"serving_default": concrete})
    data = np.array([b"\x00\xff\x00", "é".encode(), b"", b"tail\x00"], object)  # not UTF-8, NULs
    x = np.array([[0.1, 1e-300], [np.nan, -np.inf], [1 / 3, 2.0 ** 60], [0.0, -0.0]])
    n = np.array([2 ** 62, -1, 0, 7], np.int64)
    tf2, tf1 = export.serve_in_fresh_process(tmp_path / "echo", {"data": data, "x": x, "n": n})
    for served in (tf2, tf1):
        assert served["data"].tolist() == data.tolist()
        assert served["sizes"].tolist() == [3, 2, 0, 5]
        assert served["x"].dtype == np.float64 and served["n"].dtype == np.int64
        np.testing.assert_array_equal(served["x"], x * 2)  # exact, NaN and infinities included
        assert served["n"].tolist() == (n + 1).tolist()
    assert export.jsonable(tf2)["data"][1:3] == ["é", ""]
    # lists are sent as TensorFlow reads them: str as UTF-8 (the child casts numbers)
    arrays = export.as_arrays({"data": ["é"], "x": [[1.5, 2]], "n": [3]})
    assert arrays["data"].tolist() == ["é".encode()] and arrays["x"].dtype == np.float32


def test_the_check_imports_the_declared_modules_and_never_the_suite(trained_run, toy_app, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(ToyApp, "serving_imports", ("no_such_serving_module",))
    with pytest.raises(UserError, match="serving import 'no_such_serving_module' failed"):
        export.export_run(trained_run, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)

    monkeypatch.setattr(ToyApp, "serving_imports", ("apps.ner",))
    with pytest.raises(UserError, match=r"serving imports \['apps.ner'\]: a serving process cannot "
                                        "import this suite"):
        export.export_run(trained_run, tmp_path / "out")
    # and the child refuses it even when asked
    monkeypatch.setattr(export, "_checked_imports", list)
    with pytest.raises(UserError, match="lstm_core must not be needed to serve"):
        export.serve_in_fresh_process(tmp_path, {}, ["lstm_core.runs"])


def test_differences_compare_floats_within_tolerance_and_the_rest_exactly():
    base = {"p": np.array([0.5, 0.25], np.float32), "s": np.array([b"a", b"b"], object),
            "n": np.array([1, 2], np.int32)}
    assert export.differences(base, {**base, "p": base["p"] + 1e-7}) == []
    assert export.differences(base, {**base, "p": base["p"] + 1e-2}) == ["p"]
    assert export.differences(base, {**base, "s": np.array([b"a", b"c"], object)}) == ["s"]
    assert export.differences(base, {**base, "n": np.array([1, 2], np.int64)}) == ["n"]  # dtype
    assert export.differences(base, {**base, "n": np.array([[1, 2]], np.int32)}) == ["n"]  # shape
    assert export.differences(base, {"p": base["p"]}) == ["n", "s"]


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


@pytest.mark.skipif(os.name != "posix", reason="asks whether a process id runs")
def test_an_export_removes_what_a_killed_export_to_it_left(trained_run, toy_app, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / f".tmp-{dead}-out" / "variables").mkdir(parents=True)  # SIGKILLed mid-save
    (tmp_path / f".tmp-{dead}-out" / "saved_model.pb").write_text("half")
    assert (export.export_run(trained_run, tmp_path / "out", check=False) / "saved_model.pb").is_file()
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("loader", ["tf2", "tf1"])
def test_an_export_whose_outputs_differ_is_not_kept(trained_run, toy_app, tmp_path, monkeypatch,
                                                    loader):
    def serve(path, example, imports):
        served = {"labels": np.array([b"negative", b"positive"], object),
                  "probabilities": np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)}
        real = expected_outputs(trained_run, example)
        return (served, real) if loader == "tf2" else (real, served)

    monkeypatch.setattr(export, "serve_in_fresh_process", serve)
    message = "tf.saved_model.load" if loader == "tf2" else "a TF1 session"
    with pytest.raises(UserError, match=f"export check failed: loaded with {message}"):
        export.export_run(trained_run, tmp_path / "out", check=True)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_a_serving_module_without_a_traceable_serving_default_is_refused(trained_run, toy_app,
                                                                        tmp_path, monkeypatch):
    monkeypatch.setattr(ToyApp, "serving_module", lambda self, model, config, assets: tf.Module())
    with pytest.raises(UserError, match="no tf.function serving_default"):
        export.export_run(trained_run, tmp_path / "out")

    class Unsigned(tf.Module):
        @tf.function
        def serving_default(self, values):
            return {"values": values}

    monkeypatch.setattr(ToyApp, "serving_module", lambda self, model, config, assets: Unsigned())
    with pytest.raises(UserError, match="needs an input_signature"):
        export.export_run(trained_run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
