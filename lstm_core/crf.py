r"""A linear-chain conditional random field for sequence tagging.

For per-token scores ``x_t`` (``[K]`` tags), transitions ``A`` (``A[i, j]`` =
score of tag ``j`` following tag ``i``), start and end scores ``s`` and ``e``,
the score of a tag sequence ``y_1..y_n`` is::

    score(y) = s[y_1] + sum_t x_t[y_t] + sum_{t>1} A[y_{t-1}, y_t] + e[y_n]

and its probability ``exp(score(y)) / Z`` where ``log Z`` comes from the
forward algorithm::

    alpha_1 = s + x_1
    alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + x_t[j]
    log Z = logsumexp(alpha_n + e)

Viterbi decoding replaces logsumexp by max and follows back-pointers.
Sequences in a batch have their own lengths: past its length a sequence's
recursion state is carried unchanged, so a padded batch gives the same
results as its sequences one by one. Everything runs in float32, eagerly, in
``tf.function`` and under XLA.
"""

import keras
import numpy as np
import tensorflow as tf

DISALLOWED = -1e4  # added to forbidden transitions: never decoded, ~0 probability


def _prepare(potentials, lengths, start, end):
    potentials = tf.cast(potentials, tf.float32)
    num_tags = tf.shape(potentials)[2]
    lengths = tf.cast(lengths, tf.int32)
    start = tf.zeros([num_tags]) if start is None else tf.cast(start, tf.float32)
    end = tf.zeros([num_tags]) if end is None else tf.cast(end, tf.float32)
    return potentials, lengths, start, end


def _time_major_steps(potentials, lengths):
    """Time-major potentials ``[T + 1, B, K]`` and ``[T + 1, B, 1]`` booleans
    saying whether step t is inside sequence b. The extra step is never
    inside: it keeps the scans over steps 2.. from being empty, which XLA
    cannot compile, when a batch holds only one-token sequences."""
    padded = tf.pad(potentials, [[0, 0], [0, 1], [0, 0]])
    mask = tf.sequence_mask(lengths, tf.shape(padded)[1])
    return tf.transpose(padded, [1, 0, 2]), tf.transpose(mask)[..., None]


def crf_log_norm(potentials, lengths, transitions, start=None, end=None):
    """``log Z`` per sequence, ``[B]``; 0 for an empty sequence."""
    potentials, lengths, start, end = _prepare(potentials, lengths, start, end)
    transitions = tf.cast(transitions, tf.float32)
    steps, valid = _time_major_steps(potentials, lengths)

    def step(alpha, inputs):
        x, ok = inputs
        new = tf.reduce_logsumexp(alpha[:, :, None] + transitions, axis=1) + x
        return tf.where(ok, new, alpha)

    alpha0 = start + steps[0]
    alphas = tf.scan(step, (steps[1:], valid[1:]), initializer=alpha0)
    last = tf.concat([alpha0[None], alphas], axis=0)[-1]
    return tf.where(lengths > 0, tf.reduce_logsumexp(last + end, axis=1), 0.0)


def crf_sequence_score(potentials, tags, lengths, transitions, start=None, end=None):
    """``score(y)`` of the given tag sequences, ``[B]``."""
    potentials, lengths, start, end = _prepare(potentials, lengths, start, end)
    transitions = tf.cast(transitions, tf.float32)
    tags = tf.cast(tags, tf.int32)
    mask = tf.sequence_mask(lengths, tf.shape(potentials)[1], dtype=tf.float32)
    unary = tf.reduce_sum(tf.gather(potentials, tags, batch_dims=2) * mask, axis=1)
    pairs = tf.gather_nd(transitions, tf.stack([tags[:, :-1], tags[:, 1:]], axis=-1))
    binary = tf.reduce_sum(pairs * mask[:, 1:], axis=1)
    first = tf.gather(start, tags[:, 0])
    last_tag = tf.gather(tags, tf.maximum(lengths - 1, 0), batch_dims=1)
    boundary = tf.where(lengths > 0, first + tf.gather(end, last_tag), 0.0)
    return unary + binary + boundary


def crf_log_likelihood(potentials, tags, lengths, transitions, start=None, end=None):
    """``log p(y | x)`` per sequence, ``[B]``."""
    return (crf_sequence_score(potentials, tags, lengths, transitions, start, end)
            - crf_log_norm(potentials, lengths, transitions, start, end))


def viterbi_decode(potentials, lengths, transitions, start=None, end=None):
    """Best tag sequences ``[B, T]`` int32 (0 past each length) and their
    scores ``[B]``."""
    potentials, lengths, start, end = _prepare(potentials, lengths, start, end)
    transitions = tf.cast(transitions, tf.float32)
    batch, max_len = tf.shape(potentials)[0], tf.shape(potentials)[1]
    num_tags = tf.shape(potentials)[2]
    steps, valid = _time_major_steps(potentials, lengths)
    identity = tf.broadcast_to(tf.range(num_tags)[None, :], [batch, num_tags])

    def forward(carry, inputs):
        delta, _ = carry
        x, ok = inputs
        scores = delta[:, :, None] + transitions  # [B, from, to]
        best_prev = tf.argmax(scores, axis=1, output_type=tf.int32)
        new = tf.reduce_max(scores, axis=1) + x
        # Past the end: keep delta, and point each tag back to itself.
        return tf.where(ok, new, delta), tf.where(ok, best_prev, identity)

    delta0 = start + steps[0]
    deltas, pointers = tf.scan(forward, (steps[1:], valid[1:]),
                               initializer=(delta0, identity))
    final = tf.concat([delta0[None], deltas], axis=0)[-1] + end
    best_last = tf.argmax(final, axis=1, output_type=tf.int32)
    best_score = tf.reduce_max(final, axis=1)

    def backward(tag, pointer):
        return tf.gather(pointer, tag, batch_dims=1)

    # pointers[t] maps the tag at step t+1 to the best tag at step t.
    earlier = tf.scan(backward, pointers, initializer=best_last, reverse=True)
    path = tf.transpose(tf.concat([earlier, best_last[None]], axis=0))[:, :max_len]
    path = tf.where(tf.sequence_mask(lengths, max_len), path, 0)
    return path, tf.where(lengths > 0, best_score, 0.0)


