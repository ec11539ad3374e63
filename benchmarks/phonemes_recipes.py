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

With ``--ensemble-with RUN_DIR...`` (other seeds of one recipe) it also
exports the recipe's run and those runs as one ensemble, and scores that.

DATA_ROOT holds fsdd/, espeak_phones/ and ljspeech_phones/ (default:
$LSTM_SUITE_DATA).
"""

import json
import time

import recipe_runs  # benchmarks/, beside this script

#: recipe -> the dev PER issue 18 asks for.
TARGETS = {"fsdd": 3.0, "espeak_phones": 5.0, "ljspeech_phones": 30.0}


def score_export(saved_model, run_dir, args, batch_size=16):
    """PER of the SavedModel on the run's dev utterances, read as a server reads audio."""
    import tensorflow as tf

    from apps.phonemes.app import PhonemeApp
    from apps.phonemes.data import fold, load_utterances, pad_batch
    from lstm_core.edit_distance import error_rate
    from lstm_core.recipes import data_root
    from lstm_core.runs import read_json
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
    args = recipe_runs.parse_args(__doc__.splitlines()[0], list(TARGETS), TARGETS)
    rows = []
    for recipe in args.recipes:
        run_dir = recipe_runs.train("phonemes", recipe, args)
        result = json.loads((run_dir / "result.json").read_text())
        for label, run_dirs, saved_model in recipe_runs.exports(run_dir, args):
            rate, count, real_time = score_export(saved_model, run_dir, args)
            rows.append((recipe, label, result, rate, count, recipe_runs.epochs(run_dirs),
                         recipe_runs.training_seconds(run_dirs), real_time))
    print(f"\n{time.strftime('%Y-%m-%d')}, commit {recipe_runs.commit()}\n")
    print("| recipe | best greedy dev PER (epoch) | export dev PER, beam (S/D/I) | target | "
          "epochs | training time | export speed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for recipe, label, result, rate, count, epochs, seconds, real_time in rows:
        best = result["best"]
        met = "met" if rate.rate <= TARGETS[recipe] else "not met"
        print(f"| {label} | {best['dev_per']:.2f} ({best['epoch']}) | {rate.rate:.2f} on {count} "
              f"utterances ({rate.substitutions}/{rate.deletions}/{rate.insertions}) | "
              f"<= {TARGETS[recipe]:g} ({met}) | {epochs} | {seconds / 60:.1f} min | "
              f"{real_time:.0f}x real time |")


if __name__ == "__main__":
    main()
