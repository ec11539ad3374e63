"""SavedModel export: written atomically, then checked in a fresh Python
process that has only TensorFlow (and the modules the app declares it needs
at serving time), because a SavedModel that silently needs lstm_core (a
custom object, a Python op) would fail in production, not here.

The archive is what TensorFlow Serving loads: it holds the variables the
serving function reads, the lookup tables and asset files it uses and the
run's asset files (in the SavedModel's ``assets/``), so that it restores
through the TF1 session loader (``saved_model_cli run``, Serving's C++
loader) as well as through ``tf.saved_model.load``. The check runs both.
"""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from lstm_core.errors import UserError
from lstm_core.runs import atomic_path, load_run, remove_stale_siblings, scratch_folder

#: Top-level packages of this suite: a serving process must not need them.
SUITE = ("lstm_core", "apps")


# -- the archive ---------------------------------------------------------------


def serving_archive(module, asset_files=()):
    """The object to save for ``module``'s ``serving_default``: a
    ``tf.Module`` that tracks exactly what the function's graph reads.

    Why not save ``module`` itself: a Keras 3 variable is a wrapper that
    SavedModel writes as a new ``tf.Variable`` (keras-team/keras#20095),
    while the traced function reads the wrapped one. ``tf.saved_model.load``
    patches the function's captures to the restored objects, but the TF1
    loader (TensorFlow Serving, ``saved_model_cli run``) restores by the
    graph's saver, which never restores the variable the function reads:
    "Could not find variable". So the archive tracks the wrapped
    ``tf.Variable``s the concrete function captures (as Keras's own
    ``ExportArchive`` does), without the Keras wrappers, which would store
    every weight twice. Lookup tables and ``tf.saved_model.Asset`` files
    reachable from ``module`` are tracked too (the function may capture
    them); ``asset_files`` (``{name: path}``) become tracked assets, so
    the export holds a copy in its ``assets/`` (``loaded.asset_files[name]``
    after ``tf.saved_model.load``) and moves as one folder. The names in
    ``module.serving_attributes`` (if any) become attributes of the archive,
    so of the loaded export (a ``tf.Variable`` such as a sample rate)."""
    function = module.serving_default
    concrete = function.get_concrete_function()
    resources, seen = [], set()
    for trackable in tf.train.TrackableView(module).descendants():
        if (isinstance(trackable, (tf.saved_model.experimental.TrackableResource,
                                   tf.saved_model.Asset)) and id(trackable) not in seen):
            seen.add(id(trackable))
            resources.append(trackable)
    archive = tf.Module()
    archive.serving_default = function
    archive.serving_variables = list(concrete.variables)
    archive.resources = resources
    archive.asset_files = {name: tf.saved_model.Asset(str(path))
                           for name, path in dict(asset_files).items()}
    # Attributes the export contract promises on the loaded object (the
    # phonemes app's ``sample_rate``): variables or constants the module names.
    for name in getattr(module, "serving_attributes", ()):
        setattr(archive, name, getattr(module, name))
    return archive, concrete


# -- tensors through files -------------------------------------------------------


def write_tensors(folder, tensors):
    """Write ``{name: array}`` as serialized TensorProtos ``folder/NAME.pb``:
    any dtype, bytes (NULs and all) and floats exact. A lone tensor is
    written as ``output_0``, as SavedModel signatures name it. Also run by
    the child process (its source is copied there)."""
    import os

    import numpy as np
    import tensorflow as tf

    if not isinstance(tensors, dict):
        tensors = {"output_0": tensors}
    os.makedirs(folder, exist_ok=True)
    for name, value in tensors.items():
        array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        proto = tf.make_tensor_proto(array, dtype=tf.string if array.dtype == object else None)
        with open(os.path.join(folder, f"{name}.pb"), "wb") as f:
            f.write(proto.SerializeToString())


def read_tensors(folder):
    """``{name: numpy array}`` written by :func:`write_tensors` (strings as
    object arrays of bytes)."""
    import os

    import tensorflow as tf
    from tensorflow.core.framework.tensor_pb2 import TensorProto

    tensors = {}
    for file in sorted(os.listdir(folder)):
        with open(os.path.join(folder, file), "rb") as f:
            tensors[file[:-len(".pb")]] = tf.make_ndarray(TensorProto.FromString(f.read()))
    return tensors


