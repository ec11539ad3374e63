"""Training speed of a translation recipe on its own data and model: target
subwords per second with ``peephole_lstm`` and with ``keras.layers.LSTM``
(encoder and decoder), XLA on and off, side by side, and what it takes to
get going (learning the subwords, reading the data, compiling).

The first ``--batches`` batches of the recipe's training pipeline are held in
memory; each variant trains on all of them once (tracing or compiling each
batch shape), then ``--rounds`` times, the variants taking turns each round
(the shared machine drifts: only rates measured side by side compare).
Prints the median target subwords (the end of sentence included, padding
not) per second of wall-clock time and of the process's CPU time.

    python benchmarks/translation_speed.py recipes/translation/multi30k_en_de.yaml \\
        --data-dir ../shared/data [--batches 8] [--rounds 3] [--cells peephole_lstm lstm]
"""

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from lstm_core.cli import load_config  # noqa: E402
from lstm_core.runs import Assets  # noqa: E402
from lstm_core.schema import with_data_files  # noqa: E402
from lstm_core.trainer import make_optimizer  # noqa: E402


def variant(config, cell, jit):
    """The config with both recurrent stacks of ``cell`` (Keras's LSTM takes
    no cell clipping: its cell options are dropped) and XLA on or off."""
    config = copy.deepcopy(config)
    for section in (config["model"]["encoder"], config["model"]["decoder"]):
        if section["cell"] != cell:
            section["cell"], section["cell_options"] = cell, {}
    config["train"]["jit_compile"] = jit
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--data-dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", nargs="+", default=["peephole_lstm", "lstm"])
    parser.add_argument("--xla", nargs="+", default=["off", "on"], choices=["off", "on"])
    args = parser.parse_args()

    app, config, root, _ = load_config(args.recipe, args.set, args.data_dir)
    config = with_data_files(app, config, root)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; {args.recipe}")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        assets = Assets(app.build_assets(config, root, Path(folder)), folder)
        print(f"subwords learned in {time.perf_counter() - start:.1f} s: "
              f"{assets['source_vocab']} source, {assets['target_vocab']} target")
        runners, batches = {}, {}
        for jit in args.xla:
            start = time.perf_counter()
            data = app.dataset("train", variant(config, args.cells[0], jit == "on"), assets,
                               shuffle=True)
            batches[jit] = list(data.take(args.batches))
            print(f"data (XLA {jit}) read in "
                  f"{time.perf_counter() - start:.1f} s")
            for cell in args.cells:
                settings = variant(config, cell, jit == "on")
                model = app.build_model(settings, assets)
                model.compile(optimizer=make_optimizer(settings["train"]),
                              jit_compile=jit == "on")
                runners[(cell, jit)] = model
        tokens = {jit: sum(int(np.sum(y.numpy() > 0)) for _, y in found)
                  for jit, found in batches.items()}
        warmup, rates = {}, {key: ([], []) for key in runners}
        for key, model in runners.items():
            start = time.perf_counter()
            for x, y in batches[key[1]]:
                model.train_on_batch(x, y)
            warmup[key] = time.perf_counter() - start
        for _ in range(args.rounds):
            for (cell, jit), model in runners.items():
                wall, cpu = time.perf_counter(), time.process_time()
                for x, y in batches[jit]:
                    model.train_on_batch(x, y)
                rates[(cell, jit)][0].append(tokens[jit] / (time.perf_counter() - wall))
                rates[(cell, jit)][1].append(tokens[jit] / (time.process_time() - cpu))
    print(f"\n{args.batches} batches, {tokens} target subwords; median of {args.rounds} rounds\n")
    print("| cell | XLA | first pass (tracing, compiling) s | target subwords/s | per CPU s |")
    print("|---|---|---:|---:|---:|")
    for (cell, jit), (wall, cpu) in rates.items():
        print(f"| {cell} | {jit} | {warmup[(cell, jit)]:.1f} | {statistics.median(wall):,.0f} | "
              f"{statistics.median(cpu):,.0f} |")


if __name__ == "__main__":
    main()
