"""BLEU of the translation recipes against issue 19's targets, scored
through the exported SavedModel as a server would use it.

For each recipe: trains it with ``lstm-suite train`` (the run directory is
kept, so an interrupted benchmark resumes where it stopped: a recipe that
needs hours trains in several sittings), exports the best epoch, and loads
the SavedModel with nothing of this project imported (``tensorflow_text``
only, for its SentencePiece ops). Through ``serving_default(source)`` it
translates the dev sentences at batch 64 (sentences per second) and 100 of
them one at a time (median latency at batch 1), then scores the
translations with sacreBLEU: cased BLEU and chrF against the raw
references, and lowercased BLEU, as the Multi30k literature reports. Prints
these with the epochs run and the training time summed over every sitting.

    python benchmarks/translation_recipes.py --data-dir DATA_ROOT \\
        [--recipes multi30k_en_de multi30k_de_en] [--set train.epochs=12]

With ``--ensemble-with RUN_DIR...`` (other seeds of one recipe) it also
exports the recipe's run and those runs as one ensemble, and scores that.

DATA_ROOT holds multi30k/ (default: $LSTM_SUITE_DATA).
"""

import json
import os
import subprocess
import sys
import time

import recipe_runs  # benchmarks/, beside this script

#: recipe -> the dev BLEU (cased sacreBLEU, beam search) issue 19 asks for.
TARGETS = {"multi30k_en_de": 40.0, "multi30k_de_en": 44.0,
           "quickstart": 90.0}  # the quickstart: a smoke check of this script


def dev_pairs(run_dir, args):
    """The dev sentences and references the run was tuned on, read by the app."""
    from apps.translation.app import TranslationApp
    from lstm_core.recipes import data_root
    from lstm_core.schema import recorded_config, with_data_files

    app = TranslationApp()
    config = with_data_files(app, recorded_config(app, run_dir / "recipe.yaml"),
                             data_root(str(args.data_dir)))
    pairs = app.pairs(config, "dev")
    return [p.source for p in pairs], [p.target for p in pairs]


SERVE = """
import json, statistics, sys, time
import tensorflow_text  # noqa: F401  the SentencePiece ops, and nothing of lstm-suite
import tensorflow as tf
saved_model, sources = sys.argv[1], json.load(sys.stdin)
translate = tf.saved_model.load(saved_model).signatures["serving_default"]
translate(source=tf.constant(sources[:64]))  # traced once, as a server warms up
start, out = time.perf_counter(), []
for first in range(0, len(sources), 64):
    result = translate(source=tf.constant(sources[first:first + 64]))["translation"]
    out += [t.decode("utf-8") for t in result.numpy()]
seconds = time.perf_counter() - start
latencies = []
for sentence in sources[:100]:
    start = time.perf_counter()
    translate(source=tf.constant([sentence]))
    latencies.append(time.perf_counter() - start)
json.dump({"translations": out, "per_second": len(sources) / seconds,
           "latency_ms": 1000 * statistics.median(latencies)}, sys.stdout)
"""


def serve(saved_model, sources):
    """Translations, sentences/s at batch 64 and median batch-1 latency, from
    a fresh process that imports no module of this project."""
    done = subprocess.run([sys.executable, "-c", SERVE, str(saved_model)],
                          input=json.dumps(sources), capture_output=True, text=True,
                          check=True, cwd="/", env={**os.environ, "PYTHONPATH": ""})
    return json.loads(done.stdout)


def main():
    args = recipe_runs.parse_args(__doc__.splitlines()[0], ["multi30k_en_de", "multi30k_de_en"], TARGETS)
    from apps.translation.metrics import score

    rows = []
    for recipe in args.recipes:
        run_dir = recipe_runs.train("translation", recipe, args)
        result = json.loads((run_dir / "result.json").read_text())
        sources, references = dev_pairs(run_dir, args)
        for label, run_dirs, saved_model in recipe_runs.exports(run_dir, args):
            served = serve(saved_model, sources)
            scores, report = score(served["translations"], references)
            print(f"{label}, the export on dev:\n{report}")
            rows.append((recipe, label, result, scores, served, recipe_runs.epochs(run_dirs),
                         recipe_runs.training_seconds(run_dirs)))
    print(f"\n{time.strftime('%Y-%m-%d')}, commit {recipe_runs.commit()}\n")
    print("| recipe | best greedy dev BLEU (epoch) | export dev BLEU, beam | chrF | "
          "lowercased BLEU | target | epochs | training time | sentences/s at 64 | "
          "latency at 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for recipe, label, result, scores, served, epochs, seconds in rows:
        best = result["best"]
        met = "met" if scores["bleu"] >= TARGETS[recipe] else "not met"
        greedy = f"{best['dev_bleu']:.2f} ({best['epoch']})" if "dev_bleu" in best else "-"
        print(f"| {label} | {greedy} | {scores['bleu']:.2f} | {scores['chrf']:.2f} | "
              f"{scores['bleu_lowercase']:.2f} | >= {TARGETS[recipe]:g} ({met}) | "
              f"{epochs} | {seconds / 60:.1f} min | {served['per_second']:.0f} | "
              f"{served['latency_ms']:.0f} ms |")


if __name__ == "__main__":
    main()