def as_arrays(example):
    """Keyword arguments (lists, strings, numpy arrays) as numpy arrays, as
    TensorFlow reads them: str as UTF-8 bytes, Python floats as float32
    (the child casts numbers to the signature's dtypes)."""
    return {name: value if isinstance(value, np.ndarray) and value.dtype.kind not in "US"
            else tf.constant(value).numpy() for name, value in example.items()}


# -- the check in a fresh process --------------------------------------------------

# Runs in the child: the suite cannot be imported (a blocker raises), and the
# child asserts that nothing of it was loaded. Arguments: the SavedModel, the
# inputs folder, the outputs folder, then the modules to import first.
CHILD = f"""
import importlib, os, sys

SUITE = {SUITE!r}

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SUITE:
            raise ImportError(f"{{name}} must not be needed to serve a SavedModel")

sys.meta_path.insert(0, Blocked())
saved, inputs_dir, outputs_dir, *imports = sys.argv[1:]
for module in imports:  # before TensorFlow reads the graph: they register ops
    try:
        importlib.import_module(module)
    except ImportError as error:
        sys.exit(f"serving import {{module!r}} failed: {{error}}")
import tensorflow as tf

{inspect.getsource(write_tensors)}
{inspect.getsource(read_tensors)}
inputs = read_tensors(inputs_dir)
serve = tf.saved_model.load(saved).signatures["serving_default"]
specs = serve.structured_input_signature[1]
if sorted(inputs) != sorted(specs):
    sys.exit(f"the example gives {{sorted(inputs)}}; serving_default takes {{sorted(specs)}}")
feeds = {{name: tf.constant(value, dtype=specs[name].dtype) for name, value in inputs.items()}}
write_tensors(os.path.join(outputs_dir, "tf2"), serve(**feeds))

# As TensorFlow Serving and saved_model_cli run it: the MetaGraph in a TF1
# session, variables restored by its saver, fed and fetched by tensor names.
with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved)
    signature = meta.signature_def["serving_default"]
    fetched = session.run({{name: info.name for name, info in signature.outputs.items()}},
                          {{signature.inputs[name].name: feeds[name].numpy() for name in feeds}})
write_tensors(os.path.join(outputs_dir, "tf1"), fetched)
suite = [m for m in sys.modules if m.split(".")[0] in SUITE]
assert not suite, f"imported {{suite}}"
"""


def _checked_imports(imports):
    imports = list(imports)
    suite = [name for name in imports if name.split(".")[0] in SUITE]
    if suite:
        raise UserError(f"serving imports {suite}: a serving process cannot import this suite "
                        f"({', '.join(SUITE)}); the SavedModel must not need it")
    return imports


def serve_in_fresh_process(saved_model_dir, example, imports=()):
    """Outputs ``(tf2, tf1)`` of the SavedModel's ``serving_default`` on
    ``example`` (keyword arguments), each ``{name: numpy array}``, computed
    in a new process whose import path and working directory hold nothing of
    the suite, that imports ``imports`` and TensorFlow only, and loads the
    SavedModel twice: with ``tf.saved_model.load`` and in a TF1 session."""
    imports = _checked_imports(imports)
    with scratch_folder("check") as empty:
        write_tensors(Path(empty) / "inputs", as_arrays(example))
        env = {**os.environ, "PYTHONPATH": empty, "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(Path(saved_model_dir).absolute()),
             str(Path(empty) / "inputs"), str(Path(empty) / "outputs"), *imports],
            capture_output=True, text=True, cwd=empty, env=env, timeout=600)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
            raise UserError(f"the export failed to load and run in a fresh process: {last}")
        return read_tensors(Path(empty) / "outputs" / "tf2"), read_tensors(Path(empty) / "outputs" / "tf1")


