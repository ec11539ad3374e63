"""Every case of the bad-input corpus (``cases.py``) is refused by the CLI
as a user error: exit code 2, one line on standard error that names the
file, line or key (no traceback), and no file outside the run directory
created, changed or removed.

The cases call ``lstm_core.cli.main`` in this process (TensorFlow and the
apps load once); one also goes through the real entry point in a fresh
process, to show it behaves the same.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lstm_core import cli, runs
from lstm_core.schema import with_data_files
from tests.bad_inputs.cases import APPS, CASES, Case, replaced
from tests.test_cli import error_line

USER_ERROR = 2  # what main() returns for a UserError
PREFIX = "lstm-suite: error: "
SUBPROCESS_CASE = "predict-phonemes-run-on-text"
REPO = Path(__file__).resolve().parents[2]


def write_files(root, files):
    """``files`` (path under ``root`` -> str, bytes, or None to delete) on disk."""
    for name, content in files.items():
        path = root / name
        if content is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)


def write_inputs(case, folder):
    """The case's recipe and data root in ``folder``: the good data of every
    app with the case's files over it. Returns the placeholders' values."""
    root = folder / "data"
    for inputs in APPS.values():
        write_files(root, inputs.files)
    write_files(root, case.files)
    recipe = replaced(APPS[case.app].recipe, *case.edit) if case.recipe is None else case.recipe
    write_files(folder, {"recipe.yaml": recipe})
    return {"tmp": folder, "root": root, "recipe": folder / "recipe.yaml", "run": folder / "run"}


def make_run(app_name, folder):
    """A run directory of ``app_name`` as training leaves it (the recorded
    recipe, the assets, a model), made from the app's good inputs without
    training: the weights are untrained, which no case gets far enough to see."""
    values = write_inputs(Case(f"good-{app_name}", app_name, ""), folder)
    app, config, root, _ = cli.load_config(values["recipe"], data_dir=values["root"])
    resolved = with_data_files(app, config, root)
    run_dir = folder / f"{app_name}_run"
    run_dir.mkdir()
    with tempfile.TemporaryDirectory() as staging:
        assets = runs.save_assets(run_dir, runs.Assets(app.build_assets(resolved, root, staging),
                                                       staging))
    runs.write_config(config, run_dir / "recipe.yaml")
    app.build_model(resolved, assets).save(run_dir / "best.keras")
    return run_dir


@pytest.fixture(scope="module")
def app_runs(tmp_path_factory):
    """``(folder, run_of)``: ``run_of(app)`` is that app's run directory,
    made on first use in ``folder`` (which cases must leave as it is)."""
    folder = tmp_path_factory.mktemp("app_runs")
    made = {}

    def run_of(app_name):
        if app_name not in made:
            made[app_name] = make_run(app_name, folder / app_name)
        return made[app_name]

    return folder, run_of


def snapshot(folders, skip):
    """``{path: (size, mtime, sha1) or "folder"}`` of everything under
    ``folders`` but the folder ``skip``."""
    state = {}
    for folder in folders:
        for parent, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if skip is None or Path(parent, d) != skip]
            state.update({os.path.join(parent, d): "folder" for d in dirs})
            for name in files:
                path = Path(parent, name)
                stat = path.stat()
                state[str(path)] = (stat.st_size, stat.st_mtime_ns,
                                    hashlib.sha1(path.read_bytes()).hexdigest())
    return state


def expand(text, values):
    for key, value in values.items():
        text = text.replace(f"{{{key}}}", str(value))
    return text


def prepare(case, folder, app_runs):
    """``(argv, check)``: the case's command line on its inputs, and the
    function that checks what running it did (exit code and stderr)."""
    runs_folder, run_of = app_runs
    values = write_inputs(case, folder)
    values.update({f"{name}_run": run_of(name) for name in APPS
                   if any(f"{{{name}_run}}" in arg for arg in case.argv)})
    if any("{run_copy}" in arg for arg in case.argv):
        values["run_copy"] = folder / "run_copy"
        shutil.copytree(run_of(case.app), values["run_copy"])
        write_files(values["run_copy"], case.run_files)
    argv = [expand(arg, values) for arg in case.argv]
    run_dir = Path(expand(case.run_dir, values)) if case.run_dir else None
    watched = [folder, runs_folder]
    before = snapshot(watched, run_dir)

    def check(code, err):
        assert code == USER_ERROR, f"{case.id}: exit code {code}\n{err}"
        message = error_line(err).removeprefix(PREFIX)
        assert re.search(case.expect, message), f"{case.id}: {message!r} !~ {case.expect!r}"
        assert snapshot(watched, run_dir) == before, f"{case.id}: files outside {run_dir} changed"
        return message

    return argv, check


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_refused_with_one_line(case, tmp_path, app_runs, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would land here, and be seen
    argv, check = prepare(case, tmp_path, app_runs)
    capsys.readouterr()
    code = cli.main(argv)
    check(code, capsys.readouterr().err)


def test_the_entry_point_refuses_the_same_way(tmp_path, app_runs):
    """One case in a fresh process (which loads TensorFlow, builds the model
    and starts its runtime): nothing else reaches the real standard error."""
    (case,) = [case for case in CASES if case.id == SUBPROCESS_CASE]
    argv, check = prepare(case, tmp_path, app_runs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs it: the CLI quiets TensorFlow itself
    done = subprocess.run([sys.executable, "-m", "lstm_core.cli", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    check(done.returncode, done.stderr)


def test_the_corpus_covers_every_app():
    assert len({case.id for case in CASES}) == len(CASES) >= 30
    assert {case.app for case in CASES} == set(APPS)
