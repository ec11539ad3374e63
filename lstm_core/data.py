"""tf.data helpers shared by the apps: seeded shuffling, batching by length,
padding, caching and prefetching, written once so that every app feeds the
trainer the same way.

Two paths share the bucketing code:

- :func:`make_dataset` / :func:`bucketed_batches` hold small data in memory
  (cache, a shuffle buffer the size of the data, known number of batches);
- :func:`stream_batches` reads a lazily produced stream (files of audio or
  text larger than memory): a bounded shuffle buffer, per-bucket batch sizes
  from a token budget, a maximum-length filter whose drops a
  :class:`DropCounter` counts, optional padding to the bucket boundaries.
"""

import numpy as np
import tensorflow as tf

from lstm_core.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE


def auto_boundaries(lengths, num_buckets=8):
    """Bucket boundaries at the quantiles of ``lengths``: buckets of about
    equal size, so that batches of similar length carry little padding."""
    if not len(lengths):
        return []
    quantiles = np.quantile(lengths, np.linspace(0, 1, num_buckets + 1)[1:-1])
    return sorted({int(q) + 1 for q in quantiles})


def _length_fn(length):
    """``length`` as a function of a dataset element: a callable is used as
    is; a string names a feature (in the element, or in its first dict
    component for ``(inputs, targets)``) whose first dimension is the length."""
    if callable(length):
        return length

    def by_key(*parts):
        for part in parts:
            if isinstance(part, dict) and length in part:
                return tf.shape(part[length])[0]
        raise KeyError(f"no feature {length!r} in the dataset elements")

    return by_key


def _map(fn, structure):
    """``fn`` on the leaves of dicts and tuples; lists are leaves (values)."""
    if isinstance(structure, dict):
        return {key: _map(fn, value) for key, value in structure.items()}
    if isinstance(structure, tuple):
        return tuple(_map(fn, value) for value in structure)
    return fn(structure)


def _from_python(examples):
    """A dataset of Python examples (dicts/tuples of arrays or lists), with
    the element spec read from the first one (every dimension variable)."""
    examples = [_map(np.asarray, example) for example in examples]
    if not examples:
        raise UserError("no examples to make a dataset of (is the data file empty?)")

    def spec(array):
        dtype = tf.string if array.dtype.kind in "USO" else tf.as_dtype(array.dtype)
        return tf.TensorSpec([None] * array.ndim, dtype)

    signature = _map(spec, examples[0])
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature), examples


def _dense(*parts):
    """Slices of a ragged tensor (``from_tensor_slices``) as plain tensors."""
    parts = tf.nest.map_structure(
        lambda v: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v, parts)
    return parts if len(parts) > 1 else parts[0]


def _dense_if_ragged(dataset):
    """``padded_batch`` wants tensors: ragged components become dense."""
    if any(isinstance(s, tf.RaggedTensorSpec) for s in tf.nest.flatten(dataset.element_spec)):
        return dataset.map(_dense, num_parallel_calls=AUTOTUNE)
    return dataset


def _element(args):
    """The element a tf.data function got as ``*args`` (tuples are spread)."""
    return args if len(args) > 1 else args[0]


def _bucket_shape(shape, longest):
    """Padded shape in a bucket: a variable first dimension padded to the
    bucket's ``longest`` length, other variable dimensions (-1) to the batch
    maximum."""
    if shape.rank == 0:
        return tf.TensorShape([])
    dims = [tf.constant(-1 if d is None else d, tf.int64) for d in shape.as_list()]
    if shape[0] is None:
        dims[0] = longest
    return tf.stack(dims)


def _fits_check(args, length):
    """Asserts that no padded feature is longer than the element's length
    (else padding to the bucket boundary would fail with a shape error)."""
    return [tf.debugging.assert_less_equal(
        tf.shape(x, out_type=tf.int64)[0], length,
        message="pad_to_bucket_boundary: a padded feature is longer than the element length; "
                "make `length` the longest of the padded features (e.g. max of source "
                "and target lengths)")
        for x in tf.nest.flatten(_element(args)) if x.shape.rank and x.shape[0] is None]


