"""The CRF against brute-force enumeration of every tag sequence."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_core.crf import (CRF, allowed_transitions, crf_log_likelihood, crf_log_norm,
                           crf_sequence_score, viterbi_decode)

BIO = ["O", "B-PER", "I-PER"]
LENGTHS = np.array([4, 2, 1, 0, 3])  # includes a one-token and an empty sequence


def problem(seed, tags=3, boundary=True, lengths=LENGTHS):
    """Random potentials [B, T, K], lengths, transitions, start, end, and gold
    tags padded with -1 (the CRF must ignore padding)."""
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.normal(size=shape).astype("float32")  # noqa: E731
    steps = int(lengths.max())
    start, end = (f(tags), f(tags)) if boundary else (None, None)
    gold = rng.integers(0, tags, size=(len(lengths), steps))
    gold = np.where(np.arange(steps) < lengths[:, None], gold, -1).astype("int32")
    return f(len(lengths), steps, tags), lengths, f(tags, tags), start, end, gold


def features(path, steps, k):
    """Indicator counts of a path: the gradient of its score w.r.t.
    (potentials [T, K], transitions, start, end)."""
    x, a, s, e = np.zeros((steps, k)), np.zeros((k, k)), np.zeros(k), np.zeros(k)
    for t, tag in enumerate(path):
        x[t, tag] += 1
        if t:
            a[path[t - 1], tag] += 1
    if path:
        s[path[0]] += 1
        e[path[-1]] += 1
    return x, a, s, e


def enumerate_paths(x, length, transitions, start, end):
    """Every path of one sequence with its score (float64; the empty path scores 0)."""
    k = x.shape[-1]
    start = np.zeros(k) if start is None else start
    end = np.zeros(k) if end is None else end
    paths = list(itertools.product(range(k), repeat=int(length)))
    scores = np.array([sum((w * f).sum() for w, f in zip(
        (x, transitions, start, end), features(p, x.shape[0], k))) for p in paths])
    return paths, scores


def log_z(scores):
    return np.log(np.exp(scores - scores.max()).sum()) + scores.max()


@pytest.mark.parametrize("seed, boundary", [(0, True), (1, False), (2, True)])
def test_log_norm_score_and_likelihood_match_enumeration(seed, boundary):
    x, lengths, transitions, start, end, gold = problem(seed, boundary=boundary)
    norm = crf_log_norm(x, lengths, transitions, start, end).numpy()
    score = crf_sequence_score(x, gold, lengths, transitions, start, end).numpy()
    likelihood = crf_log_likelihood(x, gold, lengths, transitions, start, end).numpy()
    for row, length in enumerate(lengths):
        paths, scores = enumerate_paths(x[row], length, transitions, start, end)
        want = scores[paths.index(tuple(gold[row, :length]))]
        np.testing.assert_allclose(norm[row], log_z(scores), atol=1e-5)
        np.testing.assert_allclose(score[row], want, atol=1e-5)
        np.testing.assert_allclose(likelihood[row], want - log_z(scores), atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_is_the_best_path(seed):
    x, lengths, transitions, start, end, _ = problem(seed, boundary=seed % 2 == 0)
    path, best = (t.numpy() for t in viterbi_decode(x, lengths, transitions, start, end))
    assert path.dtype == np.int32 and best.dtype == np.float32
    for row, length in enumerate(lengths):
        paths, scores = enumerate_paths(x[row], length, transitions, start, end)
        assert tuple(path[row, :length]) == paths[int(np.argmax(scores))]
        assert (path[row, length:] == 0).all()
        np.testing.assert_allclose(best[row], scores.max(), atol=1e-5)


def test_padded_batch_equals_one_by_one():
    x, lengths, transitions, start, end, gold = problem(3)
    args = (transitions, start, end)
    path, best = viterbi_decode(x, lengths, *args)
    likelihood = crf_log_likelihood(x, gold, lengths, *args)
    for row, n in enumerate(lengths):
        one, tags = x[row:row + 1, :n], gold[row:row + 1, :n]
        one_path, one_best = viterbi_decode(one, [n], *args)
        np.testing.assert_array_equal(one_path[0], path[row, :n])
        np.testing.assert_allclose(one_best[0], best[row], atol=1e-6)
        np.testing.assert_allclose(crf_log_likelihood(one, tags, [n], *args)[0],
                                   likelihood[row], atol=1e-6)


def test_empty_time_dimension():
    x, transitions = np.zeros((2, 0, 3), "float32"), np.zeros((3, 3), "float32")
    path, best = viterbi_decode(x, [0, 0], transitions)
    assert path.shape == (2, 0)
    np.testing.assert_array_equal(best, [0, 0])
    np.testing.assert_array_equal(
        crf_log_likelihood(x, np.zeros((2, 0), "int32"), [0, 0], transitions), [0, 0])


def test_allowed_transitions():
    allowed, first, last = allowed_transitions(BIO, "BIO")
    assert allowed.dtype == bool
    np.testing.assert_array_equal(allowed, [[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(first, [1, 1, 0])
    np.testing.assert_array_equal(last, [1, 1, 1])
    two = ["O", "B-A", "I-A", "B-B", "I-B"]
    np.testing.assert_array_equal(allowed_transitions(two, "iob2")[0], [
        [1, 1, 0, 1, 0],
        [1, 1, 1, 1, 0],  # B-A -> I-A, not I-B
        [1, 1, 1, 1, 0],
        [1, 1, 0, 1, 1],
        [1, 1, 0, 1, 1]])
    allowed, first, last = allowed_transitions(two, "iob1")
    np.testing.assert_array_equal(allowed[:, 1], [0, 1, 1, 0, 0])  # B-A only after an A
    assert allowed[:, [0, 2, 4]].all() and last.all()
    np.testing.assert_array_equal(first, [1, 0, 1, 0, 1])
    iobes = ["O", "B-X", "I-X", "E-X", "S-X"]
    allowed, first, last = allowed_transitions(iobes, "IOBES")
    np.testing.assert_array_equal(allowed, [
        [1, 1, 0, 0, 1],  # O -> O, B, S
        [0, 0, 1, 1, 0],  # B -> I, E
        [0, 0, 1, 1, 0],  # I -> I, E
        [1, 1, 0, 0, 1],  # E -> O, B, S
        [1, 1, 0, 0, 1]])  # S -> O, B, S
    np.testing.assert_array_equal(first, [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(last, [1, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="unknown tag scheme 'bilou'"):
        allowed_transitions(iobes, "bilou")
    with pytest.raises(ValueError, match="bad tag 'E-X'"):
        allowed_transitions(iobes, "bio")


@pytest.mark.parametrize("scheme, tags, favoured", [
    ("bio", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], 4),
    ("iobes", ["O", "B-X", "I-X", "E-X", "S-X"], 2)])
def test_constrained_decoding_returns_the_best_valid_path(scheme, tags, favoured):
    allowed, first, last = allowed_transitions(tags, scheme)
    layer = CRF(len(tags), allowed=(allowed, first, last))
    for seed in range(3):
        x, lengths, transitions, start, end, _ = problem(seed, tags=len(tags))
        x[:, :, favoured] += 4.0  # strongly favour a tag that cannot start an entity
        layer.set_weights([transitions, start, end])
        path = layer(x, lengths=lengths).numpy()
        for row, n in enumerate(lengths):
            paths, scores = enumerate_paths(x[row], n, transitions, start, end)
            valid = [not p or (first[p[0]] and last[p[-1]] and all(allowed[a, b] for a, b in
                                                                     zip(p, p[1:])))
                     for p in paths]
            best = max((s, p) for s, p, ok in zip(scores, paths, valid) if ok)[1]
            assert tuple(path[row, :n]) == best


def test_gradient_is_expected_minus_observed_features():
    x, lengths, transitions, start, end, gold = problem(5)
    values = [tf.constant(v) for v in (x, transitions, start, end)]
    with tf.GradientTape() as tape:
        tape.watch(values)
        loss = -tf.reduce_mean(crf_log_likelihood(values[0], gold, lengths, *values[1:]))
    grads = [g.numpy() for g in tape.gradient(loss, values)]
    # d(-log p(y))/dw = E_p[features] - features(y), averaged over the batch.
    want = [np.zeros(v.shape) for v in values]
    for row, n in enumerate(lengths):
        paths, scores = enumerate_paths(x[row], n, transitions, start, end)
        probs = np.exp(scores - log_z(scores))
        expected = [sum(p * f for p, f in zip(probs, fs))
                    for fs in zip(*(features(path, x.shape[1], 3) for path in paths))]
        observed = features(tuple(gold[row, :n]), x.shape[1], 3)
        delta = [(e - o) / len(lengths) for e, o in zip(expected, observed)]
        want[0][row] = delta[0]  # potentials are per sequence, the rest shared
        for w, d in zip(want[1:], delta[1:]):
            w += d
    for got, expected in zip(grads, want):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, atol=1e-4)


@keras.saving.register_keras_serializable(package="test_crf")
class CRFTagger(keras.Model):
    """A functional model giving potentials and their CRF decoding, trained on
    the CRF's negative log-likelihood."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return -tf.reduce_mean(self.get_layer("crf").log_likelihood(y_pred["potentials"], y))


