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


def training_seconds(run_dir):
    """Seconds of training over every epoch the run recorded (all sittings)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return sum(json.loads(line).get("seconds", 0.0) for line in lines if line.strip())


def export(run_dir, args):
    out = Path(args.runs) / f"{run_dir.name}-export"
    if out.exists():
        shutil.rmtree(out)  # this benchmark's own export of a run that may have trained on
    cli("export", str(run_dir), str(out))
    return out


def parse_args(description, default_recipes, targets):
    """The command line both scripts take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", default=os.environ.get("LSTM_SUITE_DATA"))
    parser.add_argument("--recipes", nargs="+", default=default_recipes, choices=list(targets))
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every recipe (repeatable)")
    args = parser.parse_args()
    if not args.data_dir:
        parser.exit(2, "give --data-dir (or set LSTM_SUITE_DATA) to the folder holding the data\n")
    return args


def commit():
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
