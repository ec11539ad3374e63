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
import concurrent.futures
import json
import os
import socket
import shutil
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
    folder = runs.scratch_folder("worker")
    atexit.register(folder.cleanup)
    copy = Path(folder.name)
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


def replica_loss(total, count, penalty=None):
    """This replica's share of a loss that is a mean over the global batch,
    for a model's own ``compute_loss``: ``total``, the summed loss of this
    replica's ``count`` examples (or tokens), plus ``penalty`` (weight
    penalties, once per batch); 0 on no examples.

    Keras sums the replicas' gradients, so each replica's gradient is that
    of ``total`` over the count of all replicas: the shares add up to one
    process's gradient however tf.distribute splits a batch. A per-replica
    mean divided by the number of replicas (how Keras's own losses scale)
    weighs the examples of a smaller share more (a batch of 3 is split
    2 + 1). The value returned is that per-replica mean, though: Keras logs
    it times the number of replicas, weighted by the share's size, which
    averages to the batch's mean loss (a batch given whole to every replica,
    see :func:`split_between_replicas`, counts once per replica in the
    epoch's logged mean; its gradient counts once)."""
    count = tf.cast(count, total.dtype)
    loss = total / tf.maximum(count, 1.0)
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    if replicas > 1:
        share = total / tf.maximum(context.all_reduce("SUM", count), 1.0)
        loss = share + tf.stop_gradient(loss / replicas - share)
    if penalty is not None:
        loss += tf.cast(penalty, loss.dtype) / replicas
    return loss


def alone(strategy, function, *args, **kwargs):
    """``function(*args, **kwargs)`` for what one worker of a cluster does
    while the others do not (the chief scoring dev or the test sets), run
    outside ``strategy``. Under MultiWorkerMirroredStrategy every variable is
    created by a broadcast all workers must join: a variable the chief alone
    creates (a serving module's, say) stops both workers with "Collective ...
    expected type" or waits forever. A strategy's scope holds in the thread
    that entered it only, so the call runs in a thread of its own."""
    if not several_workers(strategy):
        return function(*args, **kwargs)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lstm-suite-alone") as pool:
        return pool.submit(function, *args, **kwargs).result()


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
    """Let Keras 3's ``fit`` (3.15) run ``model`` on several replicas, around
    its bugs there (nothing changes on one replica):

    - its optimizer clips each replica's gradient before adding them up, so
      ``train.clip_norm`` bounds each share's norm, not the batch's (two
      workers clip at twice the norm, in another direction):
      :func:`clip_summed_gradients`.

    On a cluster of several workers also:

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
    if strategy.num_replicas_in_sync > 1:
        clip_summed_gradients(model.optimizer)
    if not several_workers(strategy):
        return
    build = model._maybe_symbolic_build
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: build(
        data_batch=element_spec)
    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: tf.nest.map_structure(
            lambda value: tf.expand_dims(value, 0), step(data)))


def clip_summed_gradients(optimizer):
    """Make a clipping ``optimizer`` (``global_clipnorm``, ``clipnorm``,
    ``clipvalue``) add up the replicas' gradients first and clip the sum, as
    one process clips the whole batch's gradient. Keras 3 clips in
    ``_clip_gradients`` and adds up in ``_all_reduce_sum_gradients``, after
    it (private methods: the multi-worker tests, which clip, fail if a Keras
    release changes them); the sum is moved before the clipping."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a loss scale
    if not (optimizer.global_clipnorm or optimizer.clipnorm or optimizer.clipvalue):
        return
    clip = optimizer._clip_gradients

    def sum_then_clip(grads):
        context = tf.distribute.get_replica_context()
        present = [g for g in grads if g is not None]
        if context is not None and present:
            summed = iter(context.all_reduce("SUM", present))
            grads = [None if g is None else next(summed) for g in grads]
        return clip(grads)

    optimizer._clip_gradients = sum_then_clip
    optimizer._all_reduce_sum_gradients = lambda grads_and_vars: grads_and_vars


def free_local_ports(count):
    """``count`` free TCP ports on 127.0.0.1, for a cluster of workers on
    one machine (the tests, benchmarks/multi_worker.py, trying
    ``train.strategy: multi_worker`` out before a real cluster)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
