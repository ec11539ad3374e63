"""CTC loss and decoders against brute-force enumeration of every frame
alignment on tiny inputs, and greedy decoding against a NumPy reference."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_core.ctc import (
    ctc_alignment,
    ctc_beam_search_decode,
    ctc_ensemble_beam_search,
    ctc_greedy_decode,
    ctc_log_likelihoods,
    ctc_loss,
)

CLASSES = 3


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def collapse(path, blank):
    """A frame path's labelling: repeats merged, then blanks dropped."""
    merged = [c for t, c in enumerate(path) if t == 0 or c != path[t - 1]]
    return tuple(c for c in merged if c != blank)


def labelling_log_probs(logits, length, blank):
    """{labelling: log p(labelling)}, summing over all CLASSES**length paths."""
    logp = log_softmax(logits[:length].astype("float64"))
    totals = {}
    for path in itertools.product(range(logp.shape[-1]), repeat=int(length)):
        p = np.exp(sum(logp[t, c] for t, c in enumerate(path)))
        key = collapse(path, blank)
        totals[key] = totals.get(key, 0.0) + p
    return {k: np.log(v) for k, v in totals.items()}


def random_logits(seed, batch, steps, classes=CLASSES, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(batch, steps, classes))).astype("float32")


def as_lists(labels, lengths):
    labels, lengths = np.asarray(labels), np.asarray(lengths)
    assert np.all(labels[np.arange(labels.shape[-1]) >= lengths[..., None]] == -1)
    return [tuple(row[:n]) for row, n in zip(labels.reshape(-1, labels.shape[-1]),
                                              lengths.reshape(-1))]


@pytest.mark.parametrize("blank", [0, 2, -1, 1])
def test_loss_matches_brute_force(blank):
    logit_lengths = np.array([4, 4, 3, 2, 1, 3])
    logits = random_logits(blank + 10, len(logit_lengths), 4)
    real = [c for c in range(CLASSES) if c != blank % CLASSES]
    # Repeats, single labels and an empty labelling; -1 pads.
    targets = [(real[0], real[1]), (real[0], real[0]), (real[1],), (real[0], real[1]),
               (real[1],), ()]
    labels = np.full((len(targets), 2), -1, "int32")
    for k, t in enumerate(targets):
        labels[k, :len(t)] = t
    loss = ctc_loss(labels, logits, [len(t) for t in targets], logit_lengths, blank=blank)
    expected = [-labelling_log_probs(x, n, blank % CLASSES)[t]
                for x, n, t in zip(logits, logit_lengths, targets)]
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_loss_ignores_padding_frames_and_label_padding():
    logits = random_logits(1, 2, 4)
    lengths = np.array([2, 3])
    loss = ctc_loss([[1, 2, 0], [2, -1, -1]], logits, [2, 1], lengths)
    noisy = logits.copy()
    noisy[0, 2:] = 100.0  # garbage past the lengths
    noisy[1, 3:] = -100.0
    np.testing.assert_allclose(
        ctc_loss([[1, 2, 2], [2, 1, 1]], noisy, [2, 1], lengths), loss, rtol=1e-6)
    x = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(ctc_loss([[1, 2], [2, -1]], x, [2, 1], lengths))
    grad = tape.gradient(total, x).numpy()
    assert np.all(np.isfinite(grad))
    assert np.all(grad[0, 2:] == 0) and np.all(grad[1, 3:] == 0)
    # d(-log p)/d logits sums to 0 over classes on each real frame (softmax).
    np.testing.assert_allclose(grad.sum(-1), 0, atol=1e-5)


def test_loss_in_tf_function_xla_and_mixed_precision():
    logits = random_logits(2, 3, 4)
    args = ([[1, 2], [2, 2], [1, 0]], [2, 2, 1], [4, 4, 3])
    eager = ctc_loss(args[0], logits, args[1], args[2]).numpy()
    spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None, CLASSES]),
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)]
    for jit in (False, True):
        fn = tf.function(lambda y, x, ny, nx: ctc_loss(y, x, ny, nx), input_signature=spec,
                         jit_compile=jit)
        np.testing.assert_allclose(fn(args[0], logits, args[1], args[2]), eager, rtol=1e-5)
    half = ctc_loss(args[0], tf.constant(logits, tf.float16), args[1], args[2])
    assert half.dtype == tf.float32
    np.testing.assert_allclose(half, eager, rtol=1e-2)


def test_loss_from_a_mixed_precision_layer():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        dense = keras.layers.Dense(CLASSES)
        features = random_logits(3, 2, 4, classes=5)
        out = dense(features)
        assert out.dtype == tf.float16
        loss = ctc_loss([[1, 2], [2, 0]], out, [2, 1], [4, 3])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert loss.dtype == tf.float32 and np.all(np.isfinite(loss))


