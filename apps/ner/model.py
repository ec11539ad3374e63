"""The BiLSTM-CRF tagger (Lample et al. 2016; Ma & Hovy 2016) on the core.

Per token: a word embedding (with word dropout: training replaces a word by
the unknown id with probability ``word_dropout``, so the model learns what to
do with words it never saw), character features (a BiLSTM over the
characters, or a CNN with max pooling) and a capitalization embedding. Then
stacked bidirectional recurrent layers from the core registry, and per-tag
scores decoded by a linear-chain CRF (or a softmax).
"""

import keras
import tensorflow as tf
from keras import ops

from apps.ner.features import NUM_CAPS, PAD, UNK
from lstm_core import RNNStack, make_rnn
from lstm_core.crf import CRF, viterbi_decode
from lstm_core.distribute import replica_loss


@keras.saving.register_keras_serializable(package="apps.ner")
class Tagger(keras.Model):
    """Scores ``[batch, tokens, tags]`` from ``{"words", "chars", "caps"}``.

    ``num_words`` / ``num_chars`` count vocabulary entries without the two
    reserved ids (padding 0, unknown 1). ``encoder`` holds the
    :class:`lstm_core.RNNStack` arguments. ``allowed`` are the CRF's allowed
    transitions (see :func:`lstm_core.crf.allowed_transitions`).
    """

    def __init__(self, num_words, num_chars, num_tags, word_dim=100, char_dim=25,
                 char_encoder="lstm", char_units=25, caps_dim=4, encoder=None,
                 dropout=0.5, word_dropout=0.05, output="crf", allowed=None, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(
            num_words=num_words, num_chars=num_chars, num_tags=num_tags, word_dim=word_dim,
            char_dim=char_dim, char_encoder=char_encoder, char_units=char_units,
            caps_dim=caps_dim, encoder=dict(encoder or {}), dropout=dropout,
            word_dropout=word_dropout, output=output, allowed=allowed, seed=seed)
        self.word_dropout = word_dropout
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.word_embedding = keras.layers.Embedding(num_words + 2, word_dim, mask_zero=True,
                                                     name="word_embedding")
        self.char_encoder = char_encoder
        if char_encoder != "none":
            # No Keras mask: char_features passes the LSTM its mask itself and
            # the CNN pools over real characters (a Conv1D takes no mask).
            self.char_embedding = keras.layers.Embedding(num_chars + 2, char_dim,
                                                         name="char_embedding")
            if char_encoder == "lstm":
                self.char_layer = keras.layers.Bidirectional(
                    make_rnn("peephole_lstm", char_units), name="char_bilstm")
            else:
                self.char_layer = keras.layers.Conv1D(2 * char_units, 3, padding="same",
                                                      activation="relu", name="char_cnn")
        self.caps_embedding = keras.layers.Embedding(NUM_CAPS, caps_dim, name="caps_embedding")
        self.dropout = keras.layers.Dropout(dropout, seed=seed)
        self.encoder = RNNStack(**{"bidirectional": True, **self.settings["encoder"]},
                                name="encoder")
        self.scores = keras.layers.Dense(num_tags, dtype="float32", name="scores")
        self.crf = CRF(num_tags, allowed=allowed, name="crf") if output == "crf" else None

    def char_features(self, chars):
        batch, tokens, length = ops.shape(chars)[0], ops.shape(chars)[1], ops.shape(chars)[2]
        flat = ops.reshape(chars, (-1, length))
        embedded = self.char_embedding(flat)
        mask = flat != PAD
        if self.char_encoder == "lstm":
            features = self.char_layer(embedded, mask=mask)
        else:  # max over the real characters
            convolved = self.char_layer(embedded)
            features = ops.max(ops.where(mask[..., None], convolved, -1e4), axis=1)
            features = ops.where(ops.any(mask, axis=1)[:, None], features, 0.0)
        return ops.reshape(features, (batch, tokens, features.shape[-1]))

    def call(self, inputs, training=False):
        words = inputs["words"]
        mask = words != PAD
        if training and self.word_dropout > 0:
            drop = keras.random.uniform(ops.shape(words), seed=self.seed_generator) < self.word_dropout
            words = ops.where(ops.logical_and(drop, mask), UNK, words)
        parts = [self.word_embedding(words), self.caps_embedding(inputs["caps"])]
        if self.char_encoder != "none":
            parts.append(ops.cast(self.char_features(inputs["chars"]), parts[0].dtype))
        x = self.dropout(ops.concatenate(parts, axis=-1), training=training)
        x = self.encoder(x, mask=mask, training=training)
        return self.scores(self.dropout(x, training=training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        lengths = ops.sum(ops.cast(x["words"] != PAD, "int32"), axis=1)
        if self.crf is not None:
            likelihood = self.crf.log_likelihood(y_pred, y, lengths=lengths)
            total, count = -ops.sum(likelihood), ops.shape(likelihood)[0]
        else:
            mask = ops.cast(x["words"] != PAD, "float32")
            per_token = keras.losses.sparse_categorical_crossentropy(y, y_pred, from_logits=True)
            total, count = ops.sum(per_token * mask), ops.sum(mask)
        # A mean over the sentences (tokens) of the whole batch, this
        # replica's share of it under a tf.distribute strategy.
        return replica_loss(total, count, ops.sum(self.losses) if self.losses else None)

    def decode(self, inputs):
        """Best tag ids ``[batch, tokens]`` (0 past each sentence's end)."""
        crf = self.crf.scores() if self.crf is not None else None
        return decode_scores(inputs["words"], self(inputs, training=False), crf)

    def get_config(self):
        return {**super().get_config(), **self.settings}


def decode_scores(words, scores, crf_scores=None):
    """Tag ids from per-tag scores: Viterbi with the CRF's (transition,
    start, end) scores, else the best tag per token; 0 past the end."""
    mask = words != PAD
    if crf_scores is not None:
        return viterbi_decode(scores, ops.sum(ops.cast(mask, "int32"), axis=1), *crf_scores)[0]
    return ops.where(mask, ops.cast(ops.argmax(scores, axis=-1), "int32"), 0)


class TaggerEnsemble(tf.Module):
    """Taggers of one vocabulary (seeds or variants of one recipe), decoded
    as one: their token scores and CRF scores are averaged (a product of the
    taggers' CRF distributions), which is steadier on unseen names than any
    one of them."""

    def __init__(self, taggers):
        super().__init__()
        self.taggers = list(taggers)

    def decode(self, inputs):
        def mean(values):
            return ops.mean(ops.stack(list(values)), axis=0)

        scores = mean(t(inputs, training=False) for t in self.taggers)
        crf = None
        if self.taggers[0].crf is not None:
            crf = [mean(parts) for parts in zip(*(t.crf.scores() for t in self.taggers))]
        return decode_scores(inputs["words"], scores, crf)
