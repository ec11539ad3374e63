"""The run directory: what a run writes, and how a finished or interrupted
run is read back (for resuming, evaluating, predicting and exporting).

A run directory holds::

    recipe.yaml        the config, every default filled in (a resume must match
                       it, the ``decode`` section aside); data paths as written,
                       relative to the data root
    assets.json        the app's vocabularies etc. (JSON), built once
    assets/            the app's asset files (a subword model, statistics as
                       arrays), built once; exported as SavedModel assets
    checkpoints/       ckpt-EEEE-SSSSSSS/{state.weights.h5,state.json}, the last 2
                       (and best.keras, report.txt when the epoch was the best)
    best.keras         the best model on dev by the app's metric
    report.txt         the app's printable dev report of that model
    metrics.jsonl      one JSON line per epoch
    plots/             loss.png and dev_<metric>.png
    figures/           what the app draws at each evaluation (:func:`evaluate`):
                       dev-epoch-EEE.png, test-<name>.png, evaluate-<data>.png
    logs/              TensorBoard
    result.json        written when the run is complete

Every file is written into a temporary name next to its target and renamed
into place (:func:`atomic_path`), so a run killed at any moment leaves either
the old or the new version of each file, never half of one.

TensorFlow is imported only by :func:`load_run`: the file helpers serve the
recipe loader too.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import yaml

from lstm_core.errors import UserError, not_utf8

KEEP_CHECKPOINTS = 2
ASSET_FILES = "assets"


# -- atomic files ----------------------------------------------------------------


def remove(path):
    """Remove a file, link or directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        # Another process may remove it first (every worker of a cluster
        # clears a resumed run's result.json, for one).
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path`` (same name ending, for writers
    that go by the suffix); on success rename it onto ``path`` in one step,
    on failure remove it. Works for files and directories (a directory
    target must be absent or empty)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def write_text(path, text):
    """Write ``text`` to ``path`` atomically, flushed to disk before the
    rename so that a crash right after leaves the whole file."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path, value):
    write_text(path, json.dumps(value, indent=1) + "\n")


def read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:  # written atomically: edited, or another file
        raise UserError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def write_config(config: dict, path) -> None:
    """Write a resolved config as YAML (``recipes.read_config`` reads it)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(config, sort_keys=False, default_flow_style=False,
                                    allow_unicode=True))


def remove_stale(run_dir):
    """Temporary files a killed process left anywhere in the run directory
    (plots/ too: a kill while a plot is drawn leaves one there)."""
    for stale in sorted(Path(run_dir).rglob(".tmp-*")):  # a folder before what it holds
        remove(stale)


def remove_stale_siblings(path):
    """Temporaries of ``path`` (:func:`atomic_path`'s names) whose process is
    gone: what a killed writer of ``path`` left next to it."""
    path = Path(path)
    for stale in path.parent.glob(f".tmp-*-{path.name}"):
        if _ended(stale.name[len(".tmp-"):-len(path.name) - 1]):
            remove(stale)


def scratch_folder(purpose):
    """A ``tempfile.TemporaryDirectory`` for this process's ``purpose``
    (``assets``, ``check``, ...), named with its PID. A SIGKILLed process
    cannot remove its own, so the folders of ended processes for the same
    purpose are removed first."""
    prefix = f"lstm-suite-{purpose}-"
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        if _ended(stale.name[len(prefix):].split("-")[0]):
            remove(stale)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-")


def _ended(pid):
    """Whether ``pid`` (text) is the id of a process that has ended; on
    POSIX only (elsewhere no process can be asked about)."""
    return os.name == "posix" and pid.isdigit() and not _running(int(pid))


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


# -- assets ------------------------------------------------------------------------