def greedy_reference(logits, lengths, blank):
    return [collapse(tuple(np.argmax(x[:n], -1)), blank) for x, n in zip(logits, lengths)]


@pytest.mark.parametrize("blank", [0, 4, 2])
def test_greedy_decode_matches_numpy(blank):
    lengths = np.array([7, 5, 1, 0, 3, 7])
    logits = random_logits(blank, len(lengths), 7, classes=5)
    labels, decoded_lengths = ctc_greedy_decode(logits, lengths, blank=blank)
    assert labels.dtype == tf.int32 and decoded_lengths.dtype == tf.int32
    assert as_lists(labels, decoded_lengths) == greedy_reference(logits, lengths, blank)
    assert labels.shape[1] == max(decoded_lengths.numpy())  # padded to the longest only


def test_decoders_in_tf_function_with_dynamic_shapes():
    spec = [tf.TensorSpec([None, None, 5]), tf.TensorSpec([None], tf.int32)]
    greedy = tf.function(ctc_greedy_decode, input_signature=spec)
    beam = tf.function(lambda x, n: ctc_beam_search_decode(x, n, beam_width=4, top_paths=2),
                       input_signature=spec)
    align = tf.function(ctc_alignment, input_signature=spec)
    for steps in (3, 6):
        logits, lengths = random_logits(steps, 2, steps, classes=5), np.array([steps, 2])
        for fn, eager in ((greedy, ctc_greedy_decode(logits, lengths)),
                          (beam, ctc_beam_search_decode(logits, lengths, 4, 2)),
                          (align, ctc_alignment(logits, lengths))):
            for got, want in zip(fn(logits, lengths), eager):
                np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("blank", [0, 2])
def test_beam_search_finds_the_most_probable_labellings(blank):
    lengths = np.array([4, 3, 4, 2])
    logits = random_logits(20 + blank, len(lengths), 4)
    top = 3
    labels, decoded_lengths, scores = ctc_beam_search_decode(
        logits, lengths, beam_width=64, top_paths=top, blank=blank)
    assert labels.shape[:2] == (len(lengths), top) and scores.shape == (len(lengths), top)
    found = as_lists(labels, decoded_lengths)
    for k, (x, n) in enumerate(zip(logits, lengths)):
        exact = sorted(labelling_log_probs(x, n, blank).items(), key=lambda kv: -kv[1])[:top]
        assert found[k * top:(k + 1) * top] == [labelling for labelling, _ in exact]
        np.testing.assert_allclose(scores[k], [lp for _, lp in exact], rtol=1e-4, atol=1e-4)


def test_n_best_lists_longer_than_a_short_row_has_labellings():
    # TensorFlow's decoder alone fails the whole batch here: a row of no
    # frames has one labelling, a row of one frame three.
    lengths = np.array([4, 0, 1])
    logits = random_logits(50, len(lengths), 4)
    labels, found, scores = ctc_beam_search_decode(logits, lengths, 16, 16)
    found = as_lists(labels, found)
    for k, (x, n) in enumerate(zip(logits, lengths)):
        exact = sorted(labelling_log_probs(x, n, 0).items(), key=lambda kv: -kv[1])[:16]
        real = len(exact)
        assert found[16 * k:16 * k + real] == [labelling for labelling, _ in exact]
        np.testing.assert_allclose(scores[k, :real], [lp for _, lp in exact], atol=1e-4)
        assert np.all(scores[k, real:] < -1000)  # the fillers: never a real choice


def test_beam_width_one_agrees_with_greedy_on_peaked_outputs():
    # With one class dominating every frame the best path carries nearly all
    # the probability, so a 1-wide beam and best-path decoding agree (they can
    # differ in general: the beam sums alignments, greedy takes one path).
    lengths = np.array([8, 6, 3, 8])
    logits = random_logits(5, len(lengths), 8, classes=6, scale=12.0)
    for blank in (0, 5):
        greedy = as_lists(*ctc_greedy_decode(logits, lengths, blank=blank))
        labels, beam_lengths, _ = ctc_beam_search_decode(logits, lengths, 1, blank=blank)
        assert as_lists(labels[:, 0], beam_lengths[:, 0]) == greedy


