"""Levenshtein alignment and corpus error rates: hand-computed cases, and the
distance against TensorFlow's tf.edit_distance on random sequences."""

import math

import numpy as np
import pytest
import tensorflow as tf

from lstm_core.edit_distance import align, error_rate


def counts(reference, hypothesis):
    a = align(reference, hypothesis)
    return a.substitutions, a.deletions, a.insertions, a.hits


def test_identical():
    a = align(["sh", "iy", "hh"], ["sh", "iy", "hh"])
    assert (a.substitutions, a.deletions, a.insertions, a.hits) == (0, 0, 0, 3)
    assert a.pairs == (("sh", "sh"), ("iy", "iy"), ("hh", "hh"))


def test_all_deleted_and_all_inserted():
    assert counts(["a", "b", "c"], []) == (0, 3, 0, 0)
    assert align(["a", "b"], []).pairs == (("a", None), ("b", None))
    assert counts([], ["a", "b"]) == (0, 0, 2, 0)
    assert align([], ["a", "b"]).pairs == ((None, "a"), (None, "b"))
    assert counts([], []) == (0, 0, 0, 0)


def test_one_substitution():
    a = align(["a", "b", "c"], ["a", "x", "c"])
    assert (a.substitutions, a.deletions, a.insertions, a.errors) == (1, 0, 0, 1)
    assert a.pairs[1] == ("b", "x")


def test_mixed():
    # ref  a b c d e f -
    # hyp  a x c - e f g   -> S=1 (b->x), D=1 (d), I=1 (g), 4 hits; all-substitution costs 4
    a = align(list("abcdef"), list("axcefg"))
    assert (a.substitutions, a.deletions, a.insertions, a.hits) == (1, 1, 1, 4)
    assert a.pairs == (("a", "a"), ("b", "x"), ("c", "c"), ("d", None), ("e", "e"),
                       ("f", "f"), (None, "g"))


def test_tie_break_substitution_first_and_gaps_early():
    # Distance 2 either as S+D or D+S: the documented rule substitutes the
    # last symbol and deletes the earlier one.
    a = align(["a", "b"], ["c"])
    assert a.pairs == (("a", None), ("b", "c"))
    # Equal cost 3 as S+D+I or 3 S: substitutions win.
    assert counts("abcde", "axcef") == (3, 0, 0, 2)
    # Never D+I where one S costs less, and a repeated symbol's gap goes first.
    assert counts(["a"], ["b"]) == (1, 0, 0, 0)
    assert align(["a", "a"], ["a"]).pairs == (("a", None), ("a", "a"))
    assert align(["a"], ["a", "a"]).pairs == ((None, "a"), ("a", "a"))


def test_unicode_ipa_symbols():
    # Multi-character IPA phonemes are single symbols; no whitespace needed.
    ref = ["ʃ", "iː", "t͡ʃ", "ə"]
    hyp = ["s", "iː", "t͡ʃ", "ə", "ʔ"]
    assert counts(ref, hyp) == (1, 0, 1, 3)
    assert counts([1, 2, 3], [1, 3]) == (0, 1, 0, 2)  # any hashables


def test_corpus_aggregation():
    refs = [["a", "b", "c", "d"], ["e", "f"], []]
    hyps = [["a", "x", "c"], ["e", "f", "g", "h"], ["z"]]
    result = error_rate(refs, hyps)
    # pair 1: S=1 D=1; pair 2: I=2; pair 3: I=1; N = 4 + 2 + 0
    assert (result.substitutions, result.deletions, result.insertions,
            result.reference_length) == (1, 1, 3, 6)
    assert result.rate == pytest.approx(100 * 5 / 6)  # summed, not averaged per sentence
    assert error_rate([["a"]], [["a", "b", "c"]]).rate == 200.0  # insertions can pass 100


def test_empty_corpus_reference():
    assert error_rate([[]], [[]]).rate == 0.0
    assert math.isinf(error_rate([[], []], [[], ["a"]]).rate)
    assert error_rate([], []).rate == 0.0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rate([["a"], ["b"]], [["a"]])


def sparse(sequences):
    indices = [[k, t] for k, s in enumerate(sequences) for t in range(len(s))]
    values = [v for s in sequences for v in s]
    width = max([len(s) for s in sequences] + [1])
    return tf.SparseTensor(np.array(indices, "int64").reshape(-1, 2),
                           np.array(values, "int64"), [len(sequences), width])


def test_distance_matches_tf_edit_distance():
    rng = np.random.default_rng(0)
    refs = [list(rng.integers(0, 4, rng.integers(1, 9))) for _ in range(200)]
    hyps = [list(rng.integers(0, 4, rng.integers(0, 9))) for _ in range(200)]
    expected = tf.edit_distance(sparse(hyps), sparse(refs), normalize=False).numpy()
    ours = [align(r, h) for r, h in zip(refs, hyps)]
    np.testing.assert_array_equal([a.errors for a in ours], expected)
    for a, r, h in zip(ours, refs, hyps):  # the pairs spell out both sequences
        assert [x for x, _ in a.pairs if x is not None] == r
        assert [y for _, y in a.pairs if y is not None] == h
        assert a.hits + a.substitutions + a.deletions == len(r)
        assert a.hits + a.substitutions + a.insertions == len(h)
    result = error_rate(refs, hyps)
    assert result.errors == expected.sum()
    assert result.rate == pytest.approx(100 * expected.sum() / sum(map(len, refs)))
