"""The built wheel, installed on its own: the bundled recipes and the sample
data ship with it, and ``lstm-suite`` lists and trains a recipe by name from
a directory that holds no recipes. Slow (a wheel build and a short training
run in fresh processes): ``-m 'not slow'`` leaves it out."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "lstm_core", "apps", "recipes"]
SHIPPED = ["lstm_suite_recipes/ner/base.yaml", "lstm_suite_recipes/ner/quickstart.yaml",
           "lstm_suite_recipes/ner/conll2003.yaml", "lstm_suite_recipes/ner/README.md",
           "apps/ner/sample/train.txt", "apps/ner/sample/valid.txt", "apps/ner/sample/demo.txt",
           "lstm_suite_recipes/phonemes/quickstart.yaml", "lstm_suite_recipes/phonemes/README.md",
           "apps/phonemes/sample/manifest.tsv", "apps/phonemes/sample/README.md",
           "apps/phonemes/sample/recordings/0_george_5.wav", "apps/phonemes/digits.dict",
           "lstm_suite_recipes/phonemes/timit.yaml",
           "lstm_suite_recipes/translation/quickstart.yaml",
           "lstm_suite_recipes/translation/multi30k_en_de.yaml",
           "lstm_suite_recipes/translation/README.md", "apps/translation/sample/train.tsv",
           "apps/translation/sample/dev.tsv", "apps/translation/sample/demo.txt",
           "apps/translation/sample/make_sample.py"]
TF_NOISE = ("cuInit", "port.cc", "cudart_stub.cc", "cpu_feature_guard.cc", "absl::InitializeLog")


def run(*argv, **kwargs):
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600,
                            **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def build_wheel(folder):
    """The wheel of this checkout, built from a copy (an in-tree build leaves
    build/ and *.egg-info behind) with the installed setuptools, offline."""
    source = folder / "source"
    source.mkdir(parents=True)
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "--wheel-dir", folder / "dist", source)
    (wheel,) = (folder / "dist").glob("lstm_suite-*.whl")
    return wheel


def install(wheel, folder):
    """A fresh venv holding only the wheel; this venv's site-packages (the
    dependencies) follow it on the path through a .pth line, which adds the
    folder without running its .pth files: this checkout's editable install
    stays out. Returns the venv's python and the environment to run it in."""
    venv.create(folder, with_pip=False)
    python = folder / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
        "--no-index", wheel)
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                   .stdout.strip())
    deps = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (purelib / "zz_dependencies.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")}
    return python, {**env, "PYTHONNOUSERSITE": "1"}


def test_the_installed_wheel_lists_and_trains_bundled_recipes(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    assert set(SHIPPED) <= set(zipfile.ZipFile(wheel).namelist())

    python, env = install(wheel, tmp_path / "venv")
    work = tmp_path / "work"  # no recipes/ folder, no checkout above
    work.mkdir()
    where = run(python, "-c", "import sys, lstm_core, importlib.util as u; "
                "print(lstm_core.__file__); print(u.find_spec('lstm_suite_recipes').submodule_search_locations[0]); "
                "print(any('editable' in repr(f) for f in sys.meta_path))", cwd=work, env=env)
    module, recipes, editable = where.stdout.splitlines()
    assert Path(module).is_relative_to(tmp_path / "venv") and Path(recipes).is_relative_to(tmp_path / "venv")
    assert editable == "False"

    cli = tmp_path / "venv" / "bin" / "lstm-suite"
    listed = run(cli, "recipes", cwd=work, env=env).stdout.splitlines()
    in_checkout = sorted(str(p.relative_to(ROOT / "recipes").with_suffix(""))
                         for p in (ROOT / "recipes").glob("*/*.yaml"))
    assert [line.split()[0] for line in listed] == in_checkout

    trained = run(cli, "train", "ner/quickstart", "--set", "train.epochs=1", "--set",
                  "train.max_steps_per_epoch=2", "--run-dir", "run", "--quiet", cwd=work, env=env)
    assert trained.stdout == ""
    assert not [line for line in trained.stderr.splitlines() if any(n in line for n in TF_NOISE)]
    assert (work / "run" / "result.json").is_file()
    recorded = (work / "run" / "recipe.yaml").read_text()
    assert "pkg:apps.ner/sample/train.txt" in recorded  # the sample found inside the package
