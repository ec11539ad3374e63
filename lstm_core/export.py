"""SavedModel export: written atomically, then checked in a fresh Python
process that has only TensorFlow, because a SavedModel that silently needs
lstm_core (a custom object, a Python op) would fail in production, not here."""

import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from lstm_core.errors import UserError
from lstm_core.runs import atomic_path, load_run


def jsonable(outputs):
    """Signature outputs as JSON values: arrays as nested lists, bytes as
    text, a lone tensor as ``output_0`` (as SavedModel signatures name it).
    Also run by the child process (its source is copied there)."""
    import numpy as np

    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}

    def convert(value):
        array = np.asarray(value)
        if array.dtype.kind in "SO":
            array = np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b,
                                 otypes=[object])(array)
        return array.tolist()

    return {name: convert(value) for name, value in sorted(outputs.items())}


# Runs in the child: the suite cannot be imported (a blocker raises), and the
# child asserts that nothing of it was loaded.
CHILD = f"""
import json, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("lstm_core", "apps"):
            raise ImportError(f"{{name}} must not be needed to serve a SavedModel")

sys.meta_path.insert(0, Blocked())
import tensorflow as tf

{inspect.getsource(jsonable)}
loaded = tf.saved_model.load(sys.argv[1])
serve = loaded.signatures["serving_default"]
specs = serve.structured_input_signature[1]
example = json.loads(open(sys.argv[2], encoding="utf-8").read())
outputs = serve(**{{k: tf.constant(v, dtype=specs[k].dtype) for k, v in example.items()}})
suite = [m for m in sys.modules if m.split(".")[0] in ("lstm_core", "apps")]
assert not suite, f"imported {{suite}}"
print(json.dumps(jsonable(outputs)))
"""


def check_in_fresh_process(saved_model_dir, example_kwargs):
    """Outputs (as :func:`jsonable` values) of the SavedModel's
    ``serving_default`` called with ``example_kwargs`` in a new process whose
    import path and working directory hold nothing of the suite."""
    with tempfile.TemporaryDirectory(prefix="lstm-suite-check-") as empty:
        example = Path(empty) / "example.json"
        example.write_text(json.dumps(example_kwargs))
        env = {**os.environ, "PYTHONPATH": empty, "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(Path(saved_model_dir).absolute()), str(example)],
            capture_output=True, text=True, cwd=empty, env=env, timeout=600)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise UserError(f"the export failed to load and run in a fresh process: {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _same(expected, served):
    """Numbers equal within float tolerance, everything else exactly."""
    if expected.keys() != served.keys():
        return False
    for name in expected:
        try:
            a, b = np.asarray(expected[name], float), np.asarray(served[name], float)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
                return False
        except (TypeError, ValueError):
            if expected[name] != served[name]:
                return False
    return True


def export_run(run_dirs, out_dir, *, check=None, overrides=()):
    """Write the serving SavedModel of a run, or of an ensemble of runs that
    share their vocabularies (a list of run directories, say seeds or
    variants of one recipe: the app averages their models),
    to ``out_dir`` and return the path. ``out_dir`` must be absent or empty
    (an export never overwrites); it is written into a temporary directory
    next to it and renamed into place only after saving (and the
    fresh-process check, when ``check`` or, if None, the recipe's
    ``export.check`` says so) succeeded."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} exists and is not empty; won't overwrite it "
                        "(choose a new OUT_DIR or remove the old one)")
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
    runs = [load_run(run_dir, overrides=overrides) for run_dir in run_dirs]
    app, config, assets, model = runs[0]
    for run_dir, (other_app, _, other_assets, _) in zip(run_dirs[1:], runs[1:]):
        if other_app.name != app.name or not other_assets.same_as(assets):
            raise UserError(f"{run_dir} cannot join an ensemble with {run_dirs[0]}: its app or "
                            "vocabularies (assets.json) differ; ensemble runs of one recipe and data")
    if len(runs) > 1:
        model = app.ensemble([run[3] for run in runs])
    if check is None:
        check = config.get("export", {}).get("check", True)
    module = app.serving_module(model, config, assets)
    if not hasattr(getattr(module, "serving_default", None), "get_concrete_function"):
        raise UserError(f"app {app.name!r}: its serving module has no tf.function serving_default")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir) as tmp:
        try:
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serving_default})
        except tf.errors.OpError as error:  # a full disk, say: TensorFlow's own I/O errors
            raise UserError(f"cannot write the SavedModel to {out_dir}: {error.message}") from None
        if check:
            example = app.serving_example(assets)
            if not _same(jsonable(module.serving_default(**example)), check_in_fresh_process(tmp, example)):
                raise UserError("export check failed: the SavedModel in a fresh process gives other "
                                "outputs than the trained model on the app's serving example")
    return out_dir
