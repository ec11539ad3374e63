"""``train.strategy: multi_worker`` with two real worker processes on
127.0.0.1 (a TF_CONFIG cluster each): the toy app trains the same weights as
one process with the same global batch, only the chief writes the run
directory, a second run resumes from the chief's checkpoint, and workers
that see different runs stop with an error; the NER app (dict features, its
own CRF loss, a batch of one sentence) trains too."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np

from lstm_core import runs, trainer
from lstm_core.cli import main
from tests.test_ner_app import write_conll
from tests.toy_app import toy_app, toy_config, write_recipe  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 240  # seconds for a cluster run, then its workers are killed

# A worker: the CLI with the toy app registered next to the installed ones,
# saving its model's weights after every fit() to $WEIGHTS_OUT (a file
# outside the run directory, so the test can compare the workers).
WORKER = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
import keras, numpy as np
from lstm_core import apps
from tests import toy_app
installed = apps._entry_points()
apps._entry_points = lambda: {{**installed, "toy": toy_app._EntryPoint()}}
fit = keras.Model.fit

def fit_and_save_weights(model, *args, **kwargs):
    history = fit(model, *args, **kwargs)
    np.savez(os.environ["WEIGHTS_OUT"], *model.get_weights())
    return history

keras.Model.fit = fit_and_save_weights
from lstm_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


# How a worker ended: return code, output, pid, weights saved after its
# last fit() (None if none), its $TMPDIR.
Worker = namedtuple("Worker", "code output pid weights tmp")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_cluster(folder, args_of):
    """Run ``lstm-suite train`` on a two-worker cluster, worker ``i`` with the
    arguments ``args_of(i)``; a :class:`Worker` for each."""
    ports = free_ports(2)
    workers = []
    for index in range(2):
        tmp = folder / f"tmp-{index}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        cluster = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                   "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(cluster), "TF_CPP_MIN_LOG_LEVEL": "3",
               "TMPDIR": str(tmp), "WEIGHTS_OUT": str(tmp.with_suffix(".npz"))}
        tmp.with_suffix(".npz").unlink(missing_ok=True)
        log = open(folder / f"worker-{index}.log", "w+")
        process = subprocess.Popen([sys.executable, "-c", WORKER, "train", *args_of(index),
                                    "--quiet", "--set", "train.strategy=multi_worker"],
                                   cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        workers.append((process, log, tmp))
    deadline = time.time() + DEADLINE
    try:
        while any(p.poll() is None for p, _, _ in workers) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        for process, _, _ in workers:
            if process.poll() is None:
                process.kill()
            process.wait()
    results = []
    for process, log, tmp in workers:
        log.seek(0)
        weights = tmp.with_suffix(".npz")
        results.append(Worker(process.returncode, log.read(), process.pid,
                              list(np.load(weights).values()) if weights.exists() else None, tmp))
        log.close()
    return results


def assert_both_succeeded(results):
    for index, worker in enumerate(results):
        assert worker.code == 0, f"worker {index} exited with {worker.code}:\n{worker.output[-3000:]}"


def assert_same_weights(first, second, atol=0.0):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def last_checkpoint_weights(run):
    model = runs.load_run(run).model
    model.load_weights(runs.checkpoints(run)[-1] / "state.weights.h5")
    return model.get_weights()


def assert_only_the_chief_wrote(run, results, epochs):
    # the other worker appended no metrics and wrote no TensorBoard events
    # (their file names end in the writer's pid) into the run directory ...
    assert [r["epoch"] for r in records(run)] == list(range(1, epochs + 1))
    writers = {int(p.name.split(".")[-3]) for p in (run / "logs").rglob("events.out.tfevents.*")}
    assert results[0].pid in writers and results[1].pid not in writers
    assert not list(run.rglob(".tmp-*")) and not (run / "workers").exists()
    # ... and its own temporary copy is gone
    assert not list(results[1].tmp.iterdir())


def test_two_workers_train_as_one_process_and_resume_from_the_chiefs_checkpoint(tmp_path, toy_app):
    # Sequences of one length: every global batch of 16 splits evenly in two,
    # so two workers compute exactly one process's gradients.
    overrides = ["data.max_length=2", "train.epochs=2"]
    recipe = write_recipe(tmp_path)
    run = tmp_path / "run"
    args = [str(recipe), "--run-dir", str(run), *[a for o in overrides for a in ("--set", o)]]
    results = run_cluster(tmp_path, lambda index: args)
    assert_both_succeeded(results)
    assert_only_the_chief_wrote(run, results, epochs=2)
    assert sorted(os.listdir(run / "figures")) == ["dev-epoch-001.png", "dev-epoch-002.png"]
    assert_same_weights(results[0].weights, results[1].weights)
    assert_same_weights(last_checkpoint_weights(run), results[0].weights)

    app, config, root = toy_config(tmp_path, *overrides)
    trainer.train(app, config, tmp_path / "one", root, quiet=True)
    assert_same_weights(last_checkpoint_weights(tmp_path / "one"), results[0].weights, atol=1e-5)
    first_epoch = records(run)[0]

    # Killed during epoch 2, after its first checkpoint: both workers resume
    # from it (a worker that did not would stop both, see below).
    (run / "result.json").unlink()
    shutil.rmtree(runs.checkpoints(run)[-1])
    results = run_cluster(tmp_path, lambda index: args)
    assert_both_succeeded(results)
    assert records(run)[0] == first_epoch  # not trained again
    assert_only_the_chief_wrote(run, results, epochs=2)
    assert json.loads((run / "result.json").read_text())["last"]["step"] == 2 * 3
    assert_same_weights(results[0].weights, results[1].weights)

    # A worker that sees another run directory (no shared filesystem) is an
    # error on both workers, not a hang or a silent mismatch.
    (run / "result.json").unlink()
    results = run_cluster(tmp_path, lambda index: [*args[:2], str(tmp_path / f"elsewhere-{index}"),
                                                   *args[3:]] if index else args)
    for worker in results:
        assert worker.code != 0 and "the workers see different runs" in worker.output, \
            worker.output[-3000:]


NER_RECIPE = """
app: ner
data: {train_file: train.txt, dev_file: dev.txt}
model:
  word_dim: 8
  char_encoder: cnn
  char_dim: 4
  char_units: 4
  encoder: {units: 8}
  dropout: 0.0        # no random draws: the same training in one process or two
  word_dropout: 0.0
