"""The n-gram language model against hand-counted cases and a plain Python
scorer, and n-best rescoring against the sums worked out by hand."""

import math

import numpy as np
import pytest
import tensorflow as tf

from lstm_core.ngram import count_ngrams, log_prob_table, rescore, sequence_log_probs

SEQUENCES = [[1, 2], [1, 2, 2], [2]]


def test_counts_pad_each_sequence_with_boundaries():
    assert count_ngrams(SEQUENCES, 2) == {"0 1": 2, "1 2": 2, "2 0": 3, "2 2": 1, "0 2": 1}
    assert count_ngrams([[3]], 3) == {"0 0 3": 1, "0 3 0": 1}
    assert count_ngrams([[]], 1) == {"0": 1}
    with pytest.raises(ValueError, match="order"):
        count_ngrams(SEQUENCES, 0)


def test_the_table_is_lidstone_estimates_and_lower_orders_sum_higher_counts():
    table = log_prob_table(count_ngrams(SEQUENCES, 2), 3, 2, smoothing=0.5)
    assert table.shape == (3, 3)
    np.testing.assert_allclose(np.exp(table).sum(-1), 1.0, rtol=1e-6)
    # after 2: "2 0" 3 times, "2 2" once, "2 1" never; 4 counts + 3 * 0.5
    np.testing.assert_allclose(np.exp(table[2]), [3.5 / 5.5, 0.5 / 5.5, 1.5 / 5.5], rtol=1e-6)
    # unigrams from the trigram counts: the same as counted directly
    trigrams = count_ngrams(SEQUENCES, 3)
    np.testing.assert_allclose(log_prob_table(trigrams, 3, 1, 0.1),
                               log_prob_table(count_ngrams(SEQUENCES, 1), 3, 1, 0.1), rtol=1e-6)
    np.testing.assert_allclose(log_prob_table(trigrams, 3, 2, 0.1), log_prob_table(
        count_ngrams(SEQUENCES, 2), 3, 2, 0.1), rtol=1e-6)
    with pytest.raises(ValueError, match="order 2 cannot give a table of order 3"):
        log_prob_table(count_ngrams(SEQUENCES, 2), 3, 3, 0.1)
    with pytest.raises(ValueError, match="past the 2 classes"):
        log_prob_table(count_ngrams(SEQUENCES, 2), 2, 2, 0.1)
    with pytest.raises(ValueError, match="smoothing"):
        log_prob_table(count_ngrams(SEQUENCES, 2), 3, 2, 0.0)
    with pytest.raises(ValueError, match="over 300 classes would have 27,000,000 entries"):
        log_prob_table({}, 300, 3, 0.1)


def python_log_prob(counts, sequence, order, classes, k):
    """log P of ``sequence`` straight from the counts, one n-gram at a time."""
    padded = [0] * (order - 1) + list(sequence) + [0]
    total = 0.0
    for i in range(order - 1, len(padded)):
        context = padded[i - order + 1:i]
        gram = sum(c for key, c in counts.items() if [int(x) for x in key.split()] ==
                   context + [padded[i]])
        seen = sum(c for key, c in counts.items() if [int(x) for x in key.split()][:-1] == context)
        total += math.log((gram + k) / (seen + k * classes))
    return total


@pytest.mark.parametrize("order", [1, 2, 3])
def test_sequence_log_probs_match_a_plain_python_scorer(order):
    rng = np.random.default_rng(order)
    training = [list(rng.integers(1, 4, size=rng.integers(1, 5))) for _ in range(20)]
    counts = count_ngrams(training, order)
    table = log_prob_table(counts, 4, order, smoothing=0.3)
    labels = np.array([[[1, 2, 3, -1], [3, -1, -1, -1]], [[2, 2, 2, 1], [-1, -1, -1, -1]]])
    lengths = np.array([[3, 1], [4, 0]])
    got = tf.function(sequence_log_probs)(table, tf.constant(labels), tf.constant(lengths)).numpy()
    for b in range(2):
        for n in range(2):
            expected = python_log_prob(counts, labels[b, n, :lengths[b, n]], order, 4, 0.3)
            assert got[b, n] == pytest.approx(expected, rel=1e-5)


def test_rescoring_picks_the_best_sum_of_scores_and_weighted_lm():
    counts = count_ngrams([[1, 2]] * 9 + [[2, 1]], 2)
    table = log_prob_table(counts, 3, 2, smoothing=0.1)
    labels = tf.constant([[[2, 1], [1, 2]], [[1, 1], [1, -1]]])
    lengths = tf.constant([[2, 2], [2, 1]])
    scores = tf.constant([[-1.0, -1.5], [-2.0, -2.2]])
    lm = sequence_log_probs(table, labels, lengths).numpy()
    for weight in (0.0, 0.5, 2.0):
        best, best_lengths = rescore(labels, lengths, scores, table, weight)
        pick = np.argmax(scores.numpy() + weight * lm, axis=1)
        np.testing.assert_array_equal(best, labels.numpy()[[0, 1], pick])
        np.testing.assert_array_equal(best_lengths, lengths.numpy()[[0, 1], pick])
    # no weight: the decoder's own best; some weight: the LM's favourite "1 2"
    np.testing.assert_array_equal(rescore(labels, lengths, scores, table, 0.0)[0][0], [2, 1])
    np.testing.assert_array_equal(rescore(labels, lengths, scores, table, 1.0)[0][0], [1, 2])
