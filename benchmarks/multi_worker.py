"""Two local workers vs one process: ``train.strategy: multi_worker`` checked
and timed on each app's quickstart recipe (issue 20).

Each app's ``recipes/<app>/quickstart.yaml``, shortened (SHORTER below, then
``--set``), trains once as one process and once as two worker processes on
127.0.0.1 (free ports, a TF_CONFIG each), with the same global batch
(``train.batch_size``). Every process is the CLI with ``keras.Model.fit``
wrapped to time the training steps and to save the model's weights and the
optimizer's step count when ``fit`` returns (outside the run directory).

Checks (the exit status is 1 if one fails, in any round):

* both workers exit 0 (``finished``);
* their final weights agree: the max abs difference is at most ``--atol``
  (default 0: every worker applies the same all-reduced update);
* both workers took as many optimizer steps as the one process;
* only the chief wrote the run directory: metrics.jsonl holds each epoch
  once, TensorBoard events come from the chief's pid alone, no temporary
  files are left, and worker 1's temporary copy is gone.

Throughput is global batch x steps per second, over the steps after each
epoch's first in every epoch but the first (tracing, the iterator's start
and dev scoring left out): for two workers the chief's steps, per second of
wall-clock time and per CPU second of both workers together (the machine's
other load slows the first, not the second). Batches at a length bucket's
end can be smaller than the global batch, alike in both runs. The wall
time is each run's whole, from start to exit; the dev metric is the last
epoch's. ``--pin`` puts each process on
one core (``os.sched_setaffinity``): the one process on the first core the
script may use, worker i on the (i+1)-th, as two one-core machines would be.
With ``--rounds N`` the runs repeat, one process first, and the table shows
medians.

    nice -n 5 python benchmarks/multi_worker.py [--apps ner phonemes translation]
        [--pin] [--rounds 1] [--set [APP:]KEY=VALUE ...] [--out runs/bench/multi-worker]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from lstm_core.distribute import free_local_ports

REPO = Path(__file__).resolve().parents[1]
APPS = ("ner", "phonemes", "translation")
# A few minutes per app on 2 shared cores; enough epochs that the timed ones
# (all but the first) hold some tens of steps.
SHORTER = {"ner": ["train.epochs=3"],
           "phonemes": ["train.epochs=6"],
           "translation": ["train.epochs=2", "train.max_steps_per_epoch=40"]}

# A process: the CLI (this checkout's code first on the path), with fit()
# timing the steps and saving weights and step count to $OUT.npz / .json.
WORKER = f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
import json, keras, numpy as np
fit, clock = keras.Model.fit, dict(steps=0, seconds=0.0, cpu_seconds=0.0, epochs=0)

class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.last = None
        clock["epochs"] += 1
    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter(), time.process_time()
        if self.last is not None and clock["epochs"] > 1:
            clock["steps"] += 1
            clock["seconds"] += now[0] - self.last[0]
            clock["cpu_seconds"] += now[1] - self.last[1]
        self.last = now

def timed_fit(model, *args, callbacks=(), **kwargs):
    history = fit(model, *args, callbacks=[Clock(), *callbacks], **kwargs)
    np.savez(os.environ["OUT"] + ".npz", *model.get_weights())
    clock["optimizer_steps"] = int(model.optimizer.iterations.numpy())
    with open(os.environ["OUT"] + ".json", "w") as f:
        json.dump(clock, f)
    return history

keras.Model.fit = timed_fit
from lstm_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(folder, train_args, workers, cpus, timeout):
    """Train with ``workers`` processes (1: no TF_CONFIG); a dict per process:
    exit code, pid, its $TMPDIR, its saved weights and clock (None if none)."""
    ports = free_local_ports(workers)
    launched = []
    for index in range(workers):
        out, tmp = folder / f"worker-{index}", folder / f"tmp-{index}"
        tmp.mkdir(parents=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp), "OUT": str(out)}
        strategy = []
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({
                "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                "task": {"type": "worker", "index": index}})
            strategy = ["--set", "train.strategy=multi_worker"]
        pin = (lambda cpu=cpus[index]: os.sched_setaffinity(0, {cpu})) if cpus else None
        with open(out.with_suffix(".log"), "w") as log:
            process = subprocess.Popen([sys.executable, "-c", WORKER, "train", *train_args, "--quiet",
                                        *strategy], env=env, stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=pin)
        launched.append((process, out, tmp))
    deadline = time.time() + timeout
    while any(p.poll() is None for p, _, _ in launched) and time.time() < deadline:
        time.sleep(0.5)
    results = []
    for process, out, tmp in launched:
        if process.poll() is None:
            process.kill()
        saved = out.with_suffix(".json").exists()
        results.append({"code": process.wait(), "pid": process.pid, "tmp": tmp,
                        "weights": list(np.load(out.with_suffix(".npz")).values()) if saved else None,
                        "clock": json.loads(out.with_suffix(".json").read_text()) if saved else None})
    return results


def only_the_chief_wrote(run_dir, workers):
    """Each epoch once in metrics.jsonl, TensorBoard events from the chief's
    pid only, no temporary files left, worker 1's temporary copy gone."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if run_dir.exists() else []
    epochs = [json.loads(line)["epoch"] for line in lines]
    writers = {int(p.name.split(".")[-3]) for p in (run_dir / "logs").rglob("events.out.tfevents.*")}
    return (bool(epochs) and epochs == list(range(1, len(epochs) + 1))
            and writers == {workers[0]["pid"]} and not list(run_dir.rglob(".tmp-*"))
            and (run_dir / "result.json").exists() and not list(workers[1]["tmp"].iterdir()))


