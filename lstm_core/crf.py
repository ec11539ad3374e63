r"""A linear-chain conditional random field for sequence tagging (the CRF that
TensorFlow Addons used to provide), for Keras 3 on the TensorFlow backend.

For per-token scores ``x_t`` (``[K]`` tags), transitions ``A`` (``A[i, j]`` =
score of tag ``j`` following tag ``i``), start and end scores ``s`` and ``e``,
the score of a tag sequence ``y_1..y_n`` is::

    score(y) = s[y_1] + sum_t x_t[y_t] + sum_{t>1} A[y_{t-1}, y_t] + e[y_n]

and its probability ``exp(score(y)) / Z``, where ``log Z`` comes from the
forward algorithm::

    alpha_1 = s + x_1
    alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + x_t[j]
    log Z = logsumexp_j(alpha_n[j] + e[j])

Viterbi decoding replaces logsumexp by max and follows back-pointers::

    delta_t[j] = max_i(delta_{t-1}[i] + A[i, j]) + x_t[j],  bp_t[j] = argmax_i(...)
    y_n = argmax_j(delta_n[j] + e[j]),  y_{t-1} = bp_t[y_t]

Sequences in a batch have their own lengths: past its length a sequence's
recursion state is carried unchanged, so a padded batch gives the same
results as its sequences one by one. An empty sequence has ``log Z = 0``,
score 0 and all-0 tags. Everything is computed in float32 (potentials are
cast), eagerly, in ``tf.function`` and under XLA, with dynamic batch and time.
"""

import keras
import numpy as np
import tensorflow as tf

DISALLOWED = -1e4  # added to forbidden transitions: never decoded, ~0 probability


def _prepare(potentials, lengths, transitions, start, end):
    """Everything as float32 (mixed precision gives float16 potentials, whose
    logsumexp over long sentences loses too much) and lengths in [0, T]."""
    potentials = tf.cast(potentials, tf.float32)
    num_tags = tf.shape(potentials)[2]
    lengths = tf.clip_by_value(tf.cast(lengths, tf.int32), 0, tf.shape(potentials)[1])
    transitions = tf.cast(transitions, tf.float32)
    start = tf.zeros([num_tags]) if start is None else tf.cast(start, tf.float32)
    end = tf.zeros([num_tags]) if end is None else tf.cast(end, tf.float32)
    return potentials, lengths, transitions, start, end


def _time_major_steps(potentials, lengths):
    """Time-major potentials ``[T + 1, B, K]`` and ``[T + 1, B, 1]`` booleans
    saying whether step t is inside sequence b. The extra step is never
    inside; it keeps ``steps[0]`` defined when T = 0 (a batch of empty
    sequences), so the recursions below need no special case."""
    padded = tf.pad(potentials, [[0, 0], [0, 1], [0, 0]])
    inside = tf.sequence_mask(lengths, tf.shape(padded)[1])
    return tf.transpose(padded, [1, 0, 2]), tf.transpose(inside)[..., None]


def crf_log_norm(potentials, lengths, transitions, start=None, end=None):
    """``log Z`` per sequence, ``[B]``; 0 for an empty sequence."""
    potentials, lengths, transitions, start, end = _prepare(
        potentials, lengths, transitions, start, end)
    steps, inside = _time_major_steps(potentials, lengths)

    def step(alpha, inputs):
        x, ok = inputs
        new = tf.reduce_logsumexp(alpha[:, :, None] + transitions, axis=1) + x
        return tf.where(ok, new, alpha)  # past the end: carry alpha unchanged

    alpha1 = start + steps[0]
    alphas = tf.scan(step, (steps[1:], inside[1:]), initializer=alpha1)
    last = tf.concat([alpha1[None], alphas], axis=0)[-1]  # alpha_n of each sequence
    return tf.where(lengths > 0, tf.reduce_logsumexp(last + end, axis=1), 0.0)


