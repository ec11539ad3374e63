"""The in-graph featurizer shared by NER training and the SavedModel."""

import numpy as np
import tensorflow as tf

from apps.ner.features import PAD, UNK, Featurizer, capitalization


def test_ids_padding_and_unknowns():
    featurizer = Featurizer(["the", "Paris"], list("thePars"), max_word_length=3)
    out = featurizer(tf.constant(["the Paris Zorg", "the", ""]))
    np.testing.assert_array_equal(out["words"], [[2, 3, UNK], [2, PAD, PAD], [PAD] * 3])
    # Characters are truncated to max_word_length; unknown ones map to UNK.
    np.testing.assert_array_equal(out["chars"][0], [[2, 3, 4], [5, 6, 7], [UNK, UNK, 7]])
    assert out["chars"].shape == (3, 3, 3)
    np.testing.assert_array_equal(out["caps"][1:], [[1, PAD, PAD], [PAD] * 3])


def test_lowercase_maps_case_variants_to_one_word_but_keeps_caps():
    featurizer = Featurizer(["paris"], list("paris"), lowercase=True)
    out = featurizer(tf.constant(["Paris PARIS paris"]))
    np.testing.assert_array_equal(out["words"], [[2, 2, 2]])
    assert len(set(out["caps"].numpy()[0])) == 3
    # in any script, as Python's str.lower() built the vocabulary
    words = ["zürich", "émile", "straße"]
    out = Featurizer(words, ["a"], lowercase=True)(tf.constant(["ZÜRICH Émile Straße"]))
    np.testing.assert_array_equal(out["words"], [[2, 3, 4]])


def test_capitalization_classes():
    tokens = tf.constant(["london", "USA", "F-16", "London", "iPhone", "McDonald", "1999", ",",
                          "émile", "ÉMILE", "Émile", "ÖsterReich"])
    np.testing.assert_array_equal(capitalization(tokens), [1, 2, 2, 3, 4, 4, 5, 5, 1, 2, 3, 4])


def test_a_batch_of_empty_sentences_keeps_one_padding_position():
    out = Featurizer(["a"], ["a"])(tf.constant(["", "  "]))
    assert out["words"].shape == (2, 1) and out["chars"].shape == (2, 1, 1)
    assert not np.any(out["words"]) and not np.any(out["caps"])


def test_featurizer_runs_in_a_dataset_map():
    featurizer = Featurizer(["a"], ["a"])
    ds = tf.data.Dataset.from_tensor_slices(["a b", "a"]).batch(2).map(featurizer)
    batch = next(iter(ds))
    np.testing.assert_array_equal(batch["words"], [[2, UNK], [2, PAD]])