def test_functional_model_trains_saves_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)  # the Dense and CRF initial weights too, not only the data
    rng = np.random.default_rng(0)
    allowed, first, last = allowed_transitions(BIO, "bio")
    y = np.zeros((64, 5), "int32")  # random valid BIO sequences
    for row in y:
        row[0] = rng.choice(np.flatnonzero(first))
        for t in range(1, 5):
            row[t] = rng.choice(np.flatnonzero(allowed[row[t - 1]]))
    x = np.eye(3, dtype="float32")[y] + rng.normal(scale=0.3, size=(64, 5, 3)).astype("float32")

    inputs = keras.Input((None, 3))
    potentials = keras.layers.Dense(3, name="potentials")(inputs)
    tags = CRF(3, allowed=(allowed, first, last), name="crf")(potentials)
    model = CRFTagger(inputs, {"potentials": potentials, "tags": tags})
    model.compile(keras.optimizers.Adam(0.05), jit_compile=True)
    history = model.fit(x, y, epochs=12, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]
    decoded = model(x)["tags"].numpy()
    assert (decoded == y).mean() > 0.9

    model.save(tmp_path / "tagger.keras")
    loaded = keras.models.load_model(tmp_path / "tagger.keras")
    assert isinstance(loaded, CRFTagger)
    assert loaded.get_layer("crf").get_config() == model.get_layer("crf").get_config()
    np.testing.assert_array_equal(loaded(x)["tags"], decoded)


