"""Training under a ``tf.distribute`` strategy, and on a cluster of several
workers (``train.strategy: multi_worker``, the cluster from ``TF_CONFIG``).

Every worker of a cluster runs the same ``fit`` with the same callbacks, so
the same collective ops in the same order; only the chief keeps files (the
others train in a temporary copy, as TensorFlow's multi-worker Keras
tutorial does), only the chief scores dev, and the decisions that follow
from the score (stop, lower the rate, keep the best) are the chief's on
every worker.
"""

import atexit
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import tensorflow as tf

from lstm_core import runs
from lstm_core.errors import UserError


def make_strategy(name):
    """Created first thing: MultiWorkerMirroredStrategy must exist before the
    TensorFlow runtime starts other work."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("train.strategy multi_worker needs TF_CONFIG (the cluster and this "
                            "worker's task) in the environment")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    return strategy.extended.should_checkpoint


def several_workers(strategy):
    """Whether ``strategy`` spans other processes too (a multi-worker cluster)."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices))


def worker_dir(strategy, run_dir):
    """Where this worker trains: the chief in the run directory, any other
    worker of a cluster in a temporary copy of what a resume reads there
    (recipe, assets, metrics, last checkpoint), deleted when the process
    ends. A resume needs the run directory on a filesystem all workers
    share (:func:`check_workers_agree` tells when they do not)."""
    if is_chief(strategy):
        return run_dir
    copy = Path(tempfile.mkdtemp(prefix="lstm-suite-worker-"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    for name in ("recipe.yaml", "assets.json", "metrics.jsonl"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, copy / name)
    if (run_dir / runs.ASSET_FILES).is_dir():
        shutil.copytree(run_dir / runs.ASSET_FILES, copy / runs.ASSET_FILES)
    for checkpoint in runs.checkpoints(run_dir)[-1:]:
        shutil.copytree(checkpoint, copy / "checkpoints" / checkpoint.name,
                        ignore=shutil.ignore_patterns("best.keras", "report.txt"))
    return copy


def from_chief(strategy, value):
    """The chief's ``value`` (a float) on every worker of a cluster, by an
    all-reduce to which the other replicas add 0; every worker must call it
    at the same point."""
    if not several_workers(strategy):
        return value
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(value if context.replica_id_in_sync_group == 0 else 0.0,
                                    tf.float64))
    return float(strategy.reduce("SUM", values, axis=None))


def check_workers_agree(strategy, run_dir, checkpoint, assets):
    """Raise a UserError on every worker unless all resume from the same
    checkpoint with the same assets: workers that disagree would train
    different models in lockstep, or wait for each other forever."""
    if not several_workers(strategy):
        return
    key = json.dumps([checkpoint and checkpoint.name, assets], sort_keys=True)
    number = zlib.crc32(key.encode()) % 2**16  # sums of it and its square stay exact
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([1.0, number, number**2], tf.float64))
    count, total, squares = strategy.reduce("SUM", values, axis=None).numpy()
    if total**2 != count * squares:  # all equal only then (Cauchy-Schwarz)
        raise UserError(f"the workers see different runs in {run_dir} (checkpoint or assets): "
                        "a multi-worker run needs its run directory on a filesystem all "
                        "workers share, and the same command on every worker")


def split_between_replicas(dataset, strategy):
    """``dataset`` ready for ``strategy`` to split its batches: on a cluster
    every worker reads all of it and keeps its replicas' shares of each
    global batch (auto-shard policy DATA: the default would try to give the
    workers different files, and workers with different numbers of batches
    wait for each other forever). A batch too small to give every replica an
    example (the last of a bucket) is given whole to each replica instead:
    the mean of their gradients is still the batch's, and no replica gets an
    empty share, on which CPU convolutions fail ("Must provide as many biases
    as the last dimension", TF 2.21 with oneDNN)."""
    if dataset is None:
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return dataset

    def whole_if_small(*batch):
        size = tf.shape(tf.nest.flatten(batch)[0])[0]
        # tf.distribute splits a batch into shares of ceil(size / replicas)
        copies = tf.where(size <= (replicas - 1) * -(-size // replicas), replicas, 1)
        batch = tf.nest.map_structure(
            lambda t: tf.tile(t, tf.concat([[copies], tf.ones([tf.rank(t) - 1], tf.int32)], 0)), batch)
        return batch if len(batch) > 1 else batch[0]

    return dataset.map(whole_if_small)


def fit_on_workers(model, strategy, element_spec):
    """Let Keras 3's ``fit`` (3.15) run ``model`` on a cluster of several
    workers, around two of its bugs there (only then: nothing changes on one
    worker):

    - ``fit`` and ``evaluate`` build the model from their first batch after
      averaging it over the replicas with ``Strategy.reduce``, which takes one
      tensor, not an ``(inputs, targets)`` structure: a second worker fails
      with "Attempt to convert a value ({'words': PerReplica:..." (keras-team/
      keras#20329). The build needs only shapes and dtypes: it is given the
      data's element spec (through Keras's private hook; the multi-worker
      tests fail if a Keras release changes it).
    - the step results (scalar metrics) are averaged over the workers with
      ``Strategy.reduce(..., axis=0)``, which fails on a scalar ("Invalid
      reduction dimension 0", tensorflow/tensorflow#72388): the train and
      test steps return each as a row of one, whose mean over axis 0 of all
      replicas is the average the logs want.
    """
    if not several_workers(strategy):
        return
    build = model._maybe_symbolic_build
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: build(
        data_batch=element_spec)
    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: tf.nest.map_structure(
            lambda value: tf.expand_dims(value, 0), step(data)))
