r"""Attention over a memory (an encoder's outputs) for sequence-to-sequence
decoders, as TensorFlow Addons' seq2seq attention mechanisms provided them.

For a query ``q`` (a decoder state) and the memory ``m_1 .. m_S`` of one
source sentence, each mechanism scores every source position::

    dot       score_s = g * q . m_s                      Luong et al. (2015)
    general   score_s = g * q . (m_s W)                  Luong et al. (2015), bilinear
    additive  score_s = v . tanh(q W_q + m_s W_m)        Bahdanau et al. (2015)
    normed    score_s = g v/|v| . tanh(q W_q + m_s W_m + b)   (additive, normalize=True)

``g`` is a learned scalar (``scale=True`` for Luong, always with
``normalize=True``, the weight normalization of Salimans & Kingma (2016)
that TensorFlow's normalized Bahdanau attention used); without it ``g = 1``.
The weights are the softmax of the scores over the source positions that are
not padding, and the context is their weighted mean of the memory::

    a_s = softmax(score)_s   (exactly 0 where memory_mask is False)
    c   = sum_s a_s m_s

The memory side of a score (``m_s``, ``m_s W`` or ``m_s W_m``, the *keys*)
does not depend on the query: a decoder computes it once per source with
:meth:`MemoryAttention.memory_keys` and then calls :meth:`MemoryAttention.attend`
at every step. A query is one step ``[batch, query_units]`` or all steps at
once ``[batch, steps, query_units]`` (teacher forcing without input feeding).
The softmax runs in float32 under any dtype policy.
"""

import math

import keras
from keras import ops

from lstm_core.cells import check_positive_int

# Added to the scores of padding: exp() of it is exactly 0 in float32, and
# being finite, a row that is all padding (an empty source) gets a uniform
# softmax, zeroed below, instead of NaN.
PADDING_SCORE = -1e9


def masked_softmax(scores, mask):
    """Softmax over the last axis of float32 ``scores``, exactly 0 where
    ``mask`` (broadcastable, boolean) is False; all 0 for a row with no True."""
    if mask is None:
        return ops.softmax(scores, axis=-1)
    scores = ops.where(mask, scores, PADDING_SCORE)
    return ops.where(mask, ops.softmax(scores, axis=-1), 0.0)


# How far from the diagonal, as a share of the sentence, guided attention
# lets the weights go unpenalised (Tachibana et al. use 0.2 for speech;
# translation reorders words, so a looser band).
GUIDE_WIDTH = 0.4


def diagonal_attention_loss(alignments, source_mask, target_mask, width=GUIDE_WIDTH):
    """Guided attention (Tachibana et al. 2018): the attention weight that
    lies off the diagonal, each ``a[t, s]`` weighted by ``1 - exp(-(t/T -
    s/S)^2 / (2 width^2))`` for a sentence of ``T`` targets and ``S``
    sources, summed per target step and averaged over the real ones.
    ``alignments [batch, target, source]``, boolean masks ``[batch, source]``
    and ``[batch, target]``. In [0, 1): 0 for attention on the diagonal.
    Added to the loss early, it makes the decoder start reading the source
    in order instead of fixing on one position."""
    source_mask, target_mask = ops.cast(source_mask, "float32"), ops.cast(target_mask, "float32")
    sources = ops.maximum(ops.sum(source_mask, axis=1), 1.0)[:, None, None]
    targets = ops.maximum(ops.sum(target_mask, axis=1), 1.0)[:, None, None]
    t = ops.cast(ops.arange(ops.shape(alignments)[1]), "float32")[None, :, None]
    s = ops.cast(ops.arange(ops.shape(alignments)[2]), "float32")[None, None, :]
    off = 1.0 - ops.exp(-ops.square(t / targets - s / sources) / (2.0 * width ** 2))
    mask = target_mask[:, :, None] * source_mask[:, None, :]
    total = ops.sum(ops.cast(alignments, "float32") * off * mask)
    return total / ops.maximum(ops.sum(target_mask), 1.0)


