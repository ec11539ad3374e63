"""Speed of the phonemes recipe: training throughput with the peephole LSTM
and with keras.layers.LSTM side by side, and the real-time factor of the
exported SavedModel.

The model is ``recipes/phonemes/base.yaml``'s (log-mels, SpecAugment, 3
stacked frames, 2 bidirectional layers of 128, CTC) on synthetic 16 kHz
audio: 3-second utterances of 36 tone "phonemes" out of 40, batch 16. Its
encoder cell is the recipe's ``peephole_lstm`` (peepholes, cell clipping
3.0) or the registered ``lstm``, which is ``keras.layers.LSTM`` (no
peepholes, no clipping: it takes neither).

* Training: audio seconds per wall-clock second of ``train_on_batch`` on the
  model compiled as the trainer compiles it (the recipe's optimizer, clip
  norm, no XLA), after ``--warmup`` untimed steps. The two cells alternate
  each round (a shared machine drifts by tens of percent between runs, so
  only figures measured side by side compare); medians over rounds.
* Serving: each model is written to a run directory and exported with
  ``lstm_core.export.export_run``, then loaded with plain
  ``tf.saved_model.load`` as a server would, and ``serving_default``
  (features, model and CTC beam search, inside the graph) is timed on
  3-second utterances at batch 1 and batch 16. The real-time factor is
  seconds of audio per second of compute (the target is at least 50x).

Prints a markdown table with the date, CPU and commit.

    python benchmarks/phonemes_speed.py [--rounds 3] [--steps 4] [--warmup 2]
"""

import argparse
import copy
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from apps.phonemes.app import PHONE_LM_ORDER  # noqa: E402
from apps.phonemes.data import pad_batch  # noqa: E402
from lstm_core import runs  # noqa: E402
from lstm_core.cli import load_config  # noqa: E402
from lstm_core.export import export_run  # noqa: E402
from lstm_core.ngram import count_ngrams  # noqa: E402
from lstm_core.trainer import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "phonemes" / "base.yaml"
RATE = 16000
SECONDS = 3.0
PHONES = [f"p{i:02d}" for i in range(40)]
PHONEMES_PER_UTTERANCE = 36  # 12 a second, about read speech's rate
CELLS = {"peephole_lstm": "peephole_lstm", "lstm": "lstm (keras.layers.LSTM)"}


def synthetic_batch(size, seed):
    """``size`` utterances of :data:`SECONDS`: each phoneme a stretch of two
    tones (its own pair of frequencies) in noise, and their phoneme ids."""
    rng = np.random.default_rng(seed)
    tones = rng.uniform(150, 3500, size=(len(PHONES), 2))
    samples = int(SECONDS * RATE)
    part = samples // PHONEMES_PER_UTTERANCE
    t = np.arange(part) / RATE
    waveforms, labels = [], []
    for _ in range(size):
        ids = rng.integers(0, len(PHONES), PHONEMES_PER_UTTERANCE)
        wave = np.concatenate([0.2 * np.sin(2 * np.pi * tones[i, 0] * t)
                               + 0.1 * np.sin(2 * np.pi * tones[i, 1] * t) for i in ids])
        wave = np.pad(wave, (0, samples - len(wave)))
        waveforms.append((wave + 0.01 * rng.normal(size=samples)).astype("float32"))
        labels.append(ids + 1)  # 0 is the blank
    waveform, lengths = pad_batch(waveforms)
    return {"waveform": waveform, "lengths": lengths}, np.stack(labels).astype("int32")


def recipe_config(cell):
    """base.yaml's config with the encoder cell ``cell`` (no cell options
    for a layer other than the peephole LSTM: keras.layers.LSTM takes none
    of them)."""
    app, config, _, _ = load_config(RECIPE)
    config = copy.deepcopy(config)
    config["model"]["encoder"]["cell"] = cell
    if cell != "peephole_lstm":
        config["model"]["encoder"]["cell_options"] = {}
    return app, config


def trainers(batch_size):
    """``{cell: (app, config, assets, model, step)}``, ``step()`` one training step."""
    x, y = synthetic_batch(batch_size, seed=0)
    # the n-gram counts a run keeps, for exports that decode with a phone LM
    assets = {"phones": PHONES, "sample_rate": RATE, "phone_ngrams": count_ngrams(y, PHONE_LM_ORDER)}
    built = {}
    for cell in CELLS:
        app, config = recipe_config(cell)
        config["train"]["batch_size"] = batch_size
        keras.utils.set_random_seed(config["train"]["seed"])
        model, _ = build_model(app, config, assets, None, None, tf.distribute.get_strategy(), None)
        built[cell] = (app, config, assets, model,
                       lambda model=model: float(model.train_on_batch(x, y)))
    return built


