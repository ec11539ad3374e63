"""CoNLL-2003 NER quality over several seeds, and serving throughput.

Trains ``recipes/ner/conll2003.yaml`` once per seed with ``lstm-suite train``
(the run directories are kept, so an interrupted benchmark resumes), prints
dev entity F1 per seed with mean and spread, epochs and wall time. Then
exports the best seed's model and the ensemble of all seeds, scores each
SavedModel on valid (and on test.txt when the data root has it) as a
served model is scored, and measures its tagging throughput at batch 64
and batch 1.

    python benchmarks/ner_conll2003.py --data-dir DATA_ROOT [--seeds 1 2 3]

DATA_ROOT holds conll2003/train.txt and valid.txt (default: $LSTM_SUITE_DATA).
A variant of the recipe gets a name and its overrides, and may join the
runs of another in the ensemble (runs of one vocabulary average alike):

    python benchmarks/ner_conll2003.py --data-dir DATA_ROOT --name conll2003-2layer \
        --set model.encoder.num_layers=2 --set model.encoder.dropout=0.3 \
        --ensemble-with runs/bench/conll2003-seed?
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

from apps.ner.data import convert_sentences, read_conll
from apps.ner.metrics import entity_scores

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "ner" / "conll2003.yaml"


def train(seed, args):
    run_dir = Path(args.runs) / f"{args.name}-seed{seed}"
    overrides = [f"train.seed={seed}", f"model.seed={seed}", *args.set]
    start = time.time()
    subprocess.run(
        [sys.executable, "-m", "lstm_core.cli", "train", str(RECIPE), "--quiet",
         "--run-dir", str(run_dir), "--data-dir", str(args.data_dir),
         *(arg for override in overrides for arg in ("--set", override))],
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
    parser.add_argument("--name", default="conll2003", help="run directories are RUNS/NAME-seedN")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every seed (repeatable)")
    parser.add_argument("--ensemble-with", nargs="+", default=[], metavar="RUN_DIR",
                        help="finished runs that join this benchmark's ensemble")
    args = parser.parse_args()
    if not args.data_dir:
        sys.exit("give --data-dir (or set LSTM_SUITE_DATA) to the folder holding conll2003/")
    runs = Path(args.runs)

    rows = []
    for seed in args.seeds:
        run_dir, result, wall = train(seed, args)
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
    exports = {f"best seed ({seed})": (runs / f"{args.name}-seed{seed}-export", [run_dir])}
    members = [r[1] for r in rows] + [Path(d) for d in args.ensemble_with]
    if len(members) > 1:
        joined = f" and {len(args.ensemble_with)} other runs" if args.ensemble_with else ""
        exports[f"ensemble of seeds {args.seeds}{joined}"] = (
            runs / f"{args.name}-ensemble-export", members)
    conll = Path(args.data_dir) / "conll2003"
    for name, (export, run_dirs) in exports.items():
        shutil.rmtree(export, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "lstm_core.cli", "export", *map(str, run_dirs),
                        str(export)], check=True)
        for split in ("valid", "test"):
            if (conll / f"{split}.txt").is_file():
                print(f"SavedModel {name}: {split} entity F1 {served_f1(export, conll / f'{split}.txt'):.2f}")
        sentences = [" ".join(s.tokens) for s in read_conll(conll / "valid.txt")]
        for batch_size in (64, 1):
            rate = throughput(export, sentences, batch_size)
            print(f"SavedModel {name}: tagging, batch {batch_size}: {rate:.0f} sentences/s", flush=True)


def served_f1(saved_model, path):
    """Entity F1 of the SavedModel's tags (BIO) against the file's."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    sentences = convert_sentences(read_conll(path), "bio")
    predicted = []
    for start in range(0, len(sentences), 64):
        out = serve(sentences=tf.constant([" ".join(s.tokens) for s in sentences[start:start + 64]]))
        for tags, length in zip(out["tags"].numpy(), out["lengths"].numpy()):
            predicted.append([tag.decode() for tag in tags[:length]])
    return entity_scores([s.tags for s in sentences], predicted)["f1"]


if __name__ == "__main__":
    main()