class Assets(dict):
    """An app's assets: the JSON values of ``assets.json`` (this dict) and
    the files of the run's ``assets/`` folder (``folder``), such as a
    SentencePiece model. Apps read a file with :meth:`file`."""

    def __init__(self, values=(), folder=None):
        super().__init__(values)
        self.folder = Path(folder) if folder is not None else None

    def file(self, name) -> Path:
        """The path of the asset file ``name``."""
        path = self.folder / name if self.folder is not None else None
        if path is None or not path.is_file():
            raise UserError(f"asset file {name!r} is missing from {self.folder}; the run "
                            "directory is incomplete (copy it whole)")
        return path

    def files(self) -> list[Path]:
        """Every asset file, sorted by name."""
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    def same_as(self, other: Assets) -> bool:
        """Equal values and byte-identical files."""
        names = [p.relative_to(self.folder) for p in self.files()]
        others = [p.relative_to(other.folder) for p in other.files()]
        return (dict(self) == dict(other) and names == others and
                all(filecmp.cmp(self.folder / n, other.folder / n, shallow=False) for n in names))


def load_assets(run_dir) -> Assets:
    run_dir = Path(run_dir)
    if not (run_dir / "assets.json").is_file():
        raise UserError(f"{run_dir} has no assets.json: the run did not get far enough to build "
                        "its vocabularies, or was copied in part")
    return Assets(read_json(run_dir / "assets.json"), run_dir / ASSET_FILES)


def save_assets(run_dir, assets: Assets):
    """Write ``assets.json`` and move the asset files into the run
    directory (the folder last: its presence is not the commit point)."""
    run_dir = Path(run_dir)
    target = run_dir / ASSET_FILES
    if assets.folder is not None and assets.folder.is_dir() and assets.folder != target:
        remove(target)
        shutil.copytree(assets.folder, target.with_name(f".tmp-{os.getpid()}-{ASSET_FILES}"))
        os.replace(target.with_name(f".tmp-{os.getpid()}-{ASSET_FILES}"), target)
    write_json(run_dir / "assets.json", dict(assets))
    return Assets(assets, target)


# -- checkpoints and the best model --------------------------------------------------


def checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints of a run, oldest first (names sort by progress)."""
    folder = Path(run_dir) / "checkpoints"
    return sorted(p for p in folder.glob("ckpt-*") if (p / "state.json").is_file()) if folder.is_dir() else []


def checkpoint_path(run_dir, epoch, step) -> Path:
    """The checkpoint after ``epoch`` whole epochs and ``step`` more steps."""
    return Path(run_dir) / "checkpoints" / f"ckpt-{epoch:04d}-{step:07d}"


def prune_checkpoints(run_dir):
    for old in checkpoints(run_dir)[:-KEEP_CHECKPOINTS]:
        remove(old)


def publish_best(checkpoint, run_dir):
    """Copy the best model (and report) a checkpoint holds into the run
    directory, each file atomically."""
    for name in ("best.keras", "report.txt"):
        if (Path(checkpoint) / name).is_file():
            with atomic_path(Path(run_dir) / name) as tmp:
                shutil.copyfile(Path(checkpoint) / name, tmp)


def model_file(run_dir) -> Path:
    """The weights a finished or interrupted run is used with: best.keras,
    else the last checkpoint."""
    run_dir = Path(run_dir)
    if (run_dir / "best.keras").is_file():
        return run_dir / "best.keras"
    found = checkpoints(run_dir)
    if found:
        return found[-1] / "state.weights.h5"
    raise UserError(f"{run_dir} holds no trained model yet (no best.keras, no checkpoint)")


def load_weights(model, path):
    try:
        model.load_weights(str(path))
    except (ValueError, KeyError) as error:
        # Keras lists every layer that did not fit, over many lines: the
        # error stays one line, its first sentence and the first layer's.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
        detail = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
        raise UserError(f"cannot load weights from {path} into this model ({detail}); "
                        "was it trained with the same model settings?") from None
    except (zipfile.BadZipFile, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise  # the system's own (permissions, ...): it names the file
        # A damaged .keras (a zip) or .h5 file: zipfile's and h5py's errors
        # name no file ("File is not a zip file", "file signature not found").
        raise UserError(f"{path}: cannot read the weights ({str(error).splitlines()[0]}); the "
                        "file is damaged or was not saved by lstm-suite") from None


def check_init_source(init_from, app_name):
    """Refuse to fine-tune ``app_name`` from a run of another app (or a model
    file in one): its weights and assets describe another kind of model."""
    path = Path(init_from)
    run_dir = path if path.is_dir() else path.parent
    if (run_dir / "recipe.yaml").is_file():
        source = recorded_app(run_dir)
        if source != app_name:
            raise UserError(f"--from {init_from}: a {source} run, and this recipe is for "
                            f"{app_name}; fine-tune from a {app_name} run or model")


def init_source(init_from) -> tuple[Path, Assets]:
    """(weights file, assets) of a run directory or a model file to fine-tune
    from; the assets make token ids match the weights."""
    path = Path(init_from)
    if not path.exists():
        raise UserError(f"--from {path}: no such run directory or model file")
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / "assets.json").is_file():
        raise UserError(f"--from {path}: no assets.json next to it, so its vocabulary is unknown")
    return (model_file(path) if path.is_dir() else path), load_assets(run_dir)


@contextlib.contextmanager
def precision_policy(name):
    """The Keras dtype policy for building a model, restored afterwards: a
    run's model is built, trained, scored and exported under the policy its
    recipe names."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# -- evaluating -------------------------------------------------------------------


