"""A model built from the core layers exports a SavedModel that a new Python
process serves with plain TensorFlow, without lstm_core importable."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

from lstm_core import PeepholeLSTM, RNNStack

CHILD = textwrap.dedent("""
    import json, sys

    class Blocked:  # any attempt to import the suite fails loudly
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("lstm_core", "apps"):
                raise ImportError(f"{name} must not be needed to serve")

    sys.meta_path.insert(0, Blocked())
    import numpy as np
    import tensorflow as tf
    served = tf.saved_model.load(sys.argv[1])
    x = np.load(sys.argv[2])
    out = served.serve(tf.constant(x))
    assert not any(name.startswith("lstm_core") for name in sys.modules)
    print(json.dumps(np.asarray(out).tolist()))
""")


def test_exported_model_serves_in_a_fresh_process_without_lstm_core(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 4)).astype("float32")
    x[1, 5:] = 0.0
    inputs = keras.Input((None, 4))
    h = keras.layers.Masking(0.0)(inputs)
    h = RNNStack("peephole_lstm", 5, num_layers=2, bidirectional=True,
                 cell_options=dict(cell_clip=1.0, num_proj=3, proj_clip=0.5))(h)
    h = PeepholeLSTM(4, go_backwards=True)(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    expected = model.predict(x, verbose=0)

    model.export(tmp_path / "saved", verbose=False)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "saved"), str(tmp_path / "x.npy")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    served = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(served, expected, atol=1e-5)


NER_RECIPE = """
app: ner
data: {train_file: train.txt, dev_file: train.txt}
model: {word_dim: 6, char_dim: 3, char_units: 3, encoder: {units: 5}, seed: SEED}
"""


def ner_tagger(folder, seed):
    """An untrained NER tagger (random weights tag at random, which is all
    a serving check needs) and its serving module, from a recipe."""
    from lstm_core.cli import load_config
    from lstm_core.schema import with_data_files

    (folder / "train.txt").write_text("EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\n"
                                      "John B-PER\nSmith I-PER\nvisited O\nParis B-LOC\n")
    recipe = folder / f"ner-{seed}.yaml"
    recipe.write_text(NER_RECIPE.replace("SEED", str(seed)))
    app, config, root, _ = load_config(recipe, data_dir=str(folder))
    assets = app.build_assets(with_data_files(app, config, root), root, folder)
    return app, config, assets, app.build_model(config, assets)


def test_the_ner_export_runs_in_saved_model_cli(tmp_path):
    """TensorFlow Serving's way of loading (MetaGraph, saver restore, init
    op), through ``saved_model_cli run``: Keras variables in the app's
    tf.Module, lookup tables, a CRF decode. (tests/test_ner_app.py checks
    trained taggers and ensembles in TF1 sessions through the export check.)"""
    import shutil

    import tensorflow as tf

    from lstm_core.export import serving_archive

    app, config, assets, tagger = ner_tagger(tmp_path, 1)
    module = app.serving_module(tagger, config, assets)
    archive, concrete = serving_archive(module)
    tf.saved_model.save(archive, str(tmp_path / "saved"), signatures={"serving_default": concrete})
    sentences = ["EU rejects German call", "John Smith visited Zyx and Paris", ""]
    expected = module.serving_default(tf.constant(sentences))

    cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable)) or \
        shutil.which("saved_model_cli")
    result = subprocess.run(
        [cli, "run", "--dir", str(tmp_path / "saved"), "--tag_set", "serve", "--signature_def",
         "serving_default", "--input_exprs", f"sentences={sentences!r}", "--outdir",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    # saved_model_cli writes string arrays with pickle: these files are this test's own
    tags = np.load(tmp_path / "out" / "tags.npy", allow_pickle=True)
    assert tags.tolist() == expected["tags"].numpy().tolist()
    assert np.load(tmp_path / "out" / "lengths.npy").tolist() == [4, 6, 0]
