"""The attentional LSTM encoder-decoder (Luong et al. 2015) on the core.

Encoder: source subword embeddings -> stacked bidirectional recurrent
layers (:class:`lstm_core.RNNStack`, ``peephole_lstm`` with cell clipping
and optional projection), whose outputs are the memory the decoder attends
to. Decoder: target subword embeddings -> :class:`lstm_core.AttentionDecoder`
(stacked recurrent cells, Luong or Bahdanau attention, input feeding,
dropout) -> logits over the target subwords, from their own output layer or
from the target embeddings (``tie_embeddings``, Press & Wolf 2017).

Training is teacher forcing: the decoder reads the reference shifted right
(``target_in``: the start id, then the reference) and is scored on the
reference followed by the end id, with label smoothing (Szegedy et al. 2016).
Decoding steps the same decoder cell (:meth:`Translator.step_function`)
inside :func:`lstm_core.beam_search.beam_search`.
"""

import keras
import tensorflow as tf
from keras import ops

from apps.translation.subwords import BOS, PAD
from lstm_core.attention import GUIDE_WIDTH, diagonal_attention_loss
from lstm_core.distribute import replica_loss
from lstm_core.decoder import AttentionDecoder, AttentionDecoderCell
from lstm_core.layers import RNNStack

#: Ids a translation never contains: decoding gives them no probability.
NEVER_OUTPUT = (PAD, BOS)


@keras.saving.register_keras_serializable(package="apps.translation")
class Logits(keras.layers.Layer):
    """Scores over the vocabulary, float32: ``x W + b``, or with ``tied``
    ``x E^T + b`` for the embedding matrix ``E`` passed to each call."""

    def __init__(self, vocab_size, tied=False, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.tied = tied

    def build(self, x_shape, embeddings_shape=None):
        if not self.tied:
            self.kernel = self.add_weight((x_shape[-1], self.vocab_size), name="kernel",
                                          initializer="glorot_uniform")
        self.bias = self.add_weight((self.vocab_size,), name="bias", initializer="zeros")

    def call(self, x, embeddings=None):
        kernel = ops.transpose(ops.cast(embeddings, "float32")) if self.tied else self.kernel
        return ops.matmul(ops.cast(x, "float32"), kernel) + self.bias

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "tied": self.tied}


