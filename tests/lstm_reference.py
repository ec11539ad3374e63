"""The references the fast layer is tested against: an independent float64
NumPy implementation of the peephole LSTM equations (lstm_core/cells.py
docstring), with finite-difference gradients; and helpers to compare a layer
with its naive ``keras.layers.RNN`` twin (plain autodiff, no fused loop)."""

import keras
import numpy as np
import tensorflow as tf

from lstm_core import PeepholeLSTMCell

EPSILON = 1e-3  # layer-norm epsilon, as in lstm_core.cells


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def run(x, weights, options, mask=None, h0=None, c0=None):
    """Forward pass over ``x`` [B, T, F]; returns (outputs [B,T,out], h, c).

    ``weights`` is a dict with kernel, recurrent_kernel, bias and, as the
    options ask, input/forget/output_peephole, projection_kernel, gamma,
    beta. A masked step keeps the state and outputs zeros.
    """
    batch, steps, _ = x.shape
    units = weights["bias"].shape[0] // 4
    out_size = options.get("num_proj") or units
    h = np.zeros((batch, out_size)) if h0 is None else h0
    c = np.zeros((batch, units)) if c0 is None else c0
    cell_clip, proj_clip = options.get("cell_clip"), options.get("proj_clip")
    outputs = np.zeros((batch, steps, out_size))
    for t in range(steps):
        z = x[:, t] @ weights["kernel"] + h @ weights["recurrent_kernel"]
        if options.get("layer_norm"):
            blocks = z.reshape(batch, 4, units)
            blocks = (blocks - blocks.mean(-1, keepdims=True)) / np.sqrt(
                blocks.var(-1, keepdims=True) + EPSILON)
            z = blocks.reshape(batch, 4 * units) * weights["gamma"] + weights["beta"]
        z = z + weights["bias"]
        z_i, z_f, z_g, z_o = np.split(z, 4, axis=-1)
        if options.get("use_peepholes", True):
            z_i = z_i + weights["input_peephole"] * c
            z_f = z_f + weights["forget_peephole"] * c
        i = sigmoid(z_i)
        f = sigmoid(z_f + options.get("forget_bias", 1.0))
        g = np.tanh(z_g)
        c_new = f * c + i * g
        if cell_clip is not None:
            c_new = np.clip(c_new, -cell_clip, cell_clip)
        if options.get("use_peepholes", True):
            z_o = z_o + weights["output_peephole"] * c_new
        o = sigmoid(z_o)
        h_new = o * np.tanh(c_new)
        if options.get("num_proj"):
            h_new = h_new @ weights["projection_kernel"]
            if proj_clip is not None:
                h_new = np.clip(h_new, -proj_clip, proj_clip)
        keep = np.ones((batch, 1)) if mask is None else mask[:, t, None].astype(float)
        outputs[:, t] = keep * h_new
        h = keep * h_new + (1 - keep) * h
        c = keep * c_new + (1 - keep) * c
    return outputs, h, c


def loss(x, weights, options, probes, mask=None):
    """A scalar that depends on every output, the final h and the final c."""
    outputs, h, c = run(x, weights, options, mask)
    return (outputs * probes[0]).sum() + (h * probes[1]).sum() + (c * probes[2]).sum()


def numeric_gradients(x, weights, options, probes, mask=None, eps=1e-6):
    """Central differences of :func:`loss` w.r.t. x and every weight."""
    x = x.astype(np.float64)
    weights = {k: v.astype(np.float64) for k, v in weights.items()}
    targets = {"inputs": x, **weights}
    grads = {}
    for name, array in targets.items():
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            up = loss(x, weights, options, probes, mask)
            array[index] = saved - eps
            down = loss(x, weights, options, probes, mask)
            array[index] = saved
            grad[index] = (up - down) / (2 * eps)
        grads[name] = grad
    return grads


# The second reference: the generic Keras loop over the same cell. ---------
# keras.layers.RNN(PeepholeLSTMCell) differentiates its step function with
# plain autodiff, independently of lstm_core.fused's hand-written backward
# pass; the tests compare the fast layer with it where the NumPy reference
# would be too slow or does not apply (initial states, directions, XLA).


def naive_twin(fast, sequences_shape):
    """The naive ``keras.layers.RNN`` (or ``Bidirectional`` of one) equivalent
    to the fast ``PeepholeLSTM`` (or ``Bidirectional`` of one) ``fast``, with
    the same options, built and given the same weights."""

    def twin(layer):
        cell = layer.cell
        config = {k: v for k, v in cell.get_config().items() if k not in ("name", "dtype")}
        return keras.layers.RNN(
            PeepholeLSTMCell(**config), return_sequences=layer.return_sequences,
            return_state=layer.return_state, go_backwards=layer.go_backwards,
            zero_output_for_mask=layer.zero_output_for_mask)

    if isinstance(fast, keras.layers.Bidirectional):
        naive = keras.layers.Bidirectional(twin(fast.forward_layer),
                                           backward_layer=twin(fast.backward_layer))
    else:
        naive = twin(fast)
    fast.build(sequences_shape)
    naive.build(sequences_shape)
    naive.set_weights(fast.get_weights())
    return naive


def values_and_grads(layer, x, probes, mask=None, initial_state=None, training=False):
    """``layer``'s outputs (a list) and the gradients of ``sum(output *
    probe)`` over them with respect to ``[x, *initial_state,
    *layer.trainable_weights]``. Runs eagerly or inside ``tf.function``."""
    x = tf.convert_to_tensor(x)
    state = [tf.convert_to_tensor(s) for s in initial_state or []]
    kwargs = dict(initial_state=state) if state else {}
    with tf.GradientTape() as tape:
        tape.watch([x, *state])
        values = layer(x, mask=mask, training=training, **kwargs)
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        loss = sum(tf.reduce_sum(tf.cast(v, tf.float32) * p) for v, p in zip(values, probes))
    return values, tape.gradient(loss, [x, *state, *layer.trainable_weights])


def assert_all_close(got, want, atol=1e-5, rtol=1e-7, names=None):
    """``np.testing.assert_allclose`` over two equally long lists."""
    assert len(got) == len(want), (len(got), len(want))
    for index, (a, b) in enumerate(zip(got, want)):
        label = names[index] if names else f"item {index}"
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   atol=atol, rtol=rtol, err_msg=label)
