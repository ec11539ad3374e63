"""``train.strategy: multi_worker`` with two real worker processes on
127.0.0.1 (a TF_CONFIG cluster each): the toy app trains the same weights as
one process with the same global batch, only the chief writes the run
directory, a second run resumes from the chief's checkpoint, and workers
that see different runs stop with an error; the NER, phonemes and
translation apps (dict features, their own CRF, CTC and token-level
cross-entropy losses, batches split unevenly or given whole to both
replicas, gradient clipping, SentencePiece subwords each worker learns
alike, a dev score only the chief computes: F1, error rate, BLEU of greedy
translations) train as one process does and resume too. Two replicas in one
process: a model's own loss, and SpecAugment's masks."""

import json
import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from lstm_core import runs, trainer
from lstm_core.distribute import free_local_ports
from lstm_core.cli import main
from tests.bad_inputs.cases import DEV_PAIRS, PAIRS
from tests.test_ner_app import write_conll
from tests.test_phonemes_app import write_corpus
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


def run_cluster(folder, args_of):
    """Run ``lstm-suite train`` on a two-worker cluster, worker ``i`` with the
    arguments ``args_of(i)``; a :class:`Worker` for each."""
    ports = free_local_ports(2)
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
data: {train_file: train.txt, dev_file: dev.txt, test_file: dev.txt}
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
train: {epochs: 2, batch_size: 3, optimizer: {name: sgd, learning_rate: 0.5}}
"""

PHONEMES_RECIPE = """
app: phonemes
data: {train_manifest: manifest.tsv, train_split: train, dev_split: dev, sample_rate: 8000}
model:
  features: {n_mels: 8}
  # SpecAugment runs (its step counter is among the weights compared) but
  # masks nothing: each replica draws masks for the rows of its own share,
  # which one process draws for other rows (test_two_replicas_... below).
  spec_augment: {freq_mask_width: 0, time_mask_width: 0}
  subsample: {factor: 2}
  encoder: {units: 4, num_layers: 1}
decode: {beam_width: 1}
# SGD: Adam's first steps follow each gradient's sign, so a gradient near 0,
# summed over the workers in another order than in one process, could step
# the other way. clip_norm: small enough to clip every step.
train: {epochs: 2, batch_size: 3, clip_norm: 0.1, optimizer: {name: sgd, learning_rate: 0.1}}
"""


TRANSLATION_RECIPE = """
app: translation
data:
  train_pairs: train.tsv
  dev_pairs: dev.tsv
  test_pairs: dev.tsv
  subwords: {vocab_size: 40}   # each worker learns the same (SentencePiece is deterministic)
model:
  source_embedding_dim: 8
  target_embedding_dim: 8
  embedding_dropout: 0.0   # no random draws, as above
  encoder: {units: 8, num_layers: 1, dropout: 0.0, bidirectional: false}  # a smaller graph
  decoder: {units: 8, num_layers: 1, dropout: 0.0}
decode: {beam_width: 1}    # the test set decoded greedily, as dev is: its graph traced once
# SGD and a clip_norm small enough to clip every step, as for phonemes; the
# dev BLEU (greedy decoding, on the chief alone) picks the best epoch.
train:
  epochs: 2
  batch_size: 8
  clip_norm: 0.5
  optimizer: {name: sgd, learning_rate: 0.5}
  reduce_on_plateau: {enabled: false}
  early_stopping: {patience: 0}