def _bucket_batches(dataset, length_fn, boundaries, batch_sizes, *, padding_values=None,
                    drop_remainder=False, longest=None):
    """Padded batches of elements from the same length bucket.

    Bucket ``i`` holds lengths in ``[boundaries[i-1], boundaries[i])`` (the
    first starts at 0, the last is open), as in
    ``tf.data.Dataset.bucket_by_sequence_length``; it is batched by
    ``batch_sizes[i]``. ``longest``: None pads every variable dimension to
    the batch maximum; a list (one per bucket) pads the first dimension of
    every variable-length feature to ``longest[i]`` instead, so each bucket
    has one padded shape.
    """
    edges = tf.constant(list(boundaries), tf.int64, shape=[len(boundaries)])
    sizes = tf.constant(list(batch_sizes), tf.int64)

    def bucket(*args):
        length = tf.cast(length_fn(*args), tf.int64)
        checks = _fits_check(args, length) if longest is not None else []
        with tf.control_dependencies(checks):
            return tf.reduce_sum(tf.cast(edges <= length, tf.int64))

    def batch(bucket_id, window):
        shapes = None
        if longest is not None:
            fill = tf.constant(list(longest), tf.int64)[bucket_id]
            shapes = tf.nest.map_structure(lambda spec: _bucket_shape(spec.shape, fill),
                                           window.element_spec)
        return window.padded_batch(sizes[bucket_id], shapes, padding_values,
                                   drop_remainder=drop_remainder)

    return dataset.group_by_window(bucket, batch, window_size_func=lambda i: sizes[i])


def make_dataset(examples, *, batch_size, length, shuffle, seed=None, bucket_boundaries=None,
                 num_buckets=8, lengths=None, padding_values=None, cache=True,
                 drop_remainder=False, shuffle_buffer=None, prefetch=True):
    """Batches of examples of similar length, padded to the longest in each.

    ``examples``: a ``tf.data.Dataset`` or a list/generator of examples (dicts
    or tuples of arrays). ``length``: a feature name or a function of an
    element giving its length; ``lengths``: the examples' lengths if known
    (else one pass over a dataset computes them). Bucket boundaries come from
    the length quantiles unless given. Shuffling is seeded and differs each
    epoch (``reshuffle_each_iteration``); padded shapes follow the element
    spec (every variable dimension padded to the batch maximum) with zeros /
    empty strings unless ``padding_values`` says otherwise. Caching happens
    before shuffling, so each epoch reads memory.

    The number of batches is fixed by the lengths alone (each bucket batches
    its own examples), so it is asserted on the dataset: Keras then shows a
    real progress bar and never runs past the end of an epoch.
    """
    length_fn = _length_fn(length)
    if not isinstance(examples, tf.data.Dataset):
        examples, items = _from_python(examples)
        if lengths is None:
            lengths = [int(length_fn(*(item if isinstance(item, tuple) else (item,))))
                       for item in items]
    dataset = examples
    if lengths is None:
        lengths = list(dataset.map(length_fn).as_numpy_iterator())
    if bucket_boundaries is None:
        bucket_boundaries = auto_boundaries(lengths, num_buckets)
    dataset = _dense_if_ragged(dataset)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(max(shuffle_buffer or len(lengths), 1), seed=seed,
                                  reshuffle_each_iteration=True)
    dataset = _bucket_batches(dataset, length_fn, bucket_boundaries,
                              [batch_size] * (len(bucket_boundaries) + 1),
                              padding_values=padding_values, drop_remainder=drop_remainder)
    batches = _batches_per_epoch(lengths, bucket_boundaries,
                                 [batch_size] * (len(bucket_boundaries) + 1), drop_remainder)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(AUTOTUNE) if prefetch else dataset