def smoothed_cross_entropy(labels, logits, smoothing):
    """Per-position cross-entropy of ``labels`` under ``logits`` with the
    target distribution ``(1 - smoothing) * one_hot + smoothing / vocab``."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    nll = -ops.take_along_axis(log_probs, ops.expand_dims(labels, -1), axis=-1)[..., 0]
    if not smoothing:
        return nll
    return (1.0 - smoothing) * nll - smoothing * ops.mean(log_probs, axis=-1)


@keras.saving.register_keras_serializable(package="apps.translation")
class Translator(keras.Model):
    """Logits ``[batch, target_steps, target_vocab]`` from ``{"source":
    [batch, source_steps], "target_in": [batch, target_steps]}`` subword ids
    (0 pads). ``encoder`` holds :class:`lstm_core.RNNStack` arguments
    (bidirectional unless it says otherwise), ``decoder`` those of
    :class:`lstm_core.AttentionDecoderCell`. ``word_dropout`` zeroes whole
    subword embeddings in training, a source word the encoder must do
    without and a previous word the decoder must guess (Gal & Ghahramani
    2016; Nematus' dropout_source/target); ``embedding_dropout`` then drops
    single features. With ``tie_embeddings`` the
    decoder's ``output_units`` is the target embedding size. A
    ``guided_attention`` ``weight`` adds that much of
    :func:`lstm_core.attention.diagonal_attention_loss` (``width``) to the
    training loss.
    """

    def __init__(self, source_vocab, target_vocab, source_embedding_dim=256,
                 target_embedding_dim=256, embedding_dropout=0.0, word_dropout=0.0,
                 encoder=None, decoder=None,
                 tie_embeddings=False, label_smoothing=0.0, guided_attention=None, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        decoder = dict(decoder or {})
        if tie_embeddings:
            if decoder.get("output_units") not in (None, target_embedding_dim):
                raise ValueError(f"tied embeddings: the decoder's output_units "
                                 f"({decoder['output_units']}) must be the target embedding "
                                 f"size ({target_embedding_dim}), or unset")
            decoder["output_units"] = target_embedding_dim
        self.settings = dict(
            source_vocab=source_vocab, target_vocab=target_vocab,
            source_embedding_dim=source_embedding_dim, target_embedding_dim=target_embedding_dim,
            embedding_dropout=embedding_dropout, word_dropout=word_dropout,
            encoder=dict(encoder or {}), decoder=decoder,
            tie_embeddings=tie_embeddings, label_smoothing=label_smoothing,
            guided_attention=dict(guided_attention or {}), seed=seed)
        self.label_smoothing = label_smoothing
        self.tie_embeddings = tie_embeddings
        self.source_embedding = keras.layers.Embedding(source_vocab, source_embedding_dim,
                                                       name="source_embedding")
        self.target_embedding = keras.layers.Embedding(target_vocab, target_embedding_dim,
                                                       name="target_embedding")
        self.embedding_dropout = keras.layers.Dropout(embedding_dropout, seed=seed)
        # Its own seed: with embedding_dropout's, the two masks' draws would line up.
        self.word_dropout = keras.layers.Dropout(word_dropout, noise_shape=(None, None, 1),
                                                 seed=None if seed is None else seed + 1)
        self.encoder = RNNStack(**{"bidirectional": True, **self.settings["encoder"]},
                                name="encoder")
        self.decoder = AttentionDecoder(AttentionDecoderCell(**decoder, seed=seed, name="cell"),
                                        name="decoder")
        self.logits = Logits(target_vocab, tied=tie_embeddings, dtype="float32", name="logits")

    def encode(self, source, training=False):
        """The memory ``[batch, source_steps, units]`` and its mask."""
        mask = source != PAD
        embedded = self.embed(self.source_embedding, source, training)
        return self.encoder(embedded, mask=mask, training=training), mask

    def embed(self, embedding, ids, training):
        words = self.word_dropout(embedding(ids), training=training)
        return self.embedding_dropout(words, training=training)

    def output_logits(self, outputs):
        embeddings = self.target_embedding.embeddings if self.tie_embeddings else None
        return self.logits(outputs, embeddings)

    def teacher_forced(self, inputs, training=False):
        """``(logits, alignments [batch, target_steps, source_steps])``."""
        memory, mask = self.encode(inputs["source"], training)
        embedded = self.embed(self.target_embedding, inputs["target_in"], training)
        outputs, alignments = self.decoder(embedded, memory, mask, training=training)
        return self.output_logits(outputs), alignments

    def call(self, inputs, training=False):
        logits, alignments = self.teacher_forced(inputs, training)
        guide = self.settings["guided_attention"]
        if training and guide.get("weight"):
            self.add_loss(guide["weight"] * diagonal_attention_loss(
                alignments, inputs["source"] != PAD, inputs["target_in"] != PAD,
                guide.get("width", GUIDE_WIDTH)))
        return logits

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # y: the reference and the end id, 0-padded; its padding is not scored.
        mask = ops.cast(y != PAD, "float32")
        per_token = smoothed_cross_entropy(y, y_pred, self.label_smoothing)
        # A mean over the target tokens of the whole batch, this replica's
        # share of it under a tf.distribute strategy.
        return replica_loss(ops.sum(per_token * mask), ops.sum(mask),
                            ops.sum(self.losses) if self.losses else None)

    def step_function(self, memory, mask):
        """``(step, state)`` for :func:`lstm_core.beam_search.beam_search`
        over this memory (tiled per beam already): ``step(ids, state) ->
        (log_probs, state)``, padding and the start id impossible."""
        cell = self.decoder.cell
        prepared = cell.prepare_memory(memory, mask)
        never = tf.reduce_any(tf.range(self.settings["target_vocab"])[:, None]
                              == tf.constant(NEVER_OUTPUT), axis=1)

        def step(ids, state):
            outputs, _, state = cell(self.target_embedding(ids), state, prepared)
            log_probs = tf.nn.log_softmax(self.output_logits(outputs))
            return tf.where(never, -float("inf"), log_probs), state

        return step, cell.initial_state(prepared)

    def get_config(self):
        return {**super().get_config(), **self.settings}


class TranslatorEnsemble(tf.Module):
    """Translators of one vocabulary (seeds or variants of one recipe),
    decoded as one: each encodes the source itself, and at every step their
    next-subword log probabilities are averaged
    (:func:`lstm_core.beam_search.mean_log_probs`)."""

    def __init__(self, members):
        super().__init__()
        self.members = list(members)