def crf_sequence_score(potentials, tags, lengths, transitions, start=None, end=None):
    """``score(y)`` of the given tag sequences ``[B, T]``, ``[B]``. Tags past
    each length are ignored (they may be any padding value, even -1)."""
    potentials, lengths, transitions, start, end = _prepare(
        potentials, lengths, transitions, start, end)
    max_len = tf.shape(potentials)[1]
    inside = tf.sequence_mask(lengths, max_len)
    tags = tf.where(inside, tf.cast(tags, tf.int32), 0)  # padding -> a valid index
    unary = tf.gather(potentials, tags, batch_dims=2)  # x_t[y_t], [B, T]
    unary = tf.reduce_sum(tf.where(inside, unary, 0.0), axis=1)
    pairs = tf.gather_nd(transitions, tf.stack([tags[:, :-1], tags[:, 1:]], axis=-1))
    binary = tf.reduce_sum(tf.where(inside[:, 1:], pairs, 0.0), axis=1)  # pair (t, t+1): t+1 < n
    padded = tf.pad(tags, [[0, 0], [0, 1]])  # so [:, 0] exists when T = 0
    first, last = padded[:, 0], tf.gather(padded, tf.maximum(lengths - 1, 0), batch_dims=1)
    boundary = tf.where(lengths > 0, tf.gather(start, first) + tf.gather(end, last), 0.0)
    return unary + binary + boundary


def crf_log_likelihood(potentials, tags, lengths, transitions, start=None, end=None):
    """``log p(y | x) = score(y) - log Z`` per sequence, ``[B]``."""
    return (crf_sequence_score(potentials, tags, lengths, transitions, start, end)
            - crf_log_norm(potentials, lengths, transitions, start, end))


def viterbi_decode(potentials, lengths, transitions, start=None, end=None):
    """Best tag sequences ``[B, T]`` int32 (0 past each length) and their
    scores ``[B]`` float32 (0 for an empty sequence)."""
    potentials, lengths, transitions, start, end = _prepare(
        potentials, lengths, transitions, start, end)
    batch, max_len, num_tags = tf.unstack(tf.shape(potentials))
    steps, inside = _time_major_steps(potentials, lengths)
    identity = tf.broadcast_to(tf.range(num_tags)[None, :], [batch, num_tags])

    def forward(carry, inputs):
        delta, _ = carry
        x, ok = inputs
        scores = delta[:, :, None] + transitions  # [B, from, to]
        pointer = tf.argmax(scores, axis=1, output_type=tf.int32)
        new = tf.reduce_max(scores, axis=1) + x
        # Past the end: keep delta, and point every tag back to itself, so
        # backtracking carries the last real tag through the padding.
        return tf.where(ok, new, delta), tf.where(ok, pointer, identity)

    delta1 = start + steps[0]
    deltas, pointers = tf.scan(forward, (steps[1:], inside[1:]), initializer=(delta1, identity))
    final = tf.concat([delta1[None], deltas], axis=0)[-1] + end
    best_last = tf.argmax(final, axis=1, output_type=tf.int32)
    best_score = tf.reduce_max(final, axis=1)

    # pointers[t] maps the tag at step t+1 to the best tag at step t; walking
    # them in reverse from the best final tag gives steps T-1 .. 0.
    earlier = tf.scan(lambda tag, pointer: tf.gather(pointer, tag, batch_dims=1),
                      pointers, initializer=best_last, reverse=True)
    path = tf.transpose(tf.concat([earlier, best_last[None]], axis=0))[:, :max_len]
    path = tf.where(tf.sequence_mask(lengths, max_len), path, 0)
    return path, tf.where(lengths > 0, best_score, 0.0)


SCHEME_PREFIXES = {"bio": ("B", "I"), "iob1": ("B", "I"), "iobes": ("B", "I", "E", "S")}


