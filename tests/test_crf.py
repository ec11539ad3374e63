"""The CRF against brute-force enumeration of every tag sequence."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_core.crf import (CRF, allowed_transitions, crf_log_likelihood, crf_log_norm,
                           crf_sequence_score, viterbi_decode)

TAGS = ["O", "B-PER", "I-PER"]


def problem(seed, batch=4, steps=4, tags=3, boundary=True):
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.normal(size=shape).astype("float32")  # noqa: E731
    lengths = np.array([steps, 2, 1, 3][:batch])
    start, end = (f(tags), f(tags)) if boundary else (None, None)
    return f(batch, steps, tags), lengths, f(tags, tags), start, end


def brute_force(x, lengths, transitions, start, end):
    """log Z, best path and best score of each sequence, by enumeration."""
    start = np.zeros(x.shape[2]) if start is None else start
    end = np.zeros(x.shape[2]) if end is None else end
    results = []
    for row, length in enumerate(lengths):
        paths = list(itertools.product(range(x.shape[2]), repeat=int(length)))
        scores = np.array([
            start[p[0]] + end[p[-1]] + sum(x[row, t, p[t]] for t in range(length))
            + sum(transitions[p[t - 1], p[t]] for t in range(1, length)) for p in paths])
        results.append((np.log(np.exp(scores).sum()), paths, scores))
    return results


@pytest.mark.parametrize("seed, boundary", [(0, True), (1, False), (2, True)])
def test_log_norm_score_and_likelihood_match_enumeration(seed, boundary):
    x, lengths, transitions, start, end = problem(seed, boundary=boundary)
    tags = np.random.default_rng(seed).integers(0, 3, size=lengths.shape + (4,))
    expected = brute_force(x, lengths, transitions, start, end)
    log_z = crf_log_norm(x, lengths, transitions, start, end)
    score = crf_sequence_score(x, tags, lengths, transitions, start, end)
    likelihood = crf_log_likelihood(x, tags, lengths, transitions, start, end)
    for row, (want_log_z, paths, scores) in enumerate(expected):
        want_score = scores[paths.index(tuple(tags[row, :lengths[row]]))]
        np.testing.assert_allclose(log_z[row], want_log_z, atol=1e-5)
        np.testing.assert_allclose(score[row], want_score, atol=1e-5)
        np.testing.assert_allclose(likelihood[row], want_score - want_log_z, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_is_the_best_path(seed):
    x, lengths, transitions, start, end = problem(seed)
    path, best = (t.numpy() for t in viterbi_decode(x, lengths, transitions, start, end))
    for row, (_, paths, scores) in enumerate(brute_force(x, lengths, transitions, start, end)):
        assert tuple(path[row, :lengths[row]]) == paths[int(np.argmax(scores))]
        assert (path[row, lengths[row]:] == 0).all()
        np.testing.assert_allclose(best[row], scores.max(), atol=1e-5)


def test_padded_batch_equals_one_by_one():
    x, lengths, transitions, start, end = problem(3)
    path, _ = viterbi_decode(x, lengths, transitions, start, end)
    log_z = crf_log_norm(x, lengths, transitions, start, end)
    for row, length in enumerate(lengths):
        one = x[row:row + 1, :length]
        np.testing.assert_array_equal(
            viterbi_decode(one, [length], transitions, start, end)[0][0], path[row, :length])
        np.testing.assert_allclose(crf_log_norm(one, [length], transitions, start, end)[0],
                                   log_z[row], atol=1e-5)


def test_allowed_transitions_bio_and_iobes():
    allowed, first, last = allowed_transitions(TAGS, "BIO")
    np.testing.assert_array_equal(allowed, [[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(first, [1, 1, 0])
    np.testing.assert_array_equal(last, [1, 1, 1])
    tags = ["O", "B-X", "I-X", "E-X", "S-X"]
    allowed, first, last = allowed_transitions(tags, "iobes")
    np.testing.assert_array_equal(allowed, [
        [1, 1, 0, 0, 1],  # O -> O, B, S
        [0, 0, 1, 1, 0],  # B -> I, E
        [0, 0, 1, 1, 0],  # I -> I, E
        [1, 1, 0, 0, 1],  # E -> O, B, S
        [1, 1, 0, 0, 1],  # S -> O, B, S
    ])
    np.testing.assert_array_equal(first, [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(last, [1, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="unknown tag scheme 'bilou'"):
        allowed_transitions(tags, "bilou")


def test_constrained_decoding_returns_the_best_valid_path():
    x, lengths, transitions, start, end = problem(4)
    x[:, :, 2] += 3.0  # potentials favour I-PER everywhere, invalid after O
    layer = CRF(3, allowed=allowed_transitions(TAGS, "bio"))
    layer.set_weights([transitions, start, end])
    path = layer(x, lengths=lengths).numpy()
    allowed, first, last = allowed_transitions(TAGS, "bio")
    for row, (_, paths, scores) in enumerate(brute_force(x, lengths, transitions, start, end)):
        valid = [first[p[0]] and last[p[-1]] and all(allowed[a, b] for a, b in zip(p, p[1:]))
                 for p in paths]
        best = max((s, p) for s, p, ok in zip(scores, paths, valid) if ok)[1]
        assert tuple(path[row, :lengths[row]]) == best


def test_gradient_matches_finite_differences():
    x, lengths, transitions, start, end = problem(5)
    tags = np.zeros((4, 4), "int32")

    def loss(*args):
        return -tf.reduce_sum(crf_log_likelihood(args[0], tags, lengths, *args[1:]))

    values = [tf.constant(v) for v in (x, transitions, start, end)]
    with tf.GradientTape() as tape:
        tape.watch(values)
        total = loss(*values)
    grads = tape.gradient(total, values)
    eps = 1e-2  # the CRF computes in float32
    for which, (value, grad) in enumerate(zip(values, grads)):
        flat = value.numpy().ravel()
        for index in range(0, flat.size, 3):
            bumped = [v.numpy() for v in values]
            moved = []
            for sign in (1, -1):
                array = flat.copy()
                array[index] += sign * eps
                bumped[which] = array.reshape(value.shape)
                moved.append(loss(*bumped).numpy())
            numeric = (moved[0] - moved[1]) / (2 * eps)
            assert abs(numeric - np.ravel(grad)[index]) < 5e-3, (which, index)


def test_layer_trains_saves_and_reloads(tmp_path):
    class Tagger(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(3)
            self.crf = CRF(3, allowed=allowed_transitions(TAGS, "bio"))

        def call(self, x):
            return self.dense(x)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return -tf.reduce_mean(self.crf.log_likelihood(y_pred, y))

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(64, 5)).astype("int32")  # O and B-PER only
    x = np.eye(3, dtype="float32")[y] + rng.normal(scale=0.3, size=(64, 5, 3)).astype("float32")
    model = Tagger()
    model.compile(keras.optimizers.Adam(0.05), jit_compile=True)
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]
    decoded = model.crf(model(x)).numpy()
    assert (decoded == y).mean() > 0.9
    layer = CRF.from_config(model.crf.get_config())
    assert layer.get_config() == model.crf.get_config()


def test_layer_in_a_saved_functional_model(tmp_path):
    inputs = keras.Input((None, 3))
    crf = CRF(3)
    model = keras.Model(inputs, crf(keras.layers.Dense(3)(inputs)))
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    model.save(tmp_path / "crf.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "crf.keras")(x), model(x))


def test_xla_shapes_and_mixed_precision():
    x, lengths, transitions, start, end = problem(6)
    decode = tf.function(lambda x, n: viterbi_decode(x, n, transitions, start, end)[0],
                         jit_compile=True)
    np.testing.assert_array_equal(decode(x, lengths), viterbi_decode(x, lengths, transitions, start, end)[0])
    assert decode(x[:2, :1], np.array([1, 0])).shape == (2, 1)  # one-token batch
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = CRF(3)
        out = layer(tf.constant(x, tf.float16), lengths=lengths)
        assert out.dtype == tf.int32
        assert layer.log_likelihood(tf.constant(x, tf.float16), np.zeros((4, 4), "int32"),
                                    lengths=lengths).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_num_tags():
    with pytest.raises(ValueError, match="num_tags=0"):
        CRF(0)