def time_training(built, warmup, steps, rounds, batch_size):
    """Median audio seconds per second of training, per cell, alternating."""
    for *_, step in built.values():
        for _ in range(warmup):
            step()
    rates = {cell: [] for cell in built}
    for _ in range(rounds):
        for cell, (*_, step) in built.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[cell].append(steps * batch_size * SECONDS / (time.perf_counter() - start))
    return {cell: statistics.median(values) for cell, values in rates.items()}


def export(app, config, assets, model, folder, beam_width, lm_weight):
    """The model as a run directory, exported: the SavedModel's path."""
    run = folder / "run"
    run.mkdir(parents=True)
    runs.write_config(config, run / "recipe.yaml")
    runs.save_assets(run, runs.Assets(assets))
    model.save(run / "best.keras")
    return export_run(run, folder / "export", check=False,
                      overrides=[f"decode.beam_width={beam_width}", f"decode.lm_weight={lm_weight}"])


def time_serving(exports, batch_sizes, calls, rounds):
    """Median real-time factor per (cell, batch size): each export loaded
    with tf.saved_model.load, its serving_default timed, alternating."""
    servers = {cell: tf.saved_model.load(str(path)).signatures["serving_default"]
               for cell, path in exports.items()}
    inputs = {}
    for size in batch_sizes:
        x, _ = synthetic_batch(size, seed=1)
        inputs[size] = {"waveform": tf.constant(x["waveform"]), "lengths": tf.constant(x["lengths"])}
    for serve in servers.values():  # warm up
        for size in batch_sizes:
            serve(**inputs[size])["phonemes"].numpy()
    factors = {(cell, size): [] for cell in servers for size in batch_sizes}
    for _ in range(rounds):
        for cell, serve in servers.items():
            for size in batch_sizes:
                start = time.perf_counter()
                for _ in range(calls):
                    serve(**inputs[size])["phonemes"].numpy()
                factors[(cell, size)].append(calls * size * SECONDS / (time.perf_counter() - start))
    return {key: statistics.median(values) for key, values in factors.items()}


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit():
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each measure")
    parser.add_argument("--steps", type=int, default=4, help="training steps timed per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch")
    parser.add_argument("--calls", type=int, default=5, help="serving calls timed per round")
    parser.add_argument("--beam-width", type=int, default=8,
                        help="the export's CTC beam (base.yaml: 8; 1 = greedy)")
    parser.add_argument("--lm-weight", type=float, default=0.0,
                        help="the export's phone LM weight (0: none; fsdd.yaml: 1 with a beam of 16)")
    args = parser.parse_args()

    started = time.time()
    built = trainers(args.batch_size)
    training = time_training(built, args.warmup, args.steps, args.rounds, args.batch_size)
    with tempfile.TemporaryDirectory(prefix="phonemes-speed-") as folder:
        exports = {cell: export(app, config, assets, model, Path(folder) / cell, args.beam_width,
                                args.lm_weight)
                   for cell, (app, config, assets, model, _) in built.items()}
        serving = time_serving(exports, (1, 16), args.calls, args.rounds)

    print(f"# Phonemes speed, {time.strftime('%Y-%m-%d')}, {cpu_model()}, {os.cpu_count()} cores, "
          f"commit {commit()}, TF {tf.__version__}, Keras {keras.__version__}")
    print(f"\nbase.yaml model, {SECONDS:g} s utterances at {RATE} Hz; training at batch "
          f"{args.batch_size} ({args.warmup} warm-up steps, then median of {args.rounds} rounds x "
          f"{args.steps} steps); export with CTC beam {args.beam_width}"
          f"{f' and a phone trigram LM (weight {args.lm_weight:g})' if args.lm_weight else ''}, loaded by "
          f"tf.saved_model.load (median of {args.rounds} rounds x {args.calls} calls); "
          f"{time.time() - started:.0f} s in all.\n")
    print("| encoder cell | training: audio s / s | export, batch 1: x real time "
          "| export, batch 16: x real time |")
    print("|---|---:|---:|---:|")
    for cell, shown in CELLS.items():
        print(f"| {shown} | {training[cell]:.1f} | {serving[(cell, 1)]:.0f}x "
              f"| {serving[(cell, 16)]:.0f}x |")
    ratio = training["peephole_lstm"] / training["lstm"]
    print(f"\npeephole_lstm trains at {ratio:.2f}x keras.layers.LSTM's throughput "
          f"(above 1: faster).")


if __name__ == "__main__":
    main()
