"""What the recipe-target scripts (``phonemes_recipes.py``,
``translation_recipes.py``) share: train a bundled recipe with the CLI in a
run directory kept between sittings, export its best epoch, and add up the
training time of every sitting."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*arguments):
    subprocess.run([sys.executable, "-m", "lstm_core.cli", *arguments], check=True)


def train(app, recipe, args):
    """``lstm-suite train recipes/<app>/<recipe>.yaml`` into ``args.runs``:
    resumes, or reports the finished run, when run again."""
    run_dir = Path(args.runs) / recipe
    cli("train", str(REPO / "recipes" / app / f"{recipe}.yaml"), "--quiet",
        "--run-dir", str(run_dir), "--data-dir", str(args.data_dir),
        *(arg for override in args.set for arg in ("--set", override)))
    return run_dir


def epoch_records(run_dir):
    """The run's ``metrics.jsonl``: one dict per epoch trained (all sittings)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def epochs(run_dirs):
    """Epochs each run trained, as ``30`` or, for an ensemble, ``30+27``."""
    return "+".join(str(max(r["epoch"] for r in epoch_records(d))) for d in run_dirs)


def training_seconds(run_dirs):
    """Seconds of training over every epoch the runs recorded (all sittings)."""
    return sum(r.get("seconds", 0.0) for d in run_dirs for r in epoch_records(d))


def exports(run_dir, args):
    """``(label, runs, SavedModel)`` of the run's best epoch and, given
    ``--ensemble-with``, of the run and those runs as one ensemble (the
    export averages their log-probabilities)."""
    members = {"": [run_dir]}
    if args.ensemble_with:
        members[f", ensemble of {1 + len(args.ensemble_with)} runs"] = [
            run_dir, *map(Path, args.ensemble_with)]
    for label, run_dirs in members.items():
        out = Path(args.runs) / f"{run_dir.name}{'-ensemble' if label else ''}-export"
        if out.exists():
            shutil.rmtree(out)  # this benchmark's own export of runs that may have trained on
        cli("export", *map(str, run_dirs), str(out))
        yield run_dir.name + label, run_dirs, out


def parse_args(description, default_recipes, targets):
    """The command line both scripts take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", default=os.environ.get("LSTM_SUITE_DATA"))
    parser.add_argument("--recipes", nargs="+", default=default_recipes, choices=list(targets))
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every recipe (repeatable)")
    parser.add_argument("--ensemble-with", nargs="+", default=[], metavar="RUN_DIR",
                        help="finished runs of the recipe (other seeds) that join its run in "
                             "a second, ensemble export")
    args = parser.parse_args()
    if args.ensemble_with and len(args.recipes) > 1:
        parser.exit(2, "--ensemble-with joins the runs of one recipe: give one in --recipes\n")
    if not args.data_dir:
        parser.exit(2, "give --data-dir (or set LSTM_SUITE_DATA) to the folder holding the data\n")
    return args


def commit():
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