def allowed_transitions(tags, scheme):
    """Which transitions a tag scheme allows, as boolean arrays
    ``(allowed [K, K], allowed_start [K], allowed_end [K])``.

    ``scheme``: ``bio`` (alias ``iob2``), ``iobes`` or ``iob1``. In BIO an
    ``I-X`` continues a ``B-X`` or ``I-X`` and cannot start; in IOBES ``B-X``
    and ``I-X`` continue into ``I-X`` or ``E-X`` only, and a sequence starts
    and ends outside an entity or on its boundary; IOB1 only forbids ``B-X``
    except after an ``X`` entity.
    """
    scheme = scheme.lower()
    if scheme not in ("bio", "iob2", "iobes", "iob1"):
        raise ValueError(f"unknown tag scheme {scheme!r}; expected bio, iob2, iobes or iob1")
    parts = [(tag, None) if tag == "O" else tuple(tag.split("-", 1)) for tag in tags]

    def ok(previous, current):
        prefix, kind = current
        if previous is None:  # start
            return not (prefix == "I" and scheme in ("bio", "iob2")) and prefix not in ("E",)\
                and not (scheme == "iobes" and prefix == "I")
        p_prefix, p_kind = previous
        inside = p_prefix in ("B", "I") and p_kind == kind
        if scheme in ("bio", "iob2"):
            return prefix != "I" or inside
        if scheme == "iob1":
            return prefix != "B" or inside
        open_entity = p_prefix in ("B", "I")
        if prefix in ("I", "E"):
            return inside
        return not open_entity  # O, B, S only after O, E, S or at the start

    def may_end(tag):
        return scheme != "iobes" or tag[0] not in ("B", "I")

    allowed = np.array([[ok(p, c) for c in parts] for p in parts])
    allowed_start = np.array([ok(None, c) for c in parts])
    allowed_end = np.array([may_end(p) for p in parts])
    return allowed, allowed_start, allowed_end


@keras.saving.register_keras_serializable(package="lstm_core")
class CRF(keras.layers.Layer):
    """Linear-chain CRF over per-token tag scores.

    ``call(potentials, mask=None, lengths=None)`` returns the Viterbi tags;
    :meth:`log_likelihood` gives the training objective. ``allowed`` is
    ``(allowed, allowed_start, allowed_end)`` as from
    :func:`allowed_transitions` (nested lists keep the config JSON).
    """

    def __init__(self, num_tags, allowed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags <= 0:
            raise ValueError(f"num_tags must be a positive integer, got num_tags={num_tags!r}")
        self.num_tags = num_tags
        self.allowed = None if allowed is None else [np.asarray(a).tolist() for a in allowed]
        self.supports_masking = True
        # The weights' shapes do not depend on the input, and a model may use
        # only log_likelihood() in training, never calling the layer.
        self.build()

    def build(self, input_shape=None):
        k = self.num_tags
        init = keras.initializers.RandomUniform(-0.1, 0.1)
        self.transitions = self.add_weight((k, k), initializer=init, name="transitions",
                                           dtype="float32", autocast=False)
        self.start_transitions = self.add_weight((k,), initializer=init, name="start_transitions",
                                                 dtype="float32", autocast=False)
        self.end_transitions = self.add_weight((k,), initializer=init, name="end_transitions",
                                               dtype="float32", autocast=False)

    def scores(self):
        """Transition, start and end scores with the constraints applied."""
        transitions, start, end = (tf.convert_to_tensor(w) for w in
                                   (self.transitions, self.start_transitions, self.end_transitions))
        if self.allowed is not None:
            penalties = [tf.where(tf.constant(a, tf.bool), 0.0, DISALLOWED) for a in self.allowed]
            transitions, start, end = (s + p for s, p in zip((transitions, start, end), penalties))
        return transitions, start, end

    @staticmethod
    def _lengths(potentials, mask, lengths):
        if lengths is not None:
            return tf.cast(lengths, tf.int32)
        if mask is not None:
            return tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        return tf.fill([tf.shape(potentials)[0]], tf.shape(potentials)[1])

    def call(self, potentials, mask=None, lengths=None):
        lengths = self._lengths(potentials, mask, lengths)
        return viterbi_decode(potentials, lengths, *self.scores())[0]

    def log_likelihood(self, potentials, tags, mask=None, lengths=None):
        lengths = self._lengths(potentials, mask, lengths)
        return crf_log_likelihood(potentials, tags, lengths, *self.scores())

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2])

    def compute_output_spec(self, potentials, mask=None, lengths=None):
        return keras.KerasTensor(potentials.shape[:2], dtype="int32")

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        return {**super().get_config(), "num_tags": self.num_tags, "allowed": self.allowed}
