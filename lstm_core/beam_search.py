r"""Batched beam search and greedy decoding inside the graph: one
``tf.while_loop`` over the output positions, fixed shapes, no Python per token.

A model is given as a step function::

    step(ids, state) -> (log_probs, state)

``ids`` ``[batch * beam]`` int32 are the previous tokens (the start id at
first), ``log_probs`` ``[batch * beam, vocab]`` the next token's log
probabilities, and ``state`` any nest of tensors whose leading dimension is
``batch * beam``, ordered ``row 0 beam 0, row 0 beam 1, ...``
(:func:`tile_beams` makes it from a ``[batch, ...]`` state). Anything the
steps only read, such as an encoder's outputs, is tiled once and captured by
the step function instead of carried in the state (the state is reordered
at every step as beams are pruned). An ensemble is a step function too:
:func:`mean_log_probs` averages several models' log probabilities and keeps
a tuple of their states.

The search keeps ``beam`` hypotheses per row. A finished hypothesis (it
produced ``end_id`` or reached its row's maximum length) is kept as it is,
not extended, and competes with the growing ones; hypotheses are ranked by
their log probability divided by the GNMT length penalty (Wu et al. 2016)::

    lp(n) = ((5 + n) / 6) ** alpha        (alpha = 0: no penalty)

where ``n`` counts the hypothesis's tokens, the end id included. The search
stops when every hypothesis of every row has finished.
"""

from typing import NamedTuple

import tensorflow as tf

from lstm_core.cells import check_positive_int


class Hypotheses(NamedTuple):
    """The result of a search, best first in each row.

    ``ids`` ``[batch, beam, max_length]`` int32: the tokens, the end id
    included where one was produced, ``end_id`` after the length.
    ``lengths`` ``[batch, beam]`` int32. ``scores`` ``[batch, beam]`` float32:
    ``log_probs / lp(lengths)``, what the beams are ranked by.
    ``log_probs`` ``[batch, beam]`` float32: the sum of the tokens' log
    probabilities. A beam scored ``-inf`` holds no hypothesis (a row with
    fewer possible sequences than beams): length 0, all ``end_id``.
    """

    ids: tf.Tensor
    lengths: tf.Tensor
    scores: tf.Tensor
    log_probs: tf.Tensor


def tile_beams(nest, beam_width):
    """Every ``[batch, ...]`` tensor of ``nest`` as ``[batch * beam_width,
    ...]``, each row repeated ``beam_width`` times in a row."""
    return tf.nest.map_structure(lambda x: tf.repeat(x, beam_width, axis=0), nest)


def gnmt_length_penalty(lengths, alpha):
    """``((5 + lengths) / 6) ** alpha``, float32."""
    return ((5.0 + tf.cast(lengths, tf.float32)) / 6.0) ** alpha


def relative_max_lengths(source_lengths, scale=2.0, offset=10):
    """Per-row maximum output lengths ``ceil(scale * source_length +
    offset)``, int32 (at least 0)."""
    lengths = tf.math.ceil(scale * tf.cast(source_lengths, tf.float32) + offset)
    return tf.maximum(tf.cast(lengths, tf.int32), 0)


def mean_log_probs(steps):
    """A step function averaging the log probabilities of several models'
    step functions, for an ensemble; its state is the tuple of their states
    (``tuple(states)`` to start). The mean of log probabilities is the log of
    a geometric mean of the distributions, not renormalized: enough to rank."""
    steps = tuple(steps)

    def step(ids, states):
        results = [model_step(ids, state) for model_step, state in zip(steps, states)]
        log_probs = tf.add_n([tf.cast(r[0], tf.float32) for r in results]) / len(results)
        return log_probs, tuple(r[1] for r in results)

    return step