def _batches_per_epoch(lengths, boundaries, batch_sizes, drop_remainder):
    """Batches an epoch of elements of ``lengths`` makes when bucket ``i``
    batches by ``batch_sizes[i]``: fixed by the lengths alone, as each
    bucket batches its own elements."""
    buckets = np.searchsorted(boundaries, np.asarray(lengths, np.int64), side="right")
    per_bucket = np.bincount(buckets, minlength=len(batch_sizes))
    sizes = np.asarray(batch_sizes)
    batches = per_bucket // sizes if drop_remainder else -(-per_bucket // sizes)
    return int(batches.sum())


def bucketed_batches(dataset, lengths, batch_size, *, shuffle, seed, length_fn, num_buckets=8):
    """:func:`make_dataset` with known ``lengths`` and no prefetch (the
    caller maps features afterwards and prefetches at the end of its own
    pipeline)."""
    return make_dataset(dataset, batch_size=batch_size, length=length_fn, shuffle=shuffle,
                        seed=seed, num_buckets=num_buckets, lengths=lengths, prefetch=False)


# -- streams larger than memory --------------------------------------------------


class DropCounter:
    """Counts the elements :func:`stream_batches`' ``max_length`` filter drops.

    The count lives in a ``tf.Variable`` that the filter increments inside
    the tf.data pipeline, so nothing is materialised and no pre-pass is
    needed. It counts every element any iterator of the dataset has read,
    accumulating until :meth:`reset`: exact after a whole epoch, and
    including read-ahead (shuffle buffer, prefetch) while one is under way.
    For a per-epoch number, reset at the start of each epoch and read at its
    end, e.g. a Keras callback with ``on_epoch_begin: counter.reset()`` and
    ``on_epoch_end: print(counter.count)`` (under a tf.distribute strategy
    Keras opens an iterator before the first epoch that reads ahead, so the
    reset at the start matters). Create it outside ``strategy.scope()``
    (there it would become a distributed variable); under tf.distribute each
    worker counts what its own pipeline reads (see ``shard`` in
    :func:`stream_batches`).

    When the lengths are known in advance (an index of durations, say),
    ``sum(n > max_length for n in lengths)`` gives the same number for free.
    """

    def __init__(self):
        if tf.distribute.has_strategy():
            raise ValueError("create DropCounter outside strategy.scope(): the count is a "
                             "plain CPU variable of the input pipeline")
        with tf.init_scope(), tf.device("/cpu:0"):
            self._count = tf.Variable(0, dtype=tf.int64, trainable=False, name="dropped")

    @property
    def count(self) -> int:
        """Elements dropped since creation or the last :meth:`reset`."""
        return int(self._count.numpy())

    def reset(self) -> int:
        """Set the count to 0 (e.g. at the start of each epoch); returns the
        count before the reset."""
        count = self.count
        self._count.assign(0)
        return count

    def _add(self, dropped):
        return self._count.assign_add(tf.cast(dropped, tf.int64))


def _stream_buckets(boundaries, max_length):
    """Checked boundaries and each bucket's longest length (None for an
    open last bucket when there is no ``max_length``)."""
    boundaries = list(boundaries or ())
    if any(not isinstance(b, (int, np.integer)) or b < 1 for b in boundaries) \
            or any(a >= b for a, b in zip(boundaries, boundaries[1:])):
        raise UserError(f"bucket_boundaries must be increasing positive integers, "
                        f"got {boundaries}")
    if max_length is not None:
        if not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise UserError(f"max_length must be a positive integer, got {max_length!r}")
        if boundaries and boundaries[-1] > max_length:
            raise UserError(f"bucket_boundaries {boundaries} go past max_length {max_length}: "
                            f"every boundary must be at most max_length")
    return [int(b) for b in boundaries], [int(b) - 1 for b in boundaries] + [max_length]


