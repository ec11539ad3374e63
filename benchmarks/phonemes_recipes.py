"""Phoneme error rates of the phonemes recipes against issue 18's targets.

For each recipe: trains it with ``lstm-suite train`` (the run directory is
kept, so an interrupted benchmark resumes where it stopped), exports the best
epoch as a SavedModel, and scores that SavedModel on the recipe's dev
utterances as a server would: waveforms read with soundfile/librosa at the
export's ``sample_rate``, zero-padded into batches, through
``serving_default(waveform, lengths)``, phonemes compared with the dev
transcriptions (PER with substitutions, deletions and insertions). Prints
the best greedy dev epoch, the export's beam-search PER, epochs and the
training time summed over the epochs of every sitting.

    python benchmarks/phonemes_recipes.py --data-dir DATA_ROOT [--recipes fsdd espeak_phones]

DATA_ROOT holds fsdd/, espeak_phones/ and ljspeech_phones/ (default:
$LSTM_SUITE_DATA).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: recipe -> the dev PER issue 18 asks for.
TARGETS = {"fsdd": 3.0, "espeak_phones": 5.0, "ljspeech_phones": 30.0}


def cli(*arguments):
    subprocess.run([sys.executable, "-m", "lstm_core.cli", *arguments], check=True)


def train(recipe, args):
    run_dir = Path(args.runs) / recipe
    cli("train", str(REPO / "recipes" / "phonemes" / f"{recipe}.yaml"), "--quiet",
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


def score_export(saved_model, run_dir, args, batch_size=16):
    """PER of the SavedModel on the run's dev utterances, read as a server reads audio."""
    import tensorflow as tf

    from apps.phonemes.app import PhonemeApp
    from apps.phonemes.data import fold, load_utterances, pad_batch
    from lstm_core.edit_distance import error_rate
    from lstm_core.runs import read_json
    from lstm_core.recipes import data_root
    from lstm_core.schema import recorded_config, with_data_files

    app = PhonemeApp()
    config = with_data_files(app, recorded_config(app, run_dir / "recipe.yaml"),
                             data_root(str(args.data_dir)))
    loaded = tf.saved_model.load(str(saved_model))
    rate = int(loaded.sample_rate.numpy())
    assert rate == read_json(run_dir / "assets.json")["sample_rate"]
    waveforms, kept, _ = load_utterances(app.utterances(config, "dev"), rate)
    serve = loaded.signatures["serving_default"]
    hypotheses, start = [], time.perf_counter()
    for first in range(0, len(waveforms), batch_size):
        waveform, lengths = pad_batch(waveforms[first:first + batch_size])
        out = serve(waveform=tf.constant(waveform), lengths=tf.constant(lengths))
        hypotheses += [p.decode("utf-8").split() for p in out["phonemes"].numpy()]
    seconds = time.perf_counter() - start
    audio = sum(len(w) for w in waveforms) / rate
    references = [u.phonemes for u in kept]
    folding = app.score_map(config)
    if folding is not None:
        references, hypotheses = ([fold(p, folding) for p in side]
                                  for side in (references, hypotheses))
    return error_rate(references, hypotheses), len(kept), audio / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("LSTM_SUITE_DATA"))
    parser.add_argument("--recipes", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every recipe (repeatable)")
    args = parser.parse_args()
    if not args.data_dir:
        sys.exit("give --data-dir (or set LSTM_SUITE_DATA) to the folder holding the data")
    rows = []
    for recipe in args.recipes:
        run_dir = train(recipe, args)
        result = json.loads((run_dir / "result.json").read_text())
        rate, count, real_time = score_export(export(run_dir, args), run_dir, args)
        rows.append((recipe, result, rate, count, training_seconds(run_dir), real_time))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print(f"\n{time.strftime('%Y-%m-%d')}, commit {commit}\n")
    print("| recipe | best greedy dev PER (epoch) | export dev PER, beam (S/D/I) | target | "
          "epochs | training time | export speed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for recipe, result, rate, count, seconds, real_time in rows:
        best = result["best"]
        met = "met" if rate.rate <= TARGETS[recipe] else "not met"
        print(f"| {recipe} | {best['dev_per']:.2f} ({best['epoch']}) | {rate.rate:.2f} on {count} "
              f"utterances ({rate.substitutions}/{rate.deletions}/{rate.insertions}) | "
              f"<= {TARGETS[recipe]:g} ({met}) | {result['epochs']} | {seconds / 60:.1f} min | "
              f"{real_time:.0f}x real time |")


if __name__ == "__main__":
    main()