def beam_search(step, state, *, start_id, end_id, max_lengths, beam_width, length_penalty=0.0,
                max_length=None):
    """Beam search for a batch of rows; see the module docstring.

    Args:
        step: ``step(ids, state) -> (log_probs, state)``.
        state: the initial state, a nest of ``[batch * beam_width, ...]`` tensors.
        start_id: the first input token: an int or a ``[batch]`` tensor.
        end_id: the end-of-sentence token.
        max_lengths: ``[batch]`` ints, the most tokens (end id included) of
            each row's hypotheses (see :func:`relative_max_lengths`); 0
            gives an empty hypothesis.
        beam_width: hypotheses kept per row; 1 is greedy decoding.
        length_penalty: ``alpha`` of the GNMT length penalty.
        max_length: the size of the output's last axis, a Python int for
            XLA (which needs static shapes); rows are cut to it. None = the
            largest of ``max_lengths``.

    Returns:
        :class:`Hypotheses` with ``beam_width`` hypotheses per row, best first.
    """
    beams = check_positive_int("beam_width", beam_width)
    alpha = float(length_penalty)
    max_lengths = tf.maximum(tf.cast(max_lengths, tf.int32), 0)
    batch = tf.shape(max_lengths)[0]
    if max_length is None:
        max_length = tf.reduce_max(tf.concat([max_lengths, [0]], axis=0))
    max_lengths = tf.minimum(max_lengths, max_length)
    flat = batch * beams
    # Only the first beam of a row is alive at the start: the others would
    # repeat its hypotheses.
    first = tf.concat([[0.0], tf.fill([beams - 1], -float("inf"))], axis=0)
    start = tf.repeat(tf.broadcast_to(tf.cast(start_id, tf.int32), [batch]), beams)
    loop_vars = (
        tf.constant(0),
        tf.tile(first[None], [batch, 1]),  # log probs
        tf.broadcast_to(max_lengths[:, None] <= 0, [batch, beams]),  # finished
        tf.zeros([batch, beams], tf.int32),  # lengths
        tf.fill([batch, beams, max_length], tf.cast(end_id, tf.int32)),  # ids
        start,
        state,
    )

    def not_done(t, log_probs, finished, *_):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def advance(t, log_probs, finished, lengths, ids, last, state):
        step_log_probs, state = step(last, state)
        vocab = tf.shape(step_log_probs)[-1]
        step_log_probs = tf.reshape(tf.cast(step_log_probs, tf.float32), [batch, beams, vocab])
        # A finished hypothesis has one continuation: itself, padded with the
        # end id at no cost and no length.
        keep = tf.where(tf.range(vocab) == end_id, 0.0, -float("inf"))
        step_log_probs = tf.where(finished[..., None], keep, step_log_probs)
        totals = tf.reshape(log_probs[..., None] + step_log_probs, [batch, beams * vocab])
        grown = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        penalties = tf.repeat(gnmt_length_penalty(grown, alpha), vocab, axis=1)
        _, chosen = tf.math.top_k(totals / penalties, k=beams)
        parents, tokens = chosen // vocab, chosen % vocab
        log_probs = tf.gather(totals, chosen, batch_dims=1)
        lengths = tf.gather(grown, parents, batch_dims=1)
        ids = tf.gather(ids, parents, batch_dims=1)
        ids = tf.where(tf.range(max_length) == t, tokens[..., None], ids)
        finished = (tf.gather(finished, parents, batch_dims=1) | (tokens == end_id)
                    | (lengths >= max_lengths[:, None]) | (log_probs == -float("inf")))
        rows = tf.reshape(parents + tf.range(batch)[:, None] * beams, [flat])
        state = tf.nest.map_structure(lambda x: tf.gather(x, rows), state)
        return t + 1, log_probs, finished, lengths, ids, tf.reshape(tokens, [flat]), state

    _, log_probs, _, lengths, ids, _, _ = tf.while_loop(not_done, advance, loop_vars,
                                                        maximum_iterations=max_length)
    empty = log_probs == -float("inf")  # a beam that holds no hypothesis
    ids = tf.where(empty[..., None], tf.cast(end_id, tf.int32), ids)
    lengths = tf.where(empty, 0, lengths)
    scores = log_probs / gnmt_length_penalty(lengths, alpha)
    scores, order = tf.math.top_k(scores, k=beams)
    return Hypotheses(ids=tf.gather(ids, order, batch_dims=1),
                      lengths=tf.gather(lengths, order, batch_dims=1), scores=scores,
                      log_probs=tf.gather(log_probs, order, batch_dims=1))


def greedy_search(step, state, *, start_id, end_id, max_lengths, max_length=None):
    """Greedy decoding: the most probable token at every step, as
    :func:`beam_search` with one beam (``state`` is ``[batch, ...]``).
    Returns ``(ids [batch, max_length], lengths [batch], log_probs [batch])``."""
    best = beam_search(step, state, start_id=start_id, end_id=end_id, max_lengths=max_lengths,
                       beam_width=1, max_length=max_length)
    return best.ids[:, 0], best.lengths[:, 0], best.log_probs[:, 0]