def _stream_batch_sizes(longest, batch_size, batch_tokens):
    """One batch size per bucket: fixed, or ``batch_tokens // longest`` (at
    least 1) so every full batch holds about the same number of tokens."""
    if (batch_size is None) == (batch_tokens is None):
        raise UserError("give exactly one of batch_size (examples per batch) and "
                        "batch_tokens (a token budget per batch)")
    value, name = (batch_size, "batch_size") if batch_size is not None else (batch_tokens,
                                                                             "batch_tokens")
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    if batch_size is not None:
        return [int(batch_size)] * len(longest)
    if longest[-1] is None:
        raise UserError("batch_tokens needs max_length: the last bucket's longest example "
                        "sets its batch size")
    return [max(1, int(batch_tokens) // max(1, n)) for n in longest]


def _shard(dataset, shard):
    """``dataset.shard`` for this worker, with tf.distribute's auto-sharding
    turned off (the data is already split)."""
    try:
        num_shards, index = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise UserError(f"shard must be (num_shards, index), got {shard!r}") from None
    if not 0 <= index < num_shards:
        raise UserError(f"shard index {index} is not in 0..{num_shards - 1}")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.shard(num_shards, index).with_options(options)


def stream_batches(dataset, *, length, bucket_boundaries=(), max_length=None, batch_size=None,
                   batch_tokens=None, shuffle_buffer=0, seed=None, pad_to_bucket_boundary=False,
                   padding_values=None, drop_remainder=False, dropped=None, shard=None,
                   lengths=None, prefetch=True):
    """Batches of similar length from a stream too large for memory.

    The pipeline is: ``shard`` → drop elements longer than ``max_length``
    (counted by ``dropped``) → seeded shuffle in a bounded buffer → bucket by
    length, pad and batch → prefetch. Nothing is cached or listed in Python
    and the number of elements or batches is never needed (a stream's
    cardinality is unknown, so none is asserted: Keras learns an epoch's
    length at the end of the first one).

    Arguments:
      dataset: a ``tf.data.Dataset`` whose elements are produced lazily, e.g.
        ``tf.data.Dataset.from_generator`` over a file, or ``TextLineDataset``
        + ``map``. Elements are dicts or tuples such as ``(inputs, targets)``
        of tensors (ragged components are made dense).
      length: a feature name (found in the element, or in its first dict
        component) whose first dimension is the length, or a function of the
        element (as tf.data passes it) returning an integer scalar, e.g. audio
        frames, or ``tf.maximum`` of source and target tokens for translation.
      bucket_boundaries: increasing lengths splitting the buckets: bucket
        ``i`` holds lengths in ``[bucket_boundaries[i-1], bucket_boundaries[i])``,
        the first starts at 0 and the last ends at ``max_length`` (or is open
        without it). Every boundary must be at most ``max_length``. Empty: one
        bucket. :func:`auto_boundaries` over a sample of lengths is one way to
        pick them.
      max_length: drop elements whose length exceeds it (the drops are counted
        by ``dropped``); needed by ``batch_tokens`` and
        ``pad_to_bucket_boundary``, which must know each bucket's longest length.
      batch_size: a fixed number of examples per batch, or
      batch_tokens: a budget of length units (tokens, audio frames) per batch:
        a bucket whose longest length is ``n`` (its upper boundary minus 1, or
        ``max_length`` for the last) gets batches of ``max(1, batch_tokens // n)``
        examples (fairseq's max_tokens, OpenNMT-tf's "tokens" batch type), so
        ``examples x longest`` never exceeds the budget unless a single example
        does. Give exactly one of the two. Under ``tf.distribute`` with one
        dataset for all replicas this is the global batch (split across
        replicas); with a pipeline per replica it is per replica.
      shuffle_buffer: elements held by the shuffle buffer (0 or None: no shuffling).
        Memory is bounded by it; the order is random within windows of about
        this many elements, so shuffle the file list too when files are sorted.
      seed: the shuffle seed: the same seed gives the same order, and each
        epoch (each new iterator) draws a different one.
      pad_to_bucket_boundary: pad the first dimension of every variable-length
        feature to its bucket's longest length instead of the batch's longest,
        so XLA compiles one shape per bucket (other variable dimensions are
        still padded to the batch's longest). Needs ``max_length``, and
        ``length`` must bound every such feature (an assertion says so if not).
      padding_values: as in ``tf.data.Dataset.padded_batch`` (default zeros and
        empty strings).
      drop_remainder: drop each bucket's last, incomplete batch of an epoch.
      dropped: a :class:`DropCounter` that counts the elements longer than
        ``max_length`` (read it after an epoch).
      shard: ``(num_shards, index)`` to read only this worker's share, every
        ``num_shards``-th element from ``index`` (before any filtering), with
        tf.distribute's auto-sharding turned off for this dataset. The whole
        stream is still read by every worker; to split the reading, shard the
        file list before reading it and leave this None. With None,
        tf.distribute's AUTO policy applies: FILE sharding when the pipeline
        starts from files (``TextLineDataset``/``TFRecordDataset`` over a list
        of files; needs at least as many files as workers), else DATA (every
        worker reads and filters the whole stream and keeps its share of the
        batches; ``dropped`` then counts the whole stream on each worker).
      lengths: the lengths of the stream's elements in order, when they are
        known (data held in memory, an index of durations): the number of
        batches an epoch makes is then asserted on the dataset, so Keras
        shows a real progress bar from the first epoch and does not warn at
        each epoch's end that the input ran out. ``shard`` and
        ``max_length`` are applied to them as to the stream.
      prefetch: end with ``prefetch(AUTOTUNE)``; False when the caller maps
        more (featurizing) and prefetches at the end of its own pipeline.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"stream_batches needs a tf.data.Dataset, got {type(dataset).__name__}")
    if dropped is not None and max_length is None:
        raise ValueError("a DropCounter needs max_length (nothing is dropped without it)")
    length_fn = _length_fn(length)
    boundaries, longest = _stream_buckets(bucket_boundaries, max_length)
    sizes = _stream_batch_sizes(longest, batch_size, batch_tokens)
    if pad_to_bucket_boundary and max_length is None:
        raise UserError("pad_to_bucket_boundary needs max_length: the last bucket must have "
                        "a longest length to pad to")
    if shuffle_buffer is not None and (not isinstance(shuffle_buffer, (int, np.integer))
                                       or shuffle_buffer < 0):
        raise UserError(f"shuffle_buffer must be a non-negative integer, got {shuffle_buffer!r}")
    if shard is not None:
        dataset = _shard(dataset, shard)
    dataset = _dense_if_ragged(dataset)
    if max_length is not None:
        dataset = dataset.filter(_within(length_fn, max_length, dropped))
    if shuffle_buffer:
        dataset = dataset.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    dataset = _bucket_batches(dataset, length_fn, boundaries, sizes, padding_values=padding_values,
                              drop_remainder=drop_remainder,
                              longest=longest if pad_to_bucket_boundary else None)
    if lengths is not None:
        lengths = np.asarray(lengths, np.int64)
        if shard is not None:
            lengths = lengths[int(shard[1])::int(shard[0])]
        if max_length is not None:
            lengths = lengths[lengths <= max_length]
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(
            _batches_per_epoch(lengths, boundaries, sizes, drop_remainder)))
    return dataset.prefetch(AUTOTUNE) if prefetch else dataset


def _within(length_fn, max_length, dropped):
    """Filter predicate: length at most ``max_length``; counts the others."""
    def keep(*args):
        fits = tf.cast(length_fn(*args), tf.int64) <= max_length
        if dropped is None:
            return fits
        with tf.control_dependencies([dropped._add(tf.logical_not(fits))]):
            return tf.identity(fits)
    return keep