# SGD: in one process Keras's Adam takes the word embeddings' sparse gradient
# (a word repeated in a batch: squares summed, not the sum squared), and after
# the workers' all-reduce a dense one, so Adam's runs differ by design.
train: {epochs: 2, batch_size: 2, optimizer: {name: sgd, learning_rate: 0.5}}
"""


def test_two_workers_train_the_ner_tagger(tmp_path):
    # 7 sentences of one length in batches of 2: the last holds one sentence,
    # too few to split (an empty share would break the character CNN).
    write_conll(tmp_path / "train.txt", 7, 0)
    write_conll(tmp_path / "dev.txt", 4, 1)
    (tmp_path / "ner.yaml").write_text(NER_RECIPE)
    run = tmp_path / "run"
    results = run_cluster(tmp_path, lambda index: [str(tmp_path / "ner.yaml"), "--run-dir", str(run),
                                                   "--data-dir", str(tmp_path)])
    assert_both_succeeded(results)
    assert_only_the_chief_wrote(run, results, epochs=2)
    assert_same_weights(results[0].weights, results[1].weights)
    assert_same_weights(last_checkpoint_weights(run), results[0].weights)
    last = records(run)[-1]
    assert np.isfinite(last["loss"]) and 0 <= last["dev_f1"] <= 100

    # One process with the same global batches trains the same weights: the
    # CRF loss is each replica's share (not twice the gradient on two), and
    # the one-sentence batch given whole to both replicas counts once.
    one = tmp_path / "one"
    assert main(["train", str(tmp_path / "ner.yaml"), "--run-dir", str(one), "--data-dir",
                 str(tmp_path), "--quiet"]) == 0
    assert_same_weights(last_checkpoint_weights(one), results[0].weights, atol=1e-5)
