"""The ``lstm-suite`` command line: help, one-line errors, the recipe flow,
refusals, and the commands on a trained toy run."""

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lstm_core
from lstm_core import cli, trainer
from tests.toy_app import RECIPE, _EntryPoint, toy_app, write_recipe  # noqa: F401

COMMANDS = ["train", "finetune", "evaluate", "predict", "export", "recipes"]


def run(capsys, *argv):
    """``main(argv)`` in this process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err):
    """The one error line, checked to be alone and without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lstm-suite: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A toy run trained through ``lstm-suite train`` (read only)."""
    folder = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lstm_core.apps, "_entry_points", lambda: {"toy": _EntryPoint()})
        recipe = write_recipe(folder)
        assert cli.main(["train", str(recipe), "--run-dir", str(folder / "run"), "--quiet"]) == 0
    return recipe, folder / "run"


def test_version_in_a_fresh_process():
    result = subprocess.run([sys.executable, "-m", "lstm_core.cli", "--version"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert result.stdout.strip() == f"lstm-suite {lstm_core.__version__}"


def test_a_reader_that_closes_the_pipe_ends_the_listing_quietly():
    child = subprocess.Popen([sys.executable, "-m", "lstm_core.cli", "recipes"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # as `lstm-suite recipes | head -0` would
    assert child.wait(timeout=120) == 1
    stderr = child.stderr.read()
    assert b"Broken pipe" not in stderr and b"BrokenPipe" not in stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(capsys, toy_app, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: lstm-suite {command}")
    if command in ("train", "finetune"):  # every recipe key is documented
        assert "train.optimizer.learning_rate (default 0.001) peak learning rate" in out
        assert "app: toy" in out and "data.size" in out


def test_no_command_prints_usage(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage: lstm-suite" in err


def test_a_misspelled_key_is_one_line_with_a_suggestion(capsys, toy_app, tmp_path):
    recipe = write_recipe(tmp_path, RECIPE.replace("batch_size:", "batch_sise:"))
    code, _, err = run(capsys, "train", recipe, "--run-dir", tmp_path / "run")
    line = error_line(err)
    assert code == 2
    assert "train.batch_sise: unknown key" in line and "did you mean train.batch_size?" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_debug_shows_the_traceback(capsys, toy_app, tmp_path, before):
    recipe = write_recipe(tmp_path, RECIPE.replace("batch_size:", "batch_sise:"))
    argv = ["--debug", "train", recipe] if before else ["train", recipe, "--debug"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "Traceback" in err and err.strip().endswith("did you mean train.batch_size?")


@pytest.mark.parametrize("change, message", [
    (("app: toy", "data:"), r"app: required key naming the application \(.*toy.yaml\); installed apps: toy"),
    (("app: toy", "app: tyo"), r"app: unknown app 'tyo'; installed apps: toy \(.*toy.yaml:2\)"),
    (("  dev_size: 16", "  extra_file: missing.txt"), r"data file not found: .*missing.txt \(data.extra_file"),
])
def test_recipe_mistakes(capsys, toy_app, tmp_path, change, message):
    recipe = write_recipe(tmp_path, RECIPE.replace(*change))
    code, _, err = run(capsys, "train", recipe, "--data-dir", tmp_path)
    assert code == 2
    assert re.search(message, error_line(err)), err


def test_a_changed_recipe_is_refused_in_an_existing_run_dir(capsys, toy_app, cli_run):
    recipe, run_dir = cli_run
    code, _, err = run(capsys, "train", recipe, "--run-dir", run_dir, "--set", "train.epochs=3",
                       "--set", "model.units=4")
    line = error_line(err)
    # the epochs alone may change (a run trains on); refused, the run is untouched
    assert code == 2 and line.endswith("changed: model.units: 8 -> 4 (use another --run-dir to "
                                       "start a new run)")
    code, out, err = run(capsys, "train", recipe, "--run-dir", run_dir)
    assert code == 0 and "already complete" in out


def test_progress_shows_unless_quiet(capsys, toy_app, tmp_path):
    recipe = write_recipe(tmp_path)
    code, out, _ = run(capsys, "train", recipe, "--run-dir", tmp_path / "loud", "--set",
                       "train.epochs=1")
    assert code == 0 and "/step - loss:" in out and "best dev_accuracy" in out
    code, out, _ = run(capsys, "train", recipe, "--run-dir", tmp_path / "quiet", "--set",
                       "train.epochs=1", "--quiet")
    assert code == 0 and out == ""


def test_evaluate_and_predict(capsys, toy_app, cli_run, tmp_path):
    _, run_dir = cli_run
    code, out, _ = run(capsys, "evaluate", run_dir)
    assert code == 0 and "accuracy:" in out
    assert (run_dir / "figures" / "evaluate-dev.png").is_file()

    data = tmp_path / "in.jsonl"
    data.write_text('{"values": [1.0, 2.0], "label": 1}\n{"values": [-3.0, -1.0], "label": 0}\n')
    code, out, _ = run(capsys, "evaluate", run_dir, "--data", data)
    assert code == 0 and "on 2 sequences" in out
    assert (run_dir / "figures" / "evaluate-in.png").is_file()
    code, _, err = run(capsys, "evaluate", run_dir, "--data", tmp_path / "nope.jsonl")
    assert code == 2 and "no such file or directory" in error_line(err)

    output = tmp_path / "out.txt"
    output.write_text("precious")
    code, _, err = run(capsys, "predict", run_dir, data, "--output", output)
    assert code == 2 and "won't overwrite" in error_line(err) and output.read_text() == "precious"
    code, _, _ = run(capsys, "predict", run_dir, data, "--output", output, "--force")
    assert code == 0
    assert set(output.read_text().split()) <= {"negative", "positive"}
    assert len(output.read_text().split()) == 2


def test_evaluate_needs_a_run_dir(capsys, tmp_path):
    code, _, err = run(capsys, "evaluate", tmp_path)
    assert code == 2 and "is not a run directory" in error_line(err)


def test_export_refuses_a_non_empty_directory(capsys, toy_app, cli_run, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    code, _, err = run(capsys, "export", cli_run[1], tmp_path, "--no-check")
    assert code == 2 and "won't overwrite" in error_line(err)


def test_finetune_needs_an_existing_source(capsys, toy_app, tmp_path):
    recipe = write_recipe(tmp_path)
    code, _, err = run(capsys, "finetune", recipe, "--from", tmp_path / "nope")
    assert code == 2 and "no such run directory" in error_line(err)


def test_finetune_writes_beside_its_source_never_into_it(capsys, toy_app, cli_run, tmp_path,
                                                         monkeypatch):
    recipe, run_dir = cli_run
    for target in (run_dir, run_dir / "best.keras"):
        code, _, err = run(capsys, "finetune", recipe, "--from", target, "--run-dir", run_dir)
        assert code == 2 and "fine-tune into another run directory" in error_line(err)
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, "finetune", recipe, "--from", run_dir, "--set", "train.epochs=1",
                     "--quiet")
    assert code == 0 and (tmp_path / "runs" / f"{recipe.stem}-finetuned" / "result.json").is_file()


def test_a_recipe_that_fails_to_build_leaves_the_run_dir_unclaimed(capsys, toy_app, tmp_path,
                                                                   monkeypatch):
    recipe, run_dir = write_recipe(tmp_path), tmp_path / "run"
    code, _, err = run(capsys, "train", recipe, "--run-dir", run_dir,
                       "--set", "train.schedule.name=step")  # needs boundaries or step_size
    assert code == 2 and "step schedule needs" in error_line(err) and not run_dir.exists()

    def unbuildable(config, assets):
        raise ValueError("Unrecognized keyword arguments passed to LSTM: {'unitz': 3}")

    # A model that fails to build is the app's bug, not the user's recipe:
    # it surfaces as the exception it is (a traceback), and leaves nothing.
    monkeypatch.setattr(toy_app.__class__, "build_model", lambda self, c, a: unbuildable(c, a))
    with pytest.raises(ValueError, match="Unrecognized"):
        run(capsys, "train", recipe, "--run-dir", run_dir, "--set", "model.units=3")
    assert not run_dir.exists()
    monkeypatch.undo()
    monkeypatch.setattr(lstm_core.apps, "_entry_points", lambda: {"toy": _EntryPoint()})
    code, _, _ = run(capsys, "train", recipe, "--run-dir", run_dir, "--quiet")
    assert code == 0  # the corrected recipe is not refused as "a different recipe"


def test_an_unwritable_output_is_one_line(capsys, toy_app, cli_run, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"values": [1.0, 2.0]}\n')
    code, _, err = run(capsys, "predict", cli_run[1], data, "--output", tmp_path / "no" / "out.txt")
    assert code == 2 and "No such file or directory" in error_line(err)


def test_interrupting_training_exits_130(capsys, toy_app, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    code, _, err = run(capsys, "train", write_recipe(tmp_path), "--run-dir", tmp_path / "run")
    assert code == 130 and "interrupted (run the same command again to resume)" in err
    assert "Traceback" not in err


def test_recipes_lists_bundled_and_local_recipes(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_recipe((tmp_path / "recipes").mkdir() or tmp_path / "recipes")
    code, out, _ = run(capsys, "recipes")
    assert code == 0
    lines = [line.split(None, 1) for line in out.splitlines()]
    assert ["ner/quickstart", "NER quickstart: trains, evaluates and exports in a few minutes on 2 "
            "CPU cores."] in lines
    assert ["recipes/toy.yaml", "Toy: is a random sequence's sum positive? (tests only)"] in lines


def test_a_recipe_is_a_file_or_a_bundled_name(capsys, tmp_path, monkeypatch):
    from lstm_core.recipes import load_recipe

    monkeypatch.chdir(tmp_path)  # no recipes/ here
    bundled = cli.find_recipe("ner/quickstart")
    assert bundled.name == "quickstart.yaml" and bundled.parent.name == "ner"
    assert cli.find_recipe("ner/quickstart.yaml") == cli.find_recipe("recipes/ner/quickstart.yaml") == bundled
    recipe = load_recipe(bundled)  # its `extends: base.yaml` found beside it
    assert recipe.name == "quickstart" and recipe.raw["app"] == "ner"
    assert recipe.raw["model"]["encoder"]["cell"] == "peephole_lstm"  # from base.yaml

    (tmp_path / "ner").mkdir()
    (tmp_path / "ner" / "quickstart.yaml").write_text("app: mine\n")
    assert cli.find_recipe("ner/quickstart.yaml") == Path("ner/quickstart.yaml")  # a file wins

    code, _, err = run(capsys, "train", "ner/quikstart")
    line = error_line(err)
    assert code == 2 and "ner/quikstart: no such recipe file, nor a bundled recipe" in line
    assert "did you mean ner/quickstart?" in line and "ner/base, ner/conll2003, ner/quickstart" in line


def schema_fields(schema, prefix):
    for key, field in schema.items():
        if isinstance(field, dict):
            yield from schema_fields(field, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", field


def test_every_recipe_key_is_documented_in_train_help(capsys):
    from lstm_core.apps import available_apps, get_app
    from lstm_core.schema import recipe_schema

    assert "ner" in available_apps()
    sections = [(recipe_schema(get_app(name)), f"{name}: ") for name in available_apps()]
    fields = [item for schema, prefix in sections for item in schema_fields(schema, prefix)]
    assert len(fields) > 50
    assert [key for key, field in fields if not field.doc.strip()] == []

    code, out, _ = run(capsys, "train", "--help")  # the installed apps, not the toy one
    assert code == 0
    assert "  model.seed (default 1) seeds the word dropout" in out
    assert "  train.seed (default 1) seeds Python, NumPy and TensorFlow" in out
    assert "--verbose" in out


# What TensorFlow's C++ runtime writes to stderr as it starts on a CPU machine.
TF_NOISE = ("cuInit", "port.cc", "cudart_stub.cc", "cpu_feature_guard.cc", "absl::InitializeLog")
# main() as the console script runs it, then the TF log level it left set.
MAIN = ("import os, sys; from lstm_core.cli import main; code = main(); "
        "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL')); sys.exit(code)")


def test_tensorflow_start_up_lines_show_only_with_verbose(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    nowhere = tmp_path / "partial"  # evaluate imports TensorFlow (the app), then fails: our error shows
    nowhere.mkdir()
    (nowhere / "recipe.yaml").write_text("app: ner\n")

    quiet = subprocess.run([sys.executable, "-c", MAIN, "evaluate", nowhere], env=env,
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 2 and quiet.stdout == "3\n"
    assert quiet.stderr == f"lstm-suite: error: {nowhere} has no assets.json: the run did not get far enough to build its vocabularies, or was copied in part\n"

    verbose = subprocess.run([sys.executable, "-c", MAIN, "evaluate", nowhere, "--verbose"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 2 and verbose.stdout == "None\n"  # the environment untouched
    assert verbose.stderr.endswith(quiet.stderr)
    if sys.platform == "linux" and platform.machine() == "x86_64":  # TF's oneDNN/CUDA notes
        assert any(marker in verbose.stderr for marker in TF_NOISE), verbose.stderr
