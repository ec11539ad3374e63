"""An independent float64 NumPy reference of the peephole LSTM equations
(lstm_core/cells.py docstring), with finite-difference gradients."""

import numpy as np

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
