"""The attention layers against a float64 NumPy reference of the scores in
lstm_core/attention.py's docstring; masks, XLA, mixed precision, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_core.attention import (
    BahdanauAttention, LuongAttention, diagonal_attention_loss, make_attention)

BATCH, STEPS, SRC, UNITS = 3, 2, 5, 4
LENGTHS = np.array([5, 2, 3])

KINDS = {
    "dot": ("dot", {}),
    "dot-scaled": ("dot", {"scale": True}),
    "general": ("general", {}),
    "general-scaled": ("general", {"scale": True}),
    "additive": ("additive", {}),
    "additive-3-units": ("additive", {"units": 3}),
    "additive-normed": ("additive", {"normalize": True}),
}


def inputs(seed=0, memory_units=UNITS, src=SRC, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(BATCH, STEPS, UNITS)).astype("float32")
    memory = rng.normal(size=(BATCH, src, memory_units)).astype("float32")
    return query, memory, np.arange(src) < lengths[:, None]


def built(kind, options, memory_units=UNITS, seed=1, **kwargs):
    """The layer with random weights (the scale and bias not at their initial values)."""
    layer = make_attention(kind, **options, **kwargs)
    layer.build((None, UNITS), (None, None, memory_units))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=0.7, size=w.shape).astype("float32")
                       for w in layer.weights])
    return layer


def reference(layer, query, memory, mask):
    """Context [B, T, M] and weights [B, T, S] in float64, from the equations."""
    w = {v.name: np.asarray(v.numpy(), np.float64) for v in layer.weights}
    q, m = query.astype(np.float64), memory.astype(np.float64)
    if isinstance(layer, LuongAttention):
        keys = m if layer.score_mode == "dot" else m @ w["kernel"]
        scores = np.einsum("btq,bsq->bts", q, keys) * w.get("scale", 1.0)
    else:
        v = w["score_vector"]
        inner = (q @ w["query_kernel"])[:, :, None] + (m @ w["memory_kernel"])[:, None]
        if layer.normalize:
            v = w["scale"] * v / np.linalg.norm(v)
            inner = inner + w["score_bias"]
        scores = np.tanh(inner) @ v
    scores = np.where(mask[:, None], scores, -np.inf)
    with np.errstate(invalid="ignore"):  # an empty source: no weights at all
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights = np.nan_to_num(weights / weights.sum(-1, keepdims=True))
    return weights @ m, weights


@pytest.mark.parametrize("one_step", [False, True], ids=["all-steps", "one-step"])
@pytest.mark.parametrize("name", KINDS)
def test_matches_numpy_reference(name, one_step):
    kind, options = KINDS[name]
    memory_units = UNITS if kind == "dot" else 6
    query, memory, mask = inputs(memory_units=memory_units)
    layer = built(kind, options, memory_units)
    want_context, want_weights = reference(layer, query, memory, mask)
    if one_step:
        query, want_context, want_weights = query[:, 0], want_context[:, 0], want_weights[:, 0]
    context, weights = layer(query, memory, mask)
    assert context.shape == want_context.shape and weights.shape == want_weights.shape
    assert context.dtype == weights.dtype == "float32"
    np.testing.assert_allclose(context, want_context, atol=1e-5)
    np.testing.assert_allclose(weights, want_weights, atol=1e-6)


@pytest.mark.parametrize("name", KINDS)
def test_padding_gets_zero_weight_and_extra_padding_changes_nothing(name):
    kind, options = KINDS[name]
    query, memory, mask = inputs()
    layer = built(kind, options)
    context, weights = (np.asarray(t) for t in layer(query, memory, mask))
    assert (weights[~np.broadcast_to(mask[:, None], weights.shape)] == 0.0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    # Three more padded positions holding large garbage: the same results.
    garbage = np.random.default_rng(2).normal(scale=50, size=(BATCH, 3, UNITS)).astype("float32")
    longer = np.concatenate([memory, garbage], axis=1)
    longer_mask = np.pad(mask, [(0, 0), (0, 3)])
    longer_context, longer_weights = layer(query, longer, longer_mask)
    np.testing.assert_allclose(longer_context, context, atol=1e-6)
    np.testing.assert_allclose(longer_weights[..., :SRC], weights, atol=1e-7)
    assert (np.asarray(longer_weights)[..., SRC:] == 0.0).all()
    # One row at a time, without padding: the same results.
    for row, n in enumerate(LENGTHS):
        alone_context, alone_weights = layer(query[row:row + 1], memory[row:row + 1, :n])
        np.testing.assert_allclose(alone_context[0], context[row], atol=1e-6)
        np.testing.assert_allclose(alone_weights[0], weights[row, :, :n], atol=1e-6)


def test_empty_source_row_attends_to_nothing():
    query, memory, _ = inputs(lengths=np.array([0, 2, 0]))
    mask = np.arange(SRC) < np.array([0, 2, 0])[:, None]
    for kind in ("dot", "general", "additive"):
        context, weights = (np.asarray(t) for t in built(kind, {})(query, memory, mask))
        assert np.isfinite(context).all() and np.isfinite(weights).all()
        assert (weights[[0, 2]] == 0).all() and (context[[0, 2]] == 0).all()
        np.testing.assert_allclose(weights[1].sum(-1), 1.0, atol=1e-6)


def test_memory_mask_comes_from_the_memory_keras_mask():
    ids = keras.Input((None,), dtype="int32")
    query = keras.Input((UNITS,))
    memory = keras.layers.Embedding(7, UNITS, mask_zero=True)(ids)
    attention = make_attention("general")
    model = keras.Model([query, ids], attention(query, memory))
    tokens = np.array([[3, 4, 0, 0], [5, 6, 1, 0]])
    q = np.random.default_rng(0).normal(size=(2, UNITS)).astype("float32")
    _, weights = model([q, tokens])
    np.testing.assert_array_equal(np.asarray(weights) > 0, tokens > 0)


@pytest.mark.parametrize("name", ["dot-scaled", "general", "additive-normed"])
def test_saved_model_round_trip(name, tmp_path):
    kind, options = KINDS[name]
    query_in, memory_in = keras.Input((None, UNITS)), keras.Input((None, UNITS))
    mask_in = keras.Input((None,), dtype="bool")
    layer = make_attention(kind, **options, name="attention")
    model = keras.Model([query_in, memory_in, mask_in], layer(query_in, memory_in, mask_in))
    model.set_weights([w + 0.3 for w in model.get_weights()])
    batch = inputs()
    model.save(tmp_path / "attention.keras")
    loaded = keras.models.load_model(tmp_path / "attention.keras")
    copy = loaded.get_layer("attention")
    assert type(copy) is type(layer) and copy.get_config() == layer.get_config()
    for got, want in zip(loaded(batch), model(batch)):
        np.testing.assert_array_equal(got, want)


def test_xla_matches_eager_for_two_shapes():
    for kind in ("dot", "general", "additive"):
        layer = built(kind, {"normalize": True} if kind == "additive" else {})
        compiled = tf.function(layer, jit_compile=True)
        query, memory, mask = inputs()
        for batch in [(query, memory, mask), (query[:2, 0], memory[:2, :3], mask[:2, :3])]:
            for got, want in zip(compiled(*batch), layer(*batch)):
                np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_mixed_float16_softmax_in_float32(kind):
    query, memory, mask = inputs()
    float32_layer = built(kind, {})
    want_context, want_weights = float32_layer(query, memory, mask)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = built(kind, {})
        assert all(w.dtype == "float32" for w in layer.weights)
        layer.set_weights(float32_layer.get_weights())
        for fn in (layer, tf.function(layer, jit_compile=True)):
            context, weights = fn(query, memory, mask)
            assert context.dtype == "float16" and weights.dtype == "float32"
            np.testing.assert_allclose(np.asarray(context, "float32"), want_context, atol=2e-2)
            np.testing.assert_allclose(weights, want_weights, atol=1e-2)
            assert (np.asarray(weights)[~np.broadcast_to(mask[:, None], weights.shape)] == 0).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_arguments():
    query, memory, _ = inputs(memory_units=6)
    with pytest.raises(ValueError, match="dot attention needs queries and memory of one size"):
        make_attention("dot")(query, memory)
    with pytest.raises(ValueError, match="unknown attention 'bilinear'"):
        make_attention("bilinear")
    with pytest.raises(ValueError, match="score_mode must be"):
        LuongAttention("concat")
    with pytest.raises(ValueError, match="units=0"):
        BahdanauAttention(units=0)
    with pytest.raises(ValueError, match="memory of rank 3"):
        make_attention("general")(query, memory[:, 0])


def guided_loss_loop(alignments, source_lengths, target_lengths, width):
    """The guided-attention loss one weight at a time (Tachibana et al. 2018)."""
    total = 0.0
    for a, S, T in zip(alignments, source_lengths, target_lengths):
        for t in range(T):
            for s in range(S):
                total += a[t, s] * (1 - np.exp(-(t / T - s / S) ** 2 / (2 * width ** 2)))
    return total / sum(target_lengths)


def test_diagonal_attention_loss_matches_a_loop_and_favours_the_diagonal():
    rng = np.random.default_rng(0)
    alignments = rng.random((2, 4, 5)).astype("float32")
    source_lengths, target_lengths = [5, 3], [4, 2]
    source_mask = np.arange(5)[None] < np.array(source_lengths)[:, None]
    target_mask = np.arange(4)[None] < np.array(target_lengths)[:, None]
    got = diagonal_attention_loss(alignments, source_mask, target_mask, width=0.3)
    assert float(got) == pytest.approx(
        guided_loss_loop(alignments, source_lengths, target_lengths, 0.3), rel=1e-5)
    # one-hot attention along the diagonal costs nothing; along the anti-diagonal, a lot
    diagonal, anti = np.zeros((1, 4, 4), "float32"), np.zeros((1, 4, 4), "float32")
    diagonal[0, range(4), range(4)] = 1.0
    anti[0, range(4), range(3, -1, -1)] = 1.0
    full = np.ones((1, 4), bool)
    assert float(diagonal_attention_loss(diagonal, full, full)) == pytest.approx(0.0, abs=1e-6)
    assert float(diagonal_attention_loss(anti, full, full)) > 0.5