class MemoryAttention(keras.layers.Layer):
    """What the attention mechanisms share: masking, the softmax, the context.

    ``call(query, memory, memory_mask=None)`` returns ``(context,
    alignments)``: ``context`` ``[batch, (steps,) memory_units]`` in the
    compute dtype and ``alignments`` ``[batch, (steps,) src_len]`` float32.
    ``memory_mask`` is ``[batch, src_len]`` booleans (True = a real source
    position); Keras fills it from the memory's own mask (an ``Embedding``
    with ``mask_zero``) when it is not given. Subclasses define
    :meth:`build_scores` (their weights), :meth:`memory_keys` and :meth:`score`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, max_ndim=3)

    def build(self, query_shape, memory_shape):
        if len(memory_shape) != 3:
            raise ValueError(f"{type(self).__name__} expects a memory of rank 3 "
                             f"[batch, src_len, units], got shape {tuple(memory_shape)}")
        self.build_scores(int(query_shape[-1]), int(memory_shape[-1]))

    def build_scores(self, query_units, memory_units):
        """Create the weights of the score for these input sizes."""

    def memory_keys(self, memory):
        """The query-independent half of the score, ``[batch, src_len, ...]``."""
        return ops.cast(memory, self.compute_dtype)

    def score(self, query, keys):
        """Scores ``[batch, steps, src_len]`` of queries ``[batch, steps, q]``."""
        raise NotImplementedError

    def attend(self, query, memory, keys, memory_mask=None):
        """``(context, alignments)`` with precomputed ``keys``; see the class."""
        one_step = len(query.shape) == 2
        query = ops.cast(query, self.compute_dtype)
        if one_step:
            query = query[:, None, :]
        scores = ops.cast(self.score(query, keys), "float32")
        mask = None if memory_mask is None else ops.cast(memory_mask, "bool")[:, None, :]
        alignments = masked_softmax(scores, mask)
        memory = ops.cast(memory, self.compute_dtype)
        context = ops.einsum("bts,bsu->btu", ops.cast(alignments, self.compute_dtype), memory)
        if one_step:
            return context[:, 0], alignments[:, 0]
        return context, alignments

    def call(self, query, memory, memory_mask=None):
        return self.attend(query, memory, self.memory_keys(memory), memory_mask)

    def scalar_weight(self, name, value):
        return self.add_weight((), name=name, initializer=keras.initializers.Constant(value))


@keras.saving.register_keras_serializable(package="lstm_core")
class LuongAttention(MemoryAttention):
    """Luong et al. (2015) multiplicative attention; see the module docstring.

    Args:
        score_mode: ``"dot"`` (``q . m_s``: query and memory must have the
            same size) or ``"general"`` (``q . (m_s W)``, ``W`` is
            ``[memory_units, query_units]``).
        scale: multiply the scores by a learned scalar ``g`` (initially 1).
    """

    def __init__(self, score_mode="general", scale=False, **kwargs):
        super().__init__(**kwargs)
        if score_mode not in ("dot", "general"):
            raise ValueError(f"score_mode must be 'dot' or 'general', got {score_mode!r}")
        self.score_mode = score_mode
        self.scale = bool(scale)

    def build_scores(self, query_units, memory_units):
        if self.score_mode == "dot" and query_units != memory_units:
            raise ValueError(f"dot attention needs queries and memory of one size, got "
                             f"{query_units} and {memory_units}: use 'general' or 'additive'")
        if self.score_mode == "general":
            self.kernel = self.add_weight((memory_units, query_units), name="kernel",
                                          initializer="glorot_uniform")
        if self.scale:
            self.scale_weight = self.scalar_weight("scale", 1.0)

    def memory_keys(self, memory):
        memory = ops.cast(memory, self.compute_dtype)
        return memory if self.score_mode == "dot" else ops.matmul(memory, self.kernel)

    def score(self, query, keys):
        scores = ops.einsum("btq,bsq->bts", query, keys)
        return scores * self.scale_weight if self.scale else scores

    def get_config(self):
        return {**super().get_config(), "score_mode": self.score_mode, "scale": self.scale}


@keras.saving.register_keras_serializable(package="lstm_core")
class BahdanauAttention(MemoryAttention):
    """Bahdanau et al. (2015) additive attention; see the module docstring.

    Args:
        units: size of the hidden layer of the score (``W_q``, ``W_m`` and
            ``v``); None = the query's size.
        normalize: weight-normalize ``v`` (``g v / |v|``, ``g`` learned,
            initially ``sqrt(1 / units)``) and add a bias ``b`` inside the tanh.
    """

    def __init__(self, units=None, normalize=False, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units, allow_none=True)
        self.normalize = bool(normalize)

    def build_scores(self, query_units, memory_units):
        units = self.units or query_units
        self.query_kernel = self.add_weight((query_units, units), name="query_kernel",
                                            initializer="glorot_uniform")
        self.memory_kernel = self.add_weight((memory_units, units), name="memory_kernel",
                                             initializer="glorot_uniform")
        self.score_vector = self.add_weight((units,), name="score_vector",
                                            initializer="glorot_uniform")
        if self.normalize:
            self.scale_weight = self.scalar_weight("scale", math.sqrt(1.0 / units))
            self.score_bias = self.add_weight((units,), name="score_bias", initializer="zeros")

    def memory_keys(self, memory):
        keys = ops.matmul(ops.cast(memory, self.compute_dtype), self.memory_kernel)
        return keys + self.score_bias if self.normalize else keys

    def score(self, query, keys):
        hidden = ops.tanh(ops.matmul(query, self.query_kernel)[:, :, None, :] + keys[:, None])
        v = self.score_vector
        if self.normalize:
            v = self.scale_weight * v * ops.rsqrt(ops.sum(ops.square(v)))
        return ops.einsum("btsu,u->bts", hidden, v)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "normalize": self.normalize}


# The names a recipe chooses an attention by, each with the arguments it fixes.
ATTENTIONS = {
    "dot": (LuongAttention, {"score_mode": "dot"}),
    "general": (LuongAttention, {"score_mode": "general"}),
    "additive": (BahdanauAttention, {}),
}


def make_attention(kind, **options):
    """The attention layer called ``kind`` in :data:`ATTENTIONS`, built with
    ``options`` (``scale`` for dot/general; ``units``, ``normalize`` for
    additive; any layer argument)."""
    if kind not in ATTENTIONS:
        raise ValueError(f"unknown attention {kind!r}; known: {', '.join(ATTENTIONS)}")
    layer_class, fixed = ATTENTIONS[kind]
    return layer_class(**fixed, **options)
