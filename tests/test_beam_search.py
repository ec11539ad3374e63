"""Beam search against exhaustive enumeration and a plain Python beam search
on a tiny random model whose next-token distribution depends on the whole
prefix; greedy decoding, EOS, per-row lengths, XLA, ensembles, a decoder."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_core.beam_search import (beam_search, greedy_search, mean_log_probs,
                                   relative_max_lengths, tile_beams)
from lstm_core.decoder import AttentionDecoderCell

VOCAB, START, END = 4, 0, 1
MAX_LENGTHS = np.array([3, 2, 1, 0, 3])  # per row; one row may produce nothing


def random_model(seed, rows=5, longest=3, peak=1.0):
    """log p(next | prefix) for every prefix up to ``longest - 1`` tokens:
    ``[rows, prefixes, VOCAB]`` float32; prefix (t_1..t_n) has the code
    ``code(t_1..t_n-1) * VOCAB + t_n + 1``, the empty prefix 0."""
    prefixes = (VOCAB ** longest - 1) // (VOCAB - 1)
    logits = np.random.default_rng(seed).normal(scale=peak, size=(rows, prefixes, VOCAB))
    return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype("float32")


def code(prefix):
    value = 0
    for token in prefix:
        value = value * VOCAB + token + 1
    return value


def table_step(table):
    """The step function of a random model; its state is (row, prefix code),
    the code -1 before the first token."""
    table = tf.constant(table)
    last_code = table.shape[1] - 1

    def step(ids, state):
        rows, codes = state
        codes = tf.where(codes < 0, 0, tf.minimum(codes * VOCAB + ids + 1, last_code))
        return tf.gather_nd(table, tf.stack([rows, codes], axis=1)), (rows, codes)

    return step


def start_state(rows, beam_width):
    return tile_beams((tf.range(rows), tf.fill([rows], -1)), beam_width)


def penalty(length, alpha):
    return ((5 + length) / 6) ** alpha


def every_hypothesis(table, row, longest):
    """(tokens, log prob) of every hypothesis: ended by END or by the length."""
    done = []

    def grow(prefix, log_prob):
        if len(prefix) == longest or (prefix and prefix[-1] == END):
            done.append((prefix, log_prob))
            return
        for token, token_log_prob in enumerate(table[row, code(prefix)].astype(np.float64)):
            grow(prefix + (token,), log_prob + token_log_prob)

    grow((), 0.0)
    return done


def python_beam_search(table, row, longest, beam_width, alpha):
    """The same search, one hypothesis at a time: (tokens, log prob, finished)."""
    beams = [((), 0.0, longest == 0)]
    for _ in range(longest):
        if all(finished for *_, finished in beams):
            break
        candidates = []
        for prefix, log_prob, finished in beams:
            if finished:
                candidates.append((prefix, log_prob, True))
                continue
            for token, token_log_prob in enumerate(table[row, code(prefix)].astype(np.float64)):
                grown = prefix + (token,)
                candidates.append((grown, log_prob + token_log_prob,
                                   token == END or len(grown) == longest))
        candidates.sort(key=lambda c: -c[1] / penalty(len(c[0]), alpha))
        beams = candidates[:beam_width]
    return sorted(((p, lp) for p, lp, _ in beams), key=lambda c: -c[1] / penalty(len(c[0]), alpha))


def search(table, beam_width, alpha=0.0, max_lengths=MAX_LENGTHS, **kwargs):
    rows = len(max_lengths)
    result = beam_search(table_step(table), start_state(rows, beam_width), start_id=START,
                         end_id=END, max_lengths=max_lengths, beam_width=beam_width,
                         length_penalty=alpha, **kwargs)
    return [np.asarray(part) for part in result]


def assert_row_holds(result, row, want, alpha):
    """Beams of ``row`` equal the (tokens, log prob) list ``want``, best first;
    beams past it hold no hypothesis (-inf)."""
    ids, lengths, scores, log_probs = result
    for beam, (tokens, log_prob) in enumerate(want):
        n = lengths[row, beam]
        assert tuple(ids[row, beam, :n]) == tokens, (row, beam)
        assert (ids[row, beam, n:] == END).all()
        np.testing.assert_allclose(log_probs[row, beam], log_prob, atol=1e-5)
        np.testing.assert_allclose(scores[row, beam], log_prob / penalty(n, alpha), atol=1e-5)
    assert (scores[row, len(want):] == -np.inf).all()
    assert (lengths[row, len(want):] == 0).all() and (ids[row, len(want):] == END).all()


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
@pytest.mark.parametrize("seed", range(3))
def test_unpruned_search_finds_every_hypothesis(seed, alpha):
    """40 beams never prune a vocabulary of 4 over 3 steps (1 + 3 + 9 + 27
    hypotheses), so the beams are the exhaustive list, best first."""
    table = random_model(seed)
    result = search(table, beam_width=40, alpha=alpha)
    for row, longest in enumerate(MAX_LENGTHS):
        everything = every_hypothesis(table, row, longest)
        everything.sort(key=lambda h: -h[1] / penalty(len(h[0]), alpha))
        assert_row_holds(result, row, everything, alpha)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("beam_width", [1, 2, 3, 5])
def test_pruned_search_matches_python_search_and_exhaustive_best(beam_width, alpha):
    table = random_model(7, longest=4, peak=2.0)
    max_lengths = np.array([4, 3, 4, 1, 0])
    result = search(table, beam_width, alpha, max_lengths)
    found_best = 0
    for row, longest in enumerate(max_lengths):
        want = python_beam_search(table, row, longest, beam_width, alpha)
        assert_row_holds(result, row, want, alpha)
        best = max(every_hypothesis(table, row, longest),
                   key=lambda h: h[1] / penalty(len(h[0]), alpha))
        found_best += tuple(want[0][0]) == best[0]
    assert found_best >= 3  # a peaked model: the beams mostly find the best


def test_greedy_is_beam_width_one_and_the_argmax_path():
    table = random_model(3)
    rows = len(MAX_LENGTHS)
    ids, lengths, log_probs = (np.asarray(t) for t in greedy_search(
        table_step(table), start_state(rows, 1), start_id=START, end_id=END,
        max_lengths=MAX_LENGTHS))
    beam = search(table, beam_width=1)
    np.testing.assert_array_equal(ids, beam[0][:, 0])
    for row, longest in enumerate(MAX_LENGTHS):
        prefix, total = (), 0.0
        while len(prefix) < longest and (not prefix or prefix[-1] != END):
            log_p = table[row, code(prefix)]
            prefix, total = prefix + (int(np.argmax(log_p)),), total + log_p.max()
        assert lengths[row] == len(prefix) and tuple(ids[row, :len(prefix)]) == prefix
        np.testing.assert_allclose(log_probs[row], total, atol=1e-5)


def test_finished_hypotheses_are_kept_not_extended():
    """END is the likely first token and, were a finished hypothesis
    extended, 0 the near-certain next: the best must stay (END,)."""
    table = random_model(4, longest=3)
    table[:, code(())] = np.log([0.05, 0.8, 0.1, 0.05])
    table[:, code((END,))] = np.log([0.97, 0.01, 0.01, 0.01])
    ids, lengths, scores, _ = search(table, beam_width=3, max_lengths=np.array([3, 3]))
    assert (lengths[:, 0] == 1).all() and (ids[:, 0] == END).all()
    np.testing.assert_allclose(scores[:, 0], np.log(0.8), atol=1e-6)
    for row, beam in np.ndindex(lengths.shape):
        assert END not in ids[row, beam, :lengths[row, beam] - 1]  # END only last


def test_early_rows_and_output_cap():
    table = random_model(5)
    full = search(table, beam_width=3)
    # All rows shorter than the output: ids past the lengths are END.
    wide = search(table, beam_width=3, max_length=6)
    assert wide[0].shape == (len(MAX_LENGTHS), 3, 6)
    np.testing.assert_array_equal(wide[0][..., :3], full[0])
    assert (wide[0][..., 3:] == END).all()
    # A cap below the rows' maximum lengths cuts them.
    capped = search(table, beam_width=3, max_length=2)
    assert capped[0].shape[-1] == 2 and (capped[1] <= 2).all()
    np.testing.assert_array_equal(capped[0][1:4], full[0][1:4, :, :2])  # rows of length <= 2


def test_relative_max_lengths():
    np.testing.assert_array_equal(relative_max_lengths([0, 3, 10], scale=1.5, offset=2),
                                  [2, 7, 17])
    np.testing.assert_array_equal(relative_max_lengths([0, 4], scale=0.5, offset=-1), [0, 1])


def test_xla_matches_graph_and_eager():
    table = random_model(6)
    step = table_step(table)

    def run(max_lengths):
        return beam_search(step, start_state(len(MAX_LENGTHS), 4), start_id=START, end_id=END,
                           max_lengths=max_lengths, beam_width=4, length_penalty=0.6,
                           max_length=3)

    want = run(tf.constant(MAX_LENGTHS))
    for fn in (tf.function(run), tf.function(run, jit_compile=True)):
        for got, expected in zip(fn(tf.constant(MAX_LENGTHS)), want):
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_ensemble_of_steps_searches_the_mean_model():
    first, second = random_model(8), random_model(9)
    rows, width = len(MAX_LENGTHS), 40
    step = mean_log_probs([table_step(first), table_step(second)])
    state = (start_state(rows, width), start_state(rows, width))
    result = [np.asarray(t) for t in beam_search(
        step, state, start_id=START, end_id=END, max_lengths=MAX_LENGTHS, beam_width=width)]
    np.testing.assert_allclose(result[2], search((first + second) / 2, width)[2], atol=1e-5)


def test_bad_beam_width():
    with pytest.raises(ValueError, match="beam_width=0"):
        search(random_model(0), beam_width=0)


def test_attention_decoder_under_beam_search_and_xla():
    """A tiny random decoder: greedy search equals stepping it by hand with
    the argmax; beam search runs under XLA with an empty source row."""
    rng = np.random.default_rng(0)
    batch, src, vocab, features, width = 3, 4, 6, 5, 3
    memory = rng.normal(size=(batch, src, 4)).astype("float32")
    source_lengths = np.array([4, 2, 0])
    mask = np.arange(src) < source_lengths[:, None]
    embed = keras.layers.Embedding(vocab, features)
    cell = AttentionDecoderCell(8, num_layers=2, attention="additive",
                                cell_options=dict(cell_clip=2.0, num_proj=5))
    project = keras.layers.Dense(vocab)
    cell.build((None, features), memory.shape)
    embed.build((None,))
    project.build((None, 8))

    def search_fn(memory, mask, beam_width, **kwargs):
        prepared = cell.prepare_memory(tile_beams(memory, beam_width),
                                       tile_beams(mask, beam_width))
        state = tile_beams(cell.get_initial_state(batch), beam_width)

        def step(ids, state):
            outputs, _, state = cell(embed(ids), state, prepared)
            return tf.nn.log_softmax(project(outputs)), state

        lengths = relative_max_lengths(tf.reduce_sum(tf.cast(mask, tf.int32), 1), 1.0, 3)
        return beam_search(step, state, start_id=START, end_id=END, max_lengths=lengths,
                           beam_width=beam_width, **kwargs)

    greedy = search_fn(memory, mask, 1)
    prepared = cell.prepare_memory(memory, mask)
    state, ids = cell.get_initial_state(batch), tf.fill([batch], START)
    done = np.zeros(batch, bool)
    for t in range(7):
        outputs, _, state = cell(embed(ids), state, prepared)
        ids = tf.argmax(project(outputs), -1, output_type=tf.int32)
        expected = np.where(done, END, ids)
        np.testing.assert_array_equal(greedy.ids[:, 0, t], expected)
        done |= (expected == END) | (t + 1 >= source_lengths + 3)
    beams = search_fn(memory, mask, width, length_penalty=0.6)
    compiled = tf.function(lambda m, k: search_fn(m, k, width, length_penalty=0.6, max_length=7),
                           jit_compile=True)(memory, mask)
    for got, want in zip(compiled, beams):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert (np.asarray(beams.scores)[:, 0] > -math.inf).all()
    assert (np.asarray(beams.lengths) <= (source_lengths + 3)[:, None]).all()
