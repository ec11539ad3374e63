"""PeepholeLSTMCell and PeepholeLSTM against the NumPy reference: outputs,
states and gradients for every combination of options."""

import itertools
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_core import PeepholeLSTM, PeepholeLSTMCell
from tests import lstm_reference as reference

BATCH, STEPS, FEATURES, UNITS, PROJ = 2, 4, 3, 3, 2

OPTION_GRID = [
    dict(use_peepholes=peep, cell_clip=cell_clip, num_proj=num_proj, proj_clip=proj_clip,
         layer_norm=layer_norm, forget_bias=0.7)
    for peep, cell_clip, (num_proj, proj_clip), layer_norm in itertools.product(
        [True, False], [None, 0.5], [(None, None), (PROJ, None), (PROJ, 0.3)], [False, True])
]


def option_id(options):
    return "-".join(f"{k}={v}" for k, v in options.items() if v not in (None, False))


def random_weights(layer, rng):
    return {w.name: rng.normal(scale=0.6, size=w.shape).astype("float32") for w in layer.weights}


def tf_values_and_grads(layer, x, weights, probes, mask=None, training=False):
    layer.build(x.shape)
    for variable in layer.weights:
        variable.assign(weights[variable.name])
    values, grads = reference.values_and_grads(layer, x, probes, mask, training=training)
    names = ["inputs"] + [w.name for w in layer.trainable_weights]
    return values, dict(zip(names, grads))


@pytest.mark.parametrize("masked", [True, False], ids=["masked", "unmasked"])
@pytest.mark.parametrize("options", OPTION_GRID, ids=option_id)
def test_matches_numpy_reference_with_gradients(options, masked):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    # Unmasked, the fast layer runs lstm_core.fused without a mask at all.
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool) if masked else None
    out_size = options["num_proj"] or UNITS
    probes = [rng.normal(size=shape) for shape in
              [(BATCH, STEPS, out_size), (BATCH, out_size), (BATCH, UNITS)]]
    layers = {
        "naive": keras.layers.RNN(PeepholeLSTMCell(UNITS, **options), return_sequences=True,
                                  return_state=True, zero_output_for_mask=True),
        "fast": PeepholeLSTM(UNITS, return_sequences=True, return_state=True, **options),
    }
    layers["fast"].build(x.shape)
    weights = random_weights(layers["fast"], rng)
    expected = reference.run(x.astype(np.float64), weights, options, mask)
    expected_grads = reference.numeric_gradients(x, weights, options, probes, mask)
    # training=True takes the hand-written backward pass, False plain autodiff.
    for (name, layer), training in itertools.product(layers.items(), [True, False]):
        values, grads = tf_values_and_grads(layer, x, weights, probes, mask, training)
        for got, want in zip(values, expected):
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
        for key, want in expected_grads.items():
            np.testing.assert_allclose(grads[key], want, atol=1e-5, err_msg=f"{name}: d/d{key}")


def test_clip_bounds_cell_state_and_projection():
    rng = np.random.default_rng(1)
    x = rng.normal(scale=5.0, size=(4, 20, 3)).astype("float32")
    layer = PeepholeLSTM(8, num_proj=4, cell_clip=0.25, proj_clip=0.1,
                         return_sequences=True, return_state=True, forget_bias=5.0,
                         kernel_initializer=keras.initializers.RandomNormal(stddev=3.0))
    outputs, h, c = layer(x)
    assert np.abs(c).max() <= 0.25 + 1e-6 and np.abs(c).max() > 0.2
    assert np.abs(outputs).max() <= 0.1 + 1e-6


def test_forget_bias_is_added_at_run_time():
    x = np.zeros((1, 1, 2), "float32")
    for bias in (0.0, 3.0):
        layer = PeepholeLSTM(2, forget_bias=bias, return_state=True, bias_initializer="ones",
                             use_peepholes=False)
        _, _, c = layer(x, initial_state=[np.zeros((1, 2), "float32"), np.ones((1, 2), "float32")])
        # c = sigmoid(1 + bias) * 1 + sigmoid(1) * tanh(1)
        want = 1 / (1 + np.exp(-(1 + bias))) + np.tanh(1) / (1 + np.exp(-1))
        np.testing.assert_allclose(c, np.full((1, 2), want), rtol=1e-6)


def test_dropout_uses_one_mask_per_sequence():
    """Keras semantics: an input feature dropped for a sequence is dropped at
    every step, so its gradient is zero at every step of that sequence."""
    x = tf.constant(np.random.default_rng(2).normal(size=(16, 5, 6)).astype("float32"))
    layer = PeepholeLSTM(4, dropout=0.5, seed=3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    grad = np.abs(tape.gradient(y, x).numpy())  # [B, T, F]
    dropped = (grad == 0).all(axis=1)
    assert dropped.any() and not dropped.all()
    assert ((grad == 0).any(axis=1) == dropped).all()
    np.testing.assert_array_equal(layer(x, training=False), layer(x, training=False))


def test_recurrent_dropout_trains_on_the_fallback_loop():
    layer = PeepholeLSTM(4, recurrent_dropout=0.5, cell_clip=1.0, seed=0)
    x = np.ones((3, 5, 2), "float32")
    assert layer.uses_fast_path(training=False) and not layer.uses_fast_path(training=True)
    assert not np.allclose(layer(x, training=True), layer(x, training=False))


@pytest.mark.parametrize("argument, value", [
    ("units", 0), ("units", -3), ("units", 2.5), ("units", True),
    ("num_proj", 0), ("num_proj", -2),
    ("cell_clip", -1.0), ("cell_clip", 0.0), ("cell_clip", "1"),
    ("proj_clip", -0.5), ("proj_clip", 0),
    ("dropout", 1.5), ("dropout", 1.0), ("dropout", -0.1), ("dropout", "0.5"),
    ("recurrent_dropout", 1.0), ("recurrent_dropout", -0.2), ("recurrent_dropout", 2),
    ("forget_bias", "1.0"),
])
def test_bad_arguments_name_argument_and_value(argument, value):
    kwargs = {"units": 4, "num_proj": 2 if argument == "proj_clip" else None, argument: value}
    # The message starts with the argument's name and quotes "name=value".
    message = rf"^{argument} .*(?<!\w){re.escape(f'{argument}={value!r}')}"
    for make in (PeepholeLSTMCell, PeepholeLSTM):
        with pytest.raises(ValueError, match=message):
            make(**kwargs)


def test_proj_clip_needs_a_projection():
    with pytest.raises(ValueError, match="proj_clip=0.5 needs a projection"):
        PeepholeLSTMCell(4, proj_clip=0.5)


def test_numpy_integers_are_accepted_as_sizes():
    config = PeepholeLSTM(np.int64(4), num_proj=np.int32(2)).get_config()
    assert (type(config["units"]), type(config["num_proj"])) == (int, int)


def test_wrong_input_rank_is_named():
    with pytest.raises(ValueError, match=r"rank 3 \[batch, time, features\].*\(2, 5\)"):
        PeepholeLSTM(4)(np.zeros((2, 5), "float32"))
    built = PeepholeLSTM(4)
    built(np.zeros((2, 5, 3), "float32"))
    for shape in [(2, 5), (2, 5, 3, 1)]:
        with pytest.raises(ValueError, match=r"rank 3 .*" + re.escape(str(shape))):
            built(np.zeros(shape, "float32"))
    with pytest.raises(ValueError, match=r"rank 2 \[batch, features\]"):
        PeepholeLSTMCell(4).build((2, 5, 3))
