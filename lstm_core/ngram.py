"""A smoothed n-gram language model over label ids, small enough to live in
a serving graph as one dense table: the phone bigram or trigram of speech
recognition, used to rescore a decoder's n-best list (``score + weight *
log P_lm``), as ASR toolkits rescore their lattices.

Ids are the decoder's classes: ``BOUNDARY`` (0, the CTC blank, never a
label) marks a sequence's start and end, so ``n`` classes give ``n ** order``
table entries (a trigram over 64 phones: 1 MB).

Counts are kept as plain JSON (``{"0 0 7": 3, ...}``, space-joined ids) of
the highest order; a lower order's counts are their sums, so one count table
serves every order up to it.
"""

from collections import Counter

import numpy as np

BOUNDARY = 0
#: The largest table :func:`log_prob_table` makes: 64 MB of float32.
MAX_ENTRIES = 1 << 24


def count_ngrams(sequences, order):
    """Counts of the ``order``-grams of ``sequences`` (lists of ids >= 1),
    each padded with ``order - 1`` boundaries before and one after."""
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    counts = Counter()
    for sequence in sequences:
        padded = [BOUNDARY] * (order - 1) + list(sequence) + [BOUNDARY]
        counts.update(" ".join(map(str, padded[i:i + order]))
                      for i in range(len(padded) - order + 1))
    return dict(counts)


def log_prob_table(counts, num_classes, order, smoothing):
    """``log P(w | context)`` as a float32 array of shape ``[num_classes] *
    order`` (the last axis is ``w``; the boundary as ``w`` ends the
    sequence), with add-``smoothing`` (Lidstone) estimates. ``counts`` are
    :func:`count_ngrams`'s of this order or higher."""
    if smoothing <= 0:
        raise ValueError(f"smoothing must be positive, got {smoothing}")
    if num_classes ** order > MAX_ENTRIES:
        raise ValueError(f"an order-{order} table over {num_classes} classes would have "
                         f"{num_classes ** order:,} entries, more than {MAX_ENTRIES:,}: use a "
                         "lower order")
    grams = np.zeros([num_classes] * order, np.float64)
    for key, count in counts.items():
        ids = tuple(int(i) for i in key.split())
        if len(ids) < order:
            raise ValueError(f"counts of order {len(ids)} cannot give a table of order {order}")
        if max(ids) >= num_classes:
            raise ValueError(f"n-gram {key!r} has an id past the {num_classes} classes")
        grams[ids[len(ids) - order:]] += count
    grams += smoothing
    return np.log(grams / grams.sum(axis=-1, keepdims=True)).astype(np.float32)


def sequence_log_probs(table, labels, lengths):
    """``log P_lm`` of each labelling, its end included: ``labels`` int
    ``[..., max_len]`` (padding past ``lengths`` is ignored), ``lengths``
    int ``[...]``. TensorFlow ops, for serving graphs."""
    import tensorflow as tf

    table = tf.convert_to_tensor(table)
    order = len(table.shape)
    max_len = tf.shape(labels)[-1]
    positions = tf.range(max_len + 1)  # the labels, then the end
    inside = positions < tf.cast(lengths, tf.int32)[..., None]
    ids = tf.where(inside[..., :-1], tf.cast(labels, tf.int32), BOUNDARY)
    ids = tf.concat([tf.fill(tf.concat([tf.shape(ids)[:-1], [order - 1]], 0), BOUNDARY), ids,
                     tf.fill(tf.concat([tf.shape(ids)[:-1], [1]], 0), BOUNDARY)], axis=-1)
    grams = tf.stack([ids[..., k:k + max_len + 1] for k in range(order)], axis=-1)
    log_probs = tf.gather_nd(table, grams)
    counted = positions <= tf.cast(lengths, tf.int32)[..., None]
    return tf.reduce_sum(tf.where(counted, log_probs, 0.0), axis=-1)


def rescore(labels, lengths, scores, table, weight):
    """The best of each n-best list by ``scores + weight * log P_lm``:
    ``labels`` ``[batch, n, max_len]``, ``lengths`` and ``scores`` ``[batch,
    n]`` (as :func:`lstm_core.ctc.ctc_beam_search_decode` returns them).
    Returns the chosen ``labels`` ``[batch, max_len]`` and ``lengths``."""
    import tensorflow as tf

    total = tf.cast(scores, tf.float32) + weight * sequence_log_probs(table, labels, lengths)
    best = tf.argmax(total, axis=1, output_type=tf.int32)
    return tf.gather(labels, best, batch_dims=1), tf.gather(lengths, best, batch_dims=1)
