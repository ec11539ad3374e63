"""The attentional decoder against a float64 NumPy reference of the equations
in lstm_core/decoder.py's docstring (the LSTM steps from tests/lstm_reference,
the attention from tests/test_attention); steps vs sequences, dropout, XLA,
mixed precision, saving, beam tiling."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_core.beam_search import tile_beams
from lstm_core.decoder import AttentionDecoder, AttentionDecoderCell
from tests import lstm_reference
from tests.test_attention import reference as attention_reference

BATCH, STEPS, SRC, FEATURES, UNITS, PROJ = 3, 4, 5, 3, 5, 4
LENGTHS = np.array([5, 2, 0])  # the last source is empty

SETTINGS = {
    "one-layer": dict(num_layers=1),
    "stacked-residual-clipped-projected": dict(
        num_layers=2, residual=True, output_units=6,
        cell_options=dict(cell_clip=0.8, num_proj=PROJ, proj_clip=0.9, forget_bias=0.5)),
    "no-peepholes": dict(num_layers=2, cell_options=dict(use_peepholes=False)),
}


def batch(seed=0, memory_units=UNITS):
    rng = np.random.default_rng(seed)
    targets = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    memory = rng.normal(size=(BATCH, SRC, memory_units)).astype("float32")
    return targets, memory, np.arange(SRC) < LENGTHS[:, None]


def query_size(settings):
    return settings.get("cell_options", {}).get("num_proj") or UNITS


def make_cell(attention, settings, seed=1, **kwargs):
    """A built cell with random weights."""
    cell = AttentionDecoderCell(UNITS, attention=attention, **settings, **kwargs)
    cell.build((None, FEATURES), (None, None, query_size(settings)))
    rng = np.random.default_rng(seed)
    cell.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32")
                      for w in cell.weights])
    return cell


def random_state(cell, seed=2):
    rng = np.random.default_rng(seed)
    zeros = cell.get_initial_state(BATCH)
    return tf.nest.map_structure(
        lambda z: tf.constant(rng.normal(scale=0.5, size=z.shape).astype("float32")), zeros)


def reference(cell, targets, memory, mask, state):
    """Outputs [B, T, out] and alignments [B, T, S] in float64."""
    state = tf.nest.map_structure(lambda s: np.asarray(s, np.float64), state)
    layers, feed = state["layers"], state["feed"]
    kernel = np.asarray(cell.output_kernel.numpy(), np.float64)
    outputs, alignments = [], []
    for t in range(targets.shape[1]):
        x = targets[:, t].astype(np.float64)
        if cell.input_feeding:
            x = np.concatenate([x, feed], axis=-1)
        for index, rnn in enumerate(cell.rnns):
            weights = {w.name: np.asarray(w.numpy(), np.float64) for w in rnn.weights}
            h0, c0 = layers[index]
            _, h, c = lstm_reference.run(x[:, None], weights, cell.cell_options, h0=h0, c0=c0)
            layers[index] = [h, c]
            x = h + x if cell.residual and index and h.shape == x.shape else h
        context, weights = attention_reference(cell.attention, x[:, None], memory, mask)
        feed = np.tanh(np.concatenate([context[:, 0], x], axis=-1) @ kernel)
        outputs.append(feed)
        alignments.append(weights[:, 0])
    return np.stack(outputs, 1), np.stack(alignments, 1)


@pytest.mark.parametrize("feeding", [True, False], ids=["input-feeding", "no-feeding"])
@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("attention", ["dot", "general", "additive"])
def test_sequence_and_steps_match_numpy_reference(attention, name, feeding):
    settings = SETTINGS[name]
    cell = make_cell(attention, settings, input_feeding=feeding)
    targets, memory, mask = batch(memory_units=query_size(settings))
    state = random_state(cell)
    want_outputs, want_alignments = reference(cell, targets, memory, mask, state)
    outputs, alignments = AttentionDecoder(cell)(targets, memory, mask, initial_state=state)
    np.testing.assert_allclose(outputs, want_outputs, atol=2e-5)
    np.testing.assert_allclose(alignments, want_alignments, atol=2e-5)
    assert (np.asarray(alignments)[~np.broadcast_to(mask[:, None], alignments.shape)] == 0).all()
    prepared = cell.prepare_memory(memory, mask)
    for t in range(STEPS):
        output, alignment, state = cell(targets[:, t], state, prepared)
        np.testing.assert_allclose(output, want_outputs[:, t], atol=2e-5)
        np.testing.assert_allclose(alignment, want_alignments[:, t], atol=2e-5)


@pytest.mark.parametrize("feeding", [True, False], ids=["input-feeding", "no-feeding"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_keras_cells_step_as_they_run_in_sequence(kind, feeding):
    cell = AttentionDecoderCell(UNITS, num_layers=2, cell=kind, input_feeding=feeding)
    decoder = AttentionDecoder(cell)
    targets, memory, mask = batch()
    outputs, alignments = decoder(targets, memory, mask)
    prepared, state = cell.prepare_memory(memory, mask), cell.get_initial_state(BATCH)
    for t in range(STEPS):
        output, alignment, state = cell(targets[:, t], state, prepared)
        np.testing.assert_allclose(output, outputs[:, t], atol=1e-5)
        np.testing.assert_allclose(alignment, alignments[:, t], atol=1e-5)


@pytest.mark.parametrize("feeding", [True, False], ids=["input-feeding", "no-feeding"])
def test_dropout_only_in_training(feeding):
    cell = AttentionDecoderCell(UNITS, num_layers=2, dropout=0.5, input_feeding=feeding, seed=3)
    decoder = AttentionDecoder(cell)
    targets, memory, mask = batch()
    inference = np.asarray(decoder(targets, memory, mask)[0])
    np.testing.assert_array_equal(decoder(targets, memory, mask)[0], inference)
    first, second = (np.asarray(decoder(targets, memory, mask, training=True)[0])
                     for _ in range(2))
    assert not np.allclose(first, second)  # fresh masks per call
    dropped = (first == 0).mean()  # a_t's mask: about half its units
    assert 0.3 < dropped < 0.7 and (inference != 0).all()
    kept = first != 0
    assert not np.allclose(first[kept], 2 * inference[kept])  # layers' masks too


@pytest.mark.parametrize("feeding", [True, False], ids=["input-feeding", "no-feeding"])
def test_xla_loss_and_gradients_match(feeding):
    settings = SETTINGS["stacked-residual-clipped-projected"]
    targets, memory, mask = batch(memory_units=7)
    cell = AttentionDecoderCell(UNITS, attention="general", input_feeding=feeding, bridge="mean",
                                **settings)
    decoder = AttentionDecoder(cell)
    decoder(targets, memory, mask)
    probe = tf.constant(np.random.default_rng(4).normal(size=(BATCH, STEPS, 6)), tf.float32)

    def loss_and_grads(targets, memory):
        with tf.GradientTape() as tape:
            tape.watch([targets, memory])
            outputs, alignments = decoder(targets, memory, mask)
            loss = tf.reduce_sum(outputs * probe) + tf.reduce_sum(alignments[..., 0])
        return loss, tape.gradient(loss, [targets, memory, *decoder.trainable_variables])

    args = [tf.constant(targets), tf.constant(memory)]
    want_loss, want_grads = loss_and_grads(*args)
    assert len(want_grads) == 2 + len(decoder.trainable_variables)
    for grad in want_grads:
        assert np.abs(grad).max() > 0  # every weight learns
    loss, grads = tf.function(loss_and_grads, jit_compile=True)(*args)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("kind", ["peephole_lstm", "gru"])
def test_mean_bridge_starts_from_the_mean_of_the_real_source_positions(kind):
    cell = AttentionDecoderCell(UNITS, num_layers=2, cell=kind, bridge="mean")
    targets, memory, mask = batch()
    decoder = AttentionDecoder(cell)
    outputs = decoder(targets, memory, mask)[0]
    kernel, bias = cell.bridge_kernel.numpy(), cell.bridge_bias.numpy()
    mean = np.stack([memory[row, :n].mean(0) if n else np.zeros(UNITS)
                     for row, n in enumerate(LENGTHS)])
    want = np.tanh(mean @ kernel + bias)  # h, c of layer 1, then layer 2 (a GRU: h only)
    state = cell.initial_state(cell.prepare_memory(memory, mask))
    np.testing.assert_allclose(np.concatenate(tf.nest.flatten(state["layers"]), -1), want,
                               atol=1e-6)
    np.testing.assert_array_equal(state["feed"], 0)
    # Padding changes nothing; the decoder starts there unless given a state.
    padded = np.concatenate([memory, np.ones((BATCH, 2, UNITS), "float32")], 1)
    padded_mask = np.concatenate([mask, np.zeros((BATCH, 2), bool)], 1)
    np.testing.assert_allclose(decoder(targets, padded, padded_mask)[0], outputs, atol=1e-6)
    zero_start = decoder(targets, memory, mask, initial_state=cell.get_initial_state(BATCH))[0]
    assert not np.allclose(zero_start, outputs)


def test_saved_model_round_trip(tmp_path):
    source_ids, target_ids = keras.Input((None,), dtype="int32"), keras.Input((None,),
                                                                              dtype="int32")
    memory = keras.layers.Embedding(9, 6, mask_zero=True)(source_ids)
    targets = keras.layers.Embedding(9, FEATURES)(target_ids)
    cell = AttentionDecoderCell(UNITS, num_layers=2, attention="additive",
                                attention_options=dict(normalize=True), dropout=0.2,
                                cell_options=dict(cell_clip=1.0, num_proj=PROJ), bridge="mean",
                                name="cell")
    outputs, alignments = AttentionDecoder(cell, name="decoder")(targets, memory)
    model = keras.Model([source_ids, target_ids], [outputs, alignments])
    source = np.array([[3, 4, 5, 0], [6, 0, 0, 0]])
    target = np.array([[1, 2, 3], [4, 5, 6]])
    want = model([source, target])
    # The mask came from the source embedding: padding gets no attention.
    np.testing.assert_array_equal(np.asarray(want[1]) > 0, np.broadcast_to(
        source[:, None] > 0, want[1].shape))
    model.save(tmp_path / "decoder.keras")
    loaded = keras.models.load_model(tmp_path / "decoder.keras")
    loaded_cell = loaded.get_layer("decoder").cell
    assert isinstance(loaded_cell, AttentionDecoderCell)
    assert loaded_cell.get_config() == cell.get_config()
    for got, expected in zip(loaded([source, target]), want):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("feeding", [True, False], ids=["input-feeding", "no-feeding"])
def test_mixed_float16_keeps_the_decoder_in_float32(feeding):
    targets, memory, mask = batch()
    float32_decoder = AttentionDecoder(AttentionDecoderCell(UNITS, input_feeding=feeding,
                                                            bridge="mean"))
    want = float32_decoder(targets, memory, mask)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        decoder = AttentionDecoder(AttentionDecoderCell(UNITS, input_feeding=feeding,
                                                        bridge="mean"))
        decoder.build(targets.shape, memory.shape)
        decoder.set_weights(float32_decoder.get_weights())
        assert decoder.cell.compute_dtype == "float32"
        assert all(w.dtype == "float32" for w in decoder.weights)
        for fn in (decoder, tf.function(decoder, jit_compile=True)):
            outputs, alignments = fn(tf.cast(targets, "float16"), tf.cast(memory, "float16"),
                                     mask)
            assert outputs.dtype == "float16" and alignments.dtype == "float32"
            np.testing.assert_allclose(np.asarray(outputs, "float32"), want[0], atol=1e-2)
            np.testing.assert_allclose(alignments, want[1], atol=1e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_tiled_state_and_memory_step_every_beam_alike():
    cell = make_cell("general", SETTINGS["stacked-residual-clipped-projected"])
    targets, memory, mask = batch(memory_units=PROJ)
    state = random_state(cell)
    output, alignment, new_state = cell(targets[:, 0], state, cell.prepare_memory(memory, mask))
    beams = 3
    tiled = cell(tile_beams(targets[:, 0], beams), tile_beams(state, beams),
                 cell.prepare_memory(tile_beams(memory, beams), tile_beams(mask, beams)))
    for got, want in zip(tf.nest.flatten(tiled), tf.nest.flatten((output, alignment, new_state))):
        np.testing.assert_allclose(got, np.repeat(want, beams, axis=0), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"cell_options \['recurrent_dropout'\] are not"):
        AttentionDecoderCell(4, cell_options=dict(recurrent_dropout=0.1))
    with pytest.raises(ValueError, match="unknown attention 'luong'"):
        AttentionDecoderCell(4, attention="luong")
    with pytest.raises(ValueError, match="unknown cell 'rnn'"):
        AttentionDecoderCell(4, cell="rnn")
    with pytest.raises(ValueError, match="dropout must be"):
        AttentionDecoderCell(4, dropout=1.0)
    with pytest.raises(ValueError, match="bridge must be one of zeros, mean, got 'copy'"):
        AttentionDecoderCell(4, bridge="copy")
    with pytest.raises(ValueError, match="dot attention needs queries and memory of one size"):
        AttentionDecoderCell(4, attention="dot").build((None, 3), (None, None, 5))
    with pytest.raises(TypeError, match="takes an AttentionDecoderCell"):
        AttentionDecoder(keras.layers.LSTMCell(4))