def throughput(workers, batch):
    """Examples per second of the chief's timed steps, and per CPU second
    of all the processes together."""
    clocks = [w["clock"] for w in workers]
    if not all(clocks) or not clocks[0]["steps"]:
        return float("nan"), float("nan")
    examples = batch * clocks[0]["steps"]
    return examples / clocks[0]["seconds"], examples / sum(c["cpu_seconds"] for c in clocks)


def final_dev(run_dir):
    result = json.loads((run_dir / "result.json").read_text())
    return result["monitor"], result["last"][result["monitor"]]


def compare(app, overrides, args, cpus, folder):
    """One round for ``app``: one process, then two workers; a row's values."""
    shutil.rmtree(folder, ignore_errors=True)
    recipe = REPO / "recipes" / app / "quickstart.yaml"
    sets = [a for o in overrides for a in ("--set", o)]
    one, two = folder / "one", folder / "two"
    started = time.time()
    [alone] = run(one, [str(recipe), "--run-dir", str(one / "run"), *sets], 1, cpus[:1], args.timeout)
    one_seconds, started = time.time() - started, time.time()
    workers = run(two, [str(recipe), "--run-dir", str(two / "run"), *sets], 2, cpus[1:],
                  args.timeout)
    two_seconds = time.time() - started
    if alone["code"] != 0:
        sys.exit(f"{app}: the one process exited with {alone['code']}: see {one}/worker-0.log")
    finished = all(w["code"] == 0 and w["weights"] is not None for w in workers)
    diff = (max(float(np.max(np.abs(a - b))) for a, b in zip(*(w["weights"] for w in workers)))
            if finished and len(workers[0]["weights"]) == len(workers[1]["weights"]) else None)
    steps = [w["clock"]["optimizer_steps"] if w["clock"] else None for w in [alone, *workers]]
    batch = yaml.safe_load((one / "run" / "recipe.yaml").read_text())["train"]["batch_size"]
    monitor, dev_one = final_dev(one / "run")
    dev_two = final_dev(two / "run")[1] if (two / "run" / "result.json").exists() else None
    return {"finished": finished, "diff": diff, "steps": steps,
            "chief_only": finished and only_the_chief_wrote(two / "run", workers),
            "speed_one": throughput([alone], batch), "speed_two": throughput(workers, batch),
            "wall": (one_seconds, two_seconds), "batch": batch, "monitor": monitor,
            "dev": (dev_one, dev_two)}


def overrides_of(app, sets):
    """SHORTER[app], then each ``--set [APP:]KEY=VALUE`` meant for ``app``
    (the last value of a key wins)."""
    chosen = dict(item.split("=", 1) for item in SHORTER[app])
    for item in sets:
        key, value = item.split("=", 1)
        target, _, key = key.rpartition(":")
        if target in ("", app):
            chosen[key] = value
    return [f"{key}={value}" for key, value in chosen.items()]


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


HEADER = ["app (overrides; global batch)", "both finished", "weights max abs diff (w0 vs w1)",
          "optimizer steps (one / w0 / w1)", "only the chief wrote", "one: examples/s",
          "two: examples/s", "two / one", "examples per CPU s (one / two)", "wall s (one / two)",
          "final dev (one / two)"]


def row(app, overrides, rounds):
    """The table's cells for ``app``: checks of every round, medians of the
    figures, the last round's steps and dev scores."""
    def median(key, index):
        return statistics.median(r[key][index] for r in rounds)

    last = rounds[-1]
    return [
        f"{app} ({' '.join(overrides)}; batch {last['batch']})",
        "yes" if all(r["finished"] for r in rounds) else "**no**",
        " / ".join("n/a" if r["diff"] is None else f"{r['diff']:.1e}" for r in rounds),
        " / ".join(map(str, last["steps"]))
        + ("" if all(len(set(r["steps"])) == 1 for r in rounds) else " **differ**"),
        "yes" if all(r["chief_only"] for r in rounds) else "**no**",
        f"{median('speed_one', 0):.1f}", f"{median('speed_two', 0):.1f}",
        f"{median('speed_two', 0) / median('speed_one', 0):.2f}",
        f"{median('speed_one', 1):.1f} / {median('speed_two', 1):.1f}",
        f"{median('wall', 0):.0f} / {median('wall', 1):.0f}",
        f"{last['monitor']} " + " / ".join("n/a" if v is None else f"{v:.2f}" for v in last["dev"]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", nargs="+", default=list(APPS), choices=APPS)
    parser.add_argument("--set", action="append", default=[], metavar="[APP:]KEY=VALUE",
                        help="a recipe override, for every app or for APP only (repeatable)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pin", action="store_true", help="each process on one core")
    parser.add_argument("--atol", type=float, default=0.0,
                        help="largest difference allowed between the workers' weights")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per run")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench" / "multi-worker"))
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    cpus = [cores[0], *(cores[i % len(cores)] for i in range(2))] if args.pin else []

    print(f"{time.strftime('%Y-%m-%d')}, {cpu_model()}, {len(cores)} cores, commit "
          + subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                           check=False, capture_output=True, text=True).stdout.strip()
          + (f", pinned: one process on CPU {cpus[0]}, workers on CPUs {cpus[1]} and {cpus[2]}"
             if args.pin else ", not pinned"))
    rows, failed = [], False
    for app in args.apps:
        overrides = overrides_of(app, args.set)
        rounds = [compare(app, overrides, args, cpus, Path(args.out) / f"{app}-{r}")
                  for r in range(args.rounds)]
        failed |= not all(r["finished"] and r["diff"] is not None and r["diff"] <= args.atol
                          and len(set(r["steps"])) == 1 and r["chief_only"] for r in rounds)
        rows.append(row(app, overrides, rounds))
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * 5 + "---:|" * 5 + "---|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    if failed:
        print(f"a correctness check failed (see the table; logs in {args.out})")
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