FIGURES = "figures"


def evaluate(app, model, config, data_root, assets, run_dir, figure, path=None, final=False):
    """``app.evaluate``'s scores (a new dict), and the PNG the app draws,
    if it draws one, as ``figures/<figure>.png`` of ``run_dir``. The app
    draws into a temporary file of the run directory, renamed into place when
    it returns: a killed evaluation leaves no half PNG (:func:`remove_stale`
    clears the temporary) and an app that draws nothing leaves nothing, not
    even the folder."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".tmp-{os.getpid()}-{figure}.png"
    remove(tmp)
    try:
        scores = dict(app.evaluate(model, config, data_root, assets, path=path, final=final,
                                   figure=tmp))
        if tmp.exists():
            (run_dir / FIGURES).mkdir(exist_ok=True)
            os.replace(tmp, run_dir / FIGURES / f"{figure}.png")
    finally:
        remove(tmp)
    return scores


# -- using a run -----------------------------------------------------------------------


class Run(NamedTuple):
    app: object
    config: dict
    assets: Assets
    model: object


def load_run(run_dir, data_dir=None, overrides=()) -> Run:
    """The app, config, assets and model of a run, the model built by the
    app under the run's dtype policy and given the weights of best.keras
    (else of the last checkpoint); the recorded data paths resolved against
    the data root of ``data_dir`` (else ``$LSTM_SUITE_DATA``, else ./data),
    wherever the data is now. ``overrides`` (``--set`` strings) may change
    the ``decode`` section only: everything else is the trained model."""
    from lstm_core.apps import get_app
    from lstm_core.recipes import data_root
    from lstm_core.schema import apply_decode_overrides, recorded_config, with_data_files

    run_dir = Path(run_dir)
    name = recorded_app(run_dir)
    try:
        app = get_app(name)
    except UserError as error:  # an app not installed here
        raise UserError(f"{run_dir / 'recipe.yaml'}: {error}") from None
    config = recorded_config(app, run_dir / "recipe.yaml")
    config = apply_decode_overrides(app, config, overrides)
    config = with_data_files(app, config, data_root(data_dir))
    assets = load_assets(run_dir)
    weights = model_file(run_dir)  # before building: a run without weights is told so
    with precision_policy(config["train"]["mixed_precision"]):
        model = app.build_model(config, assets)
    load_weights(model, weights)
    return Run(app, config, assets, model)


def recorded_app(run_dir) -> str:
    """The name of the app whose run ``run_dir`` is, as its recipe.yaml says."""
    from lstm_core.recipes import read_config

    recipe = Path(run_dir) / "recipe.yaml"
    if not recipe.is_file():
        raise UserError(f"{run_dir} is not a run directory (no recipe.yaml)")
    name = read_config(recipe).get("app")
    if not isinstance(name, str) or not name:
        raise UserError(f"{recipe}: no app key naming the application, as a run's recipe has")
    return name
