"""CoNLL-2003 NER quality over several seeds, and serving throughput.

Trains ``recipes/ner/conll2003.yaml`` once per seed with ``lstm-suite train``
(the run directories are kept, so an interrupted benchmark resumes), prints
dev entity F1 per seed with mean and spread, epochs and wall time, then
exports the best seed's model and measures the SavedModel's tagging
throughput at batch 64 and batch 1 on dev sentences.

    python benchmarks/ner_conll2003.py --data-dir DATA_ROOT [--seeds 1 2 3]

DATA_ROOT holds conll2003/train.txt and valid.txt (default: $LSTM_SUITE_DATA).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "ner" / "conll2003.yaml"


def train(seed, data_dir, runs):
    run_dir = runs / f"conll2003-seed{seed}"
    start = time.time()
    subprocess.run(
        [sys.executable, "-m", "lstm_core.cli", "train", str(RECIPE), "--quiet",
         "--run-dir", str(run_dir), "--data-dir", str(data_dir),
         "--set", f"train.seed={seed}", "--set", f"model.seed={seed}"],
        check=True)
    result = json.loads((run_dir / "result.json").read_text())
    return run_dir, result, time.time() - start


def throughput(saved_model, sentences, batch_size, seconds=20.0):
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    batches = [tf.constant(sentences[i:i + batch_size])
               for i in range(0, len(sentences) - batch_size + 1, batch_size)]
    serve(sentences=batches[0])  # warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in batches[:200]:
            serve(sentences=batch)
            done += int(batch.shape[0])
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("LSTM_SUITE_DATA"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--runs", default=str(REPO / "runs" / "bench"))
    args = parser.parse_args()
    if not args.data_dir:
        sys.exit("give --data-dir (or set LSTM_SUITE_DATA) to the folder holding conll2003/")
    runs = Path(args.runs)

    rows = []
    for seed in args.seeds:
        run_dir, result, wall = train(seed, args.data_dir, runs)
        rows.append((seed, run_dir, result, wall))
        best = result["best"]
        print(f"seed {seed}: dev F1 {best['dev_f1']:.2f} (P {best['dev_precision']:.2f} "
              f"R {best['dev_recall']:.2f}) at epoch {result['best_epoch']} of {result['epochs']}, "
              f"{wall / 60:.1f} min this invocation", flush=True)
    scores = [r[2]["best"]["dev_f1"] for r in rows]
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    print(f"\ndev entity F1 over seeds {args.seeds}: mean {statistics.mean(scores):.2f}, "
          f"std {spread:.2f}, min {min(scores):.2f}, max {max(scores):.2f}")

    seed, run_dir, *_ = max(rows, key=lambda r: r[2]["best"]["dev_f1"])
    export = runs / f"conll2003-seed{seed}-export"
    shutil.rmtree(export, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "lstm_core.cli", "export", str(run_dir), str(export)],
                   check=True)
    from apps.ner.data import read_conll

    sentences = [" ".join(s.tokens) for s in read_conll(Path(args.data_dir) / "conll2003" / "valid.txt")]
    for batch_size in (64, 1):
        rate = throughput(export, sentences, batch_size)
        print(f"SavedModel (seed {seed}) tagging, batch {batch_size}: {rate:.0f} sentences/s")


if __name__ == "__main__":
    main()
