"""A model built from the core layers exports a SavedModel that a new Python
process serves with plain TensorFlow, without lstm_core importable."""

import json
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