def allowed_transitions(tags, scheme):
    """Which transitions a tag scheme allows, as boolean arrays
    ``(allowed [K, K], allowed_start [K], allowed_end [K])`` (``allowed[i, j]``:
    tag ``j`` may follow tag ``i``).

    ``tags`` are ``"O"`` and ``PREFIX-TYPE``; ``scheme`` (any case) is ``bio``
    (alias ``iob2``), ``iobes`` or ``iob1``:

    - BIO: ``I-X`` only after ``B-X`` or ``I-X`` (so never first).
    - IOBES: after ``B-X``/``I-X`` only ``I-X``/``E-X``; ``I-X``/``E-X`` only
      after those; a sequence starts and ends outside an entity (first tag
      O/B/S, last tag O/E/S).
    - IOB1 (permissive): only ``B-X`` is restricted, to follow ``B-X`` or
      ``I-X`` (it separates two adjacent X entities, so it is never first).
    """
    key = str(scheme).lower()
    key = "bio" if key == "iob2" else key
    if key not in SCHEME_PREFIXES:
        raise ValueError(f"unknown tag scheme {scheme!r}: expected bio (iob2), iobes or iob1")
    parsed = []
    for tag in tags:
        prefix, _, kind = tag.partition("-")
        if tag != "O" and (prefix not in SCHEME_PREFIXES[key] or not kind):
            raise ValueError(f"bad tag {tag!r} for scheme {key}: expected O or "
                             f"{'/'.join(SCHEME_PREFIXES[key])}-TYPE")
        parsed.append((prefix, kind))

    def may_follow(previous, current):
        (p, p_kind), (c, c_kind) = previous, current
        continues = p in ("B", "I") and p_kind == c_kind  # inside an entity of c's type
        if key == "bio":
            return c != "I" or continues
        if key == "iob1":
            return c != "B" or continues
        if c in ("I", "E"):
            return continues
        return p not in ("B", "I")  # O, B, S only outside an entity

    outside = ("O", "")  # the start behaves like a preceding O
    allowed = np.array([[may_follow(p, c) for c in parsed] for p in parsed], bool)
    allowed = allowed.reshape(len(parsed), len(parsed))
    allowed_start = np.array([may_follow(outside, c) for c in parsed], bool)
    allowed_end = np.array([key != "iobes" or p not in ("B", "I") for p, _ in parsed], bool)
    return allowed, allowed_start, allowed_end


@keras.saving.register_keras_serializable(package="lstm_core")
class CRF(keras.layers.Layer):
    """Linear-chain CRF over per-token tag scores ``[B, T, num_tags]``.

    ``call(potentials, mask=None, lengths=None)`` returns the Viterbi tags
    ``[B, T]`` int32; :meth:`log_likelihood` gives the training objective.
    Lengths come from ``lengths``, else from the (prefix) Keras mask, else
    are the full T. ``allowed`` is ``(allowed, allowed_start, allowed_end)``
    as from :func:`allowed_transitions` (stored as nested lists so the config
    is JSON); forbidden transitions get ``DISALLOWED`` added to their learned
    score. The layer computes in float32 whatever the global dtype policy.
    """

    def __init__(self, num_tags, allowed=None, **kwargs):
        # float32 by default, so a mixed_float16 policy does not make Keras
        # cast the incoming potentials down to float16 before call().
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(num_tags, bool) or not isinstance(num_tags, (int, np.integer)) or num_tags <= 0:
            raise ValueError(f"num_tags must be a positive integer, got num_tags={num_tags!r}")
        self.num_tags = int(num_tags)
        self.allowed = None
        self._penalties = None
        if allowed is not None:
            arrays = [np.asarray(a, bool) for a in allowed]
            shapes = [a.shape for a in arrays]
            k = self.num_tags
            if shapes != [(k, k), (k,), (k,)]:
                raise ValueError(f"allowed must have shapes [({k}, {k}), ({k},), ({k},)] "
                                 f"for num_tags={k}, got {shapes}")
            self.allowed = [a.tolist() for a in arrays]
            self._penalties = [np.where(a, 0.0, DISALLOWED).astype("float32") for a in arrays]
        self.supports_masking = True
        # The weights do not depend on the input shape, and a model may use
        # only log_likelihood() in training, never calling the layer: build now.
        self.build()

    def build(self, input_shape=None):
        k = self.num_tags
        init = keras.initializers.RandomUniform(-0.1, 0.1)

        def weight(shape, name):
            return self.add_weight(shape, initializer=init, name=name, dtype="float32",
                                   autocast=False)

        self.transitions = weight((k, k), "transitions")
        self.start_transitions = weight((k,), "start_transitions")
        self.end_transitions = weight((k,), "end_transitions")
        self.built = True

    def scores(self):
        """Transition, start and end scores with the constraints applied."""
        learned = [tf.convert_to_tensor(w) for w in
                   (self.transitions, self.start_transitions, self.end_transitions)]
        if self._penalties is None:
            return tuple(learned)
        return tuple(w + p for w, p in zip(learned, self._penalties))

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
        """``log p(tags | potentials)`` per sequence, ``[B]`` float32."""
        lengths = self._lengths(potentials, mask, lengths)
        return crf_log_likelihood(potentials, tags, lengths, *self.scores())

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2])

    def compute_output_spec(self, potentials, mask=None, lengths=None):
        return keras.KerasTensor(potentials.shape[:2], dtype="int32")

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        allowed = None if self.allowed is None else [np.asarray(a).tolist() for a in self.allowed]
        return {**super().get_config(), "num_tags": self.num_tags, "allowed": allowed}
