"""tf.data helpers shared by the apps: seeded shuffling, batching by length,
padding, caching and prefetching, written once so that every app feeds the
trainer the same way."""

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
    per_bucket = np.bincount(np.searchsorted(bucket_boundaries, lengths, side="right"))
    batches = per_bucket // batch_size if drop_remainder else -(-per_bucket // batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(int(batches.sum())))
    return dataset.prefetch(AUTOTUNE) if prefetch else dataset


def bucketed_batches(dataset, lengths, batch_size, *, shuffle, seed, length_fn, num_buckets=8):
    """:func:`make_dataset` with known ``lengths`` and no prefetch (the
    caller maps features afterwards and prefetches at the end of its own
    pipeline)."""
    return make_dataset(dataset, batch_size=batch_size, length=length_fn, shuffle=shuffle,
                        seed=seed, num_buckets=num_buckets, lengths=lengths, prefetch=False)