def test_log_likelihoods_of_n_best_lists_match_brute_force():
    lengths = np.array([4, 2, 3])
    logits = random_logits(31, len(lengths), 4)
    candidates = [[(1,), (2, 1), ()], [(1, 1), (2,), (1,)], [(2, 2, 1), (1, 2), (2,)]]
    width = max(len(c) for row in candidates for c in row)
    labels = np.full((3, 3, width), -1, "int32")
    for b, row in enumerate(candidates):
        for k, labelling in enumerate(row):
            labels[b, k, :len(labelling)] = labelling
    label_lengths = np.array([[len(c) for c in row] for row in candidates], "int32")
    got = ctc_log_likelihoods(labels, label_lengths, logits, lengths, blank=0).numpy()
    for b, row in enumerate(candidates):
        exact = labelling_log_probs(logits[b], lengths[b], blank=0)
        for k, labelling in enumerate(row):
            if labelling in exact:
                np.testing.assert_allclose(got[b, k], exact[labelling], rtol=1e-4, atol=1e-4)
            else:  # (1, 1) needs a blank between: it cannot fit in 2 frames
                assert got[b, k] == -np.inf
    # every labelling empty: still a [batch, n] answer
    empty = ctc_log_likelihoods(np.zeros((3, 2, 0), "int32"), np.zeros((3, 2), "int32"),
                                logits, lengths)
    np.testing.assert_allclose(empty.numpy()[:, 0], [labelling_log_probs(x, n, 0)[()]
                                                     for x, n in zip(logits, lengths)], rtol=1e-4)


@pytest.mark.parametrize("blank", [0, 2])
def test_ensemble_beam_search_finds_the_best_labelling_of_the_models_together(blank):
    lengths = np.array([4, 3, 4, 2, 4, 3])
    models = [random_logits(seed, len(lengths), 4, scale=2.0) for seed in (40, 41)]
    # the second model subsamples less: its frames are longer in steps, padded apart
    models[1] = np.concatenate([models[1], random_logits(42, len(lengths), 2)], axis=1)
    steps = [lengths, lengths + 2]
    labels, found_lengths, scores = ctc_ensemble_beam_search(
        [(tf.constant(x), tf.constant(n)) for x, n in zip(models, steps)], 64, blank=blank)
    assert labels.shape[1] == 2 * 64 and scores.shape == (len(lengths), 128)
    assert np.all(scores[:, :-1] >= scores[:, 1:])  # best first
    best = as_lists(labels[:, 0], found_lengths[:, 0])
    overruled = 0  # rows where the pair's choice is not the first model's own best
    for b in range(len(lengths)):
        exact = [labelling_log_probs(x[b], n[b], blank) for x, n in zip(models, steps)]
        mean = {key: sum(e.get(key, -np.inf) for e in exact) / 2 for key in exact[0]}
        winner = max(mean, key=mean.get)
        assert best[b] == winner
        overruled += winner != max(exact[0], key=exact[0].get)
        np.testing.assert_allclose(scores[b, 0], mean[winner], rtol=1e-4, atol=1e-4)
    assert overruled, "no row where combining changes the answer: the test says little"
    # one model: its own beam search, exact scores
    alone = ctc_ensemble_beam_search([(models[0], lengths)], 64, blank=blank)
    single = ctc_beam_search_decode(models[0], lengths, 64, 1, blank=blank)
    assert as_lists(alone[0][:, 0], alone[1][:, 0]) == as_lists(single[0][:, 0], single[1][:, 0])


def alignment_reference(logits, length, blank):
    """(label, first, last) of every run of equal non-blank argmax frames."""
    best = np.argmax(logits[:length], -1)
    spans = []
    for t, c in enumerate(best):
        if c == blank:
            continue
        if t > 0 and best[t - 1] == c:
            spans[-1][2] = t
        else:
            spans.append([c, t, t])
    return [tuple(s) for s in spans]


@pytest.mark.parametrize("blank", [0, 3])
def test_alignment_spans(blank):
    lengths = np.array([9, 4, 0, 9, 1])
    logits = random_logits(7, len(lengths), 9, classes=4)
    logits[0, 2:5] = [0, 9, 0, 0]  # a run of class 1 over frames 2..4
    labels, first, last, n = ctc_alignment(logits, lengths, blank=blank)
    greedy, greedy_lengths = ctc_greedy_decode(logits, lengths, blank=blank)
    np.testing.assert_array_equal(labels, greedy)
    np.testing.assert_array_equal(n, greedy_lengths)
    for k, (x, length) in enumerate(zip(logits, lengths)):
        m = n[k]
        got = list(zip(labels[k, :m].numpy(), first[k, :m].numpy(), last[k, :m].numpy()))
        assert got == alignment_reference(x, length, blank)
        assert np.all(first[k, m:] == -1) and np.all(last[k, m:] == -1)


def test_bad_arguments_raise():
    logits = random_logits(0, 1, 2)
    with pytest.raises(ValueError, match="blank=3"):
        ctc_loss([[1]], logits, [1], [2], blank=3)
    with pytest.raises(ValueError, match="top_paths=3 is more than beam_width=2"):
        ctc_beam_search_decode(logits, [2], beam_width=2, top_paths=3)