def test_keras_mask_sets_the_lengths():
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(6, 4, mask_zero=True)(inputs)
    potentials = keras.layers.Dense(3)(embedded)
    crf = CRF(3)
    model = keras.Model(inputs, [potentials, crf(potentials)])
    ids = np.array([[1, 2, 3, 4], [5, 1, 0, 0], [2, 0, 0, 0]])
    scores, tags = model(ids)
    lengths = np.array([4, 2, 1])
    np.testing.assert_array_equal(tags, crf(scores, lengths=lengths))
    np.testing.assert_array_equal(tags, viterbi_decode(scores, lengths, *crf.scores())[0])


def test_xla_with_two_shapes():
    x, lengths, transitions, start, end, gold = problem(6)
    args = (transitions, start, end)

    def run(x, lengths, gold):
        with tf.GradientTape() as tape:
            tape.watch(x)
            likelihood = crf_log_likelihood(x, gold, lengths, *args)
        return (*viterbi_decode(x, lengths, *args), likelihood, tape.gradient(likelihood, x))

    compiled = tf.function(run, jit_compile=True)
    for batch in [(x, lengths, gold), (x[1:3, :1], np.array([1, 1]), gold[1:3, :1])]:
        batch = [tf.constant(v) for v in batch]
        for got, want in zip(compiled(*batch), run(*batch)):
            np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_computes_in_float32(mixed_float16):
    inputs = keras.Input((None, 3))
    potentials = keras.layers.Dense(3)(inputs)
    assert potentials.dtype == "float16"
    crf = CRF(3)
    assert crf.compute_dtype == "float32" and crf.transitions.dtype == "float32"
    model = keras.Model(inputs, [potentials, crf(potentials)])
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    scores, tags = model(x)
    assert tags.dtype == tf.int32
    gold = np.zeros((2, 4), "int32")
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(crf.log_likelihood(model(x)[0], gold))
    assert loss.dtype == tf.float32
    assert all(np.isfinite(g).all() for g in tape.gradient(loss, model.trainable_variables))
    # float32 potentials reach the CRF unrounded: 1000 and 1000.1 are one float16.
    crf.set_weights([np.zeros((3, 3)), np.zeros(3), np.zeros(3)])
    np.testing.assert_array_equal(crf(np.array([[[1000.0, 1000.1, 0.0]]], "float32")), [[1]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_tags=0"):
        CRF(0)
    with pytest.raises(ValueError, match="allowed must have shapes"):
        CRF(4, allowed=allowed_transitions(BIO, "bio"))