def differences(expected, served):
    """Names of outputs that differ: numbers within float tolerance (exactly
    for integers), strings and booleans exactly, shapes and dtypes exactly."""
    if expected.keys() != served.keys():
        return sorted(set(expected) ^ set(served))
    differ = []
    for name in sorted(expected):
        a, b = np.asarray(expected[name]), np.asarray(served[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            differ.append(name)
        elif a.dtype.kind in "fc":
            if not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
                differ.append(name)
        elif not np.array_equal(a, b):
            differ.append(name)
    return differ


def jsonable(outputs):
    """Outputs as JSON-like values for reading: nested lists, bytes as text."""
    def convert(array):
        if array.dtype == object:
            array = np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array) \
                if array.size else array
        return array.tolist()

    return {name: convert(np.asarray(value)) for name, value in sorted(outputs.items())}


def check_in_fresh_process(saved_model_dir, example, imports=()):
    """The SavedModel's outputs on ``example`` in a fresh process (as
    :func:`jsonable` values) after checking that the TF1 session loader
    gives the same as ``tf.saved_model.load``."""
    tf2, tf1 = serve_in_fresh_process(saved_model_dir, example, imports)
    differ = differences(tf2, tf1)
    if differ:
        raise UserError(f"export check failed: loaded in a TF1 session (as TensorFlow Serving "
                        f"loads it) the SavedModel gives other {', '.join(differ)} than "
                        "tf.saved_model.load")
    return jsonable(tf2)


# -- exporting a run ---------------------------------------------------------------


def _serving_module(app, model, config, assets):
    module = app.serving_module(model, config, assets)
    function = getattr(module, "serving_default", None)
    if not hasattr(function, "get_concrete_function"):
        raise UserError(f"app {app.name!r}: its serving module has no tf.function serving_default")
    if getattr(function, "input_signature", None) is None:
        raise UserError(f"app {app.name!r}: its serving_default tf.function needs an "
                        "input_signature (the export's contract)")
    return module


def export_run(run_dirs, out_dir, *, check=None, overrides=()):
    """Write the serving SavedModel of a run, or of an ensemble of runs that
    share their vocabularies (a list of run directories, say seeds or
    variants of one recipe: the app averages their models),
    to ``out_dir`` and return the path. ``out_dir`` must be absent or empty
    (an export never overwrites); it is written into a temporary directory
    next to it and renamed into place only after saving (and the
    fresh-process check, when ``check`` or, if None, the recipe's
    ``export.check`` says so) succeeded; the temporary a killed export to
    ``out_dir`` left is removed. The run's asset files are copied into the
    SavedModel's ``assets/``."""
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
                            "vocabularies (assets.json, assets/) differ; ensemble runs of one "
                            "recipe and data")
    if len(runs) > 1:
        model = app.ensemble([run[3] for run in runs])
    if check is None:
        check = config.get("export", {}).get("check", True)
    imports = _checked_imports(getattr(app, "serving_imports", ()))
    module = _serving_module(app, model, config, assets)
    files = {path.relative_to(assets.folder).as_posix(): path for path in assets.files()}
    archive, concrete = serving_archive(module, files)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(out_dir)  # a killed export's half-written SavedModel
    with atomic_path(out_dir) as tmp:
        try:
            tf.saved_model.save(archive, str(tmp), signatures={"serving_default": concrete})
        except tf.errors.OpError as error:  # a full disk, say: TensorFlow's own I/O errors
            raise UserError(f"cannot write the SavedModel to {out_dir}: {error.message}") from None
        if check:
            _check(app, module, assets, tmp, imports)
    return out_dir


def _check(app, module, assets, saved_model_dir, imports):
    """The export's outputs on the app's example, in a fresh process through
    both loaders, against the in-process module's."""
    example = app.serving_example(assets)
    expected = module.serving_default(**example)
    expected = {name: np.asarray(value) for name, value in
                (expected if isinstance(expected, dict) else {"output_0": expected}).items()}
    tf2, tf1 = serve_in_fresh_process(saved_model_dir, example, imports)
    for loader, served in (("tf.saved_model.load", tf2), ("a TF1 session (as TensorFlow "
                                                          "Serving loads it)", tf1)):
        differ = differences(expected, served)
        if differ:
            raise UserError(f"export check failed: loaded with {loader} in a fresh process, the "
                            f"SavedModel gives other {', '.join(differ)} than the trained model "
                            "on the app's serving example")