"""


def ner_data(folder):
    """7 sentences of one length in batches of 3: the last holds one
    sentence, too few to split (an empty share would break the character
    CNN), the others are split 2 + 1."""
    write_conll(folder / "train.txt", 7, 0)
    write_conll(folder / "dev.txt", 4, 1)
    (folder / "ner.yaml").write_text(NER_RECIPE)
    return folder / "ner.yaml"


def phonemes_data(folder):
    """7 training utterances, 3, 3 and 1 of 1, 2 and 3 tones (bucketed by
    length): batches split 2 + 1, and one given whole to both replicas; 4
    dev utterances."""
    write_corpus(folder, 11)
    (folder / "phonemes.yaml").write_text(PHONEMES_RECIPE)
    return folder / "phonemes.yaml"


def translation_data(folder):
    """30 training pairs (the bad-input corpus's) bucketed by length into
    batches of up to 8: batches split unevenly, a batch of one given whole to
    both replicas; 3 dev pairs, also the test set."""
    (folder / "train.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    (folder / "dev.tsv").write_text(DEV_PAIRS, encoding="utf-8")
    (folder / "translation.yaml").write_text(TRANSLATION_RECIPE)
    return folder / "translation.yaml"


@pytest.mark.parametrize("write_data", [ner_data, phonemes_data, translation_data],
                         ids=["ner", "phonemes", "translation"])
def test_two_workers_train_an_app_as_one_process_and_resume(tmp_path, write_data):
    recipe, run = write_data(tmp_path), tmp_path / "run"
    args = [str(recipe), "--data-dir", str(tmp_path), "--run-dir"]
    results = run_cluster(tmp_path, lambda index: [*args, str(run)])
    assert_both_succeeded(results)
    assert_only_the_chief_wrote(run, results, epochs=2)
    assert_same_weights(results[0].weights, results[1].weights)
    assert_same_weights(last_checkpoint_weights(run), results[0].weights)

    # One process with the same global batches trains the same weights: the
    # loss is each replica's share of the batch's mean (a batch split 2 + 1
    # weighs its examples alike, one given whole to both replicas counts
    # once), and the clipped gradient is the batch's, not each share's.
    one = tmp_path / "one"
    assert main(["train", *args, str(one), "--quiet"]) == 0
    assert_same_weights(last_checkpoint_weights(one), results[0].weights, atol=1e-5)
    assert records(one)[0]["loss"] != records(one)[1]["loss"]  # it trains
    # The chief's dev and test scores, computed alone (creating variables:
    # the phonemes serving module's), are one process's.
    for two_workers, one_process in zip(records(run), records(one)):
        dev_scores = {k: v for k, v in one_process.items() if k.startswith("dev_")}
        assert dev_scores and {k: two_workers[k] for k in dev_scores} == dev_scores
    test_scores = [json.loads((r / "result.json").read_text())["test"] for r in (run, one)]
    assert test_scores[0] == test_scores[1]

    # Killed during epoch 2, after its first checkpoint: both workers resume
    # from it, the other worker from its copy of the chief's. (Not to the
    # first run's weights: a resumed epoch shuffles the data in the order of
    # a process's first epoch.)
    first_epoch = records(run)[0]
    (run / "result.json").unlink()
    shutil.rmtree(runs.checkpoints(run)[-1])
    results = run_cluster(tmp_path, lambda index: [*args, str(run)])
    assert_both_succeeded(results)
    assert records(run)[0] == first_epoch  # not trained again
    assert_only_the_chief_wrote(run, results, epochs=2)
    assert records(run)[-1]["step"] == records(one)[-1]["step"]
    assert_same_weights(results[0].weights, results[1].weights)


# Two replicas in one process (two logical CPUs, which must be set before
# TensorFlow starts: a process of its own).
TWO_REPLICAS = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from lstm_core.audio import SpecAugment
from lstm_core.distribute import replica_loss

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
local = strategy.experimental_local_results

# A batch of 3 examples split 2 + 1, their losses summing to 6 and 9, and a
# penalty of 4: each replica's gradient is the whole batch's mean's, and Keras
# logs the batch's mean loss (each replica's value times 2, weighted by its
# share's size).
def share():
    first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
    total, count = tf.where(first, 6.0, 9.0), tf.where(first, 2, 1)
    with tf.GradientTape() as tape:
        tape.watch(total)
        loss = replica_loss(total, count, penalty=tf.constant(4.0))
    return loss, tape.gradient(loss, total), count

values, gradients, counts = ([t.numpy() for t in local(v)] for v in strategy.run(tf.function(share)))
np.testing.assert_allclose(gradients, [1 / 3, 1 / 3], rtol=1e-6)
logged = sum(c * 2 * v for c, v in zip(counts, values)) / sum(counts)
np.testing.assert_allclose(logged, (6 + 9) / 3 + 4, rtol=1e-6)

# SpecAugment on the same batch in both replicas: each draws its own masks.
masks = dict(freq_masks=1, freq_mask_width=3, time_masks=1, time_mask_width=5, seed=7)
features, lengths = tf.ones([3, 20, 6]), tf.constant([20, 14, 9])
alone = SpecAugment(**masks)
with strategy.scope():
    layer = SpecAugment(**masks)
step = tf.function(lambda: layer(features, lengths, training=True)[0])
for _ in range(2):
    shares = [t.numpy() for t in local(strategy.run(step))]
    expected = alone(features, lengths, training=True)[0].numpy()
    np.testing.assert_array_equal(shares[0], expected)  # replica 0 draws as one process
    assert (shares[1] != shares[0]).any(), "both replicas masked their rows alike"
assert [int(v) for v in local(layer._step.value)] == [2, 2]
"""


def test_two_replicas_share_the_batch_loss_and_draw_their_own_masks():
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS],
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr[-3000:]
