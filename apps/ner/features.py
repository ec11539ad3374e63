"""Sentence strings to model features, in the TensorFlow graph.

One ``Featurizer`` serves both the tf.data training pipeline and the exported
SavedModel, so training and serving cannot drift apart, and unknown words and
characters are handled inside the graph.

A sentence is its tokens joined by single spaces (CoNLL tokens never hold a
space). Features per token:

* ``words``: id in the word vocabulary (0 padding, 1 unknown), after
  lowercasing if the recipe asks for it;
* ``chars``: ids of its first ``max_word_length`` characters (0 padding,
  1 unknown);
* ``caps``: the capitalization class below, which keeps what lowercasing
  throws away (Collobert et al. 2011; Lample et al. 2016).
"""

import tensorflow as tf

PAD, UNK = 0, 1
# Capitalization classes (0 is padding).
# Patterns over any script's letters (RE2: \p{Lu} upper, \p{Ll} lower case).
CAPS_PATTERNS = [
    ("lower", r"\P{Lu}*\p{Ll}\P{Lu}*"),  # has lowercase, no uppercase
    ("upper", r"\P{Ll}*\p{Lu}\P{Ll}*"),  # has uppercase, no lowercase: "USA", "F-16"
    ("title", r"\p{Lu}\P{Lu}*"),  # "London", "Émile"; "McDonald" is mixed
    ("mixed", r".*[\p{Lu}\p{Ll}].*"),  # "iPhone", "McDonald"
]
NUM_CAPS = len(CAPS_PATTERNS) + 2  # + padding + no letters at all


def lookup_table(keys):
    """Ids 2.. for ``keys``; anything else maps to UNK."""
    keys = tf.constant(list(keys), tf.string)
    values = tf.range(2, tf.size(keys, out_type=tf.int64) + 2, dtype=tf.int64)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), UNK)


class Featurizer(tf.Module):
    """Maps ``sentences`` (tf.string ``[batch]``) to padded id tensors."""

    def __init__(self, words, chars, lowercase=False, max_word_length=20):
        super().__init__()
        self.word_table = lookup_table(words)
        self.char_table = lookup_table(chars)
        self.lowercase = lowercase
        self.max_word_length = max_word_length

    def tokens(self, sentences):
        # Splitting on runs of whitespace: "" is a sentence of no tokens.
        return tf.strings.split(sentences)  # ragged [batch, tokens]

    def __call__(self, sentences):
        tokens = self.tokens(sentences)
        keys = tf.strings.lower(tokens, encoding="utf-8") if self.lowercase else tokens
        words = tf.ragged.map_flat_values(self.word_table.lookup, keys)
        chars = tf.strings.unicode_split(tokens, "UTF-8")[:, :, : self.max_word_length]
        chars = tf.ragged.map_flat_values(self.char_table.lookup, chars)
        caps = tf.ragged.map_flat_values(capitalization, tokens)
        return {
            "words": _dense(tf.cast(words, tf.int32)),
            "chars": _dense(tf.cast(chars, tf.int32)),
            "caps": _dense(caps),
        }


def _dense(ragged):
    """Padded, with at least one (padding) position per axis: a batch of
    empty sentences still runs the recurrent layers, which need a step."""
    dense = ragged.to_tensor(PAD)
    short = tf.maximum(1 - tf.shape(dense)[1:], 0)
    return tf.pad(dense, tf.stack([tf.concat([[0], tf.zeros_like(short)], 0),
                                   tf.concat([[0], short], 0)], axis=1))


def capitalization(tokens):
    """Capitalization class of each token (1-based; 0 is padding)."""
    classes = tf.fill(tf.shape(tokens), len(CAPS_PATTERNS) + 1)  # no letters
    for index, (_, pattern) in reversed(list(enumerate(CAPS_PATTERNS, start=1))):
        classes = tf.where(tf.strings.regex_full_match(tokens, pattern), index, classes)
    return tf.cast(classes, tf.int32)
