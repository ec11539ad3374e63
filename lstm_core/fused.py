"""The fast recurrence behind :class:`lstm_core.PeepholeLSTM`.

Autodiff through a ``tf.while_loop`` stacks every intermediate and computes
the weight gradients as many small per-step matrix products; on a CPU that,
not the forward pass, is what makes a custom LSTM slow. This module runs the
recurrence of :func:`lstm_core.cells.lstm_gates` with a hand-written backward
pass instead:

* forward: only ``h @ U`` and elementwise work per step (the input
  projection ``x W + b`` for all steps is one product outside the loop);
* backward: a reverse loop that does only ``dz @ U^T`` and elementwise work
  (the peepholes' gradient is summed there too); the gradients of ``U`` and
  the projection are then single large products over all ``[T * B]`` rows.

Both loops carry the slices of their per-step inputs in the loop state,
read one step ahead, instead of indexing ``xz[t]`` where they are used: XLA's
CPU backend cannot vectorize an elementwise kernel that contains a slice at a
runtime index (the index may alias the output, so it is reloaded for every
element), and fuses such a slice into the gate arithmetic. Read ahead, the
slice is a copy of its own and the gate kernels vectorize (a plain LSTM
forward loop runs 1.6x faster; see benchmarks/RESULTS.md for this layer).

Everything is time-major and float32. It runs eagerly, in ``tf.function``
and under XLA, and is device-agnostic.
"""

import tensorflow as tf

from lstm_core.cells import clip, lstm_gates


def _inside(clipped, limit):
    """Where a clip passed its gradient, from the clipped value: a value
    clipped to the limit lay outside (exactly at the limit is measure zero)."""
    return tf.cast(tf.abs(clipped) < limit, clipped.dtype)


def _tensor_array(size):
    # Kept after read: the backward loop reads each step, then the weight
    # gradients stack them all.
    return tf.TensorArray(tf.float32, size=size, clear_after_read=False)


def _flat(x):
    return tf.reshape(x, [-1, x.shape[-1]])


def _slices(sequences, t, empty):
    """Step ``t`` of each ``[T, ...]`` sequence; ``empty`` for an absent (None) one."""
    return tuple(empty if seq is None else seq[t] for seq in sequences)


def fused_lstm(xz, mask, h0, c0, recurrent_kernel, peepholes=None, projection=None,
               *, forget_bias=1.0, cell_clip=None, proj_clip=None, training=True,
               zero_masked_outputs=True):
    """Run the peephole LSTM recurrence over precomputed input projections.

    Args:
        xz: ``[T, B, 4 * units]`` float32, ``x_t W + b`` for every step;
            ``T >= 1``.
        mask: ``[T, B]`` bool or None. At a masked step the state is kept and
            the output is zero (with ``zero_masked_outputs=False``: the kept
            output).
        h0, c0: initial output ``[B, out]`` and cell state ``[B, units]``.
        recurrent_kernel: ``U``, ``[out, 4 * units]``.
        peepholes: ``[3, units]`` (input, forget, output) or None.
        projection: ``P``, ``[units, out]`` or None.
        training: use the hand-written backward pass. Inference runs the
            forward loop alone, saving nothing for a backward pass (plain
            autodiff still works there), and so exports to a SavedModel,
            which cannot hold a gradient that captures loop state.
        zero_masked_outputs: see ``mask``.

    Returns:
        ``(outputs [T, B, out], h_T, c_T)``.
    """
    use_mask = mask is not None
    zero_masked = use_mask and zero_masked_outputs
    use_peepholes = peepholes is not None
    use_projection = projection is not None
    clip_projection = use_projection and proj_clip is not None
    # tf.custom_gradient takes tensors only: absent parts travel as empty
    # placeholders and get no gradient.
    empty = tf.zeros([0], tf.float32)
    keep = tf.cast(mask, tf.float32)[..., None] if use_mask else empty
    peepholes = peepholes if use_peepholes else empty
    projection = projection if use_projection else empty

    def forward(xz, keep, h0, c0, u, peep, proj, save):
        """The forward loop. Returns the outputs, the final state and the
        stacked outputs ``H`` (``[T + 1, ...]``, the initial state first),
        with ``save`` also the cell states ``C`` (likewise) and the gate
        activations ``G`` for the backward pass, which derives all else it
        needs from these three: each extra per-step write costs more here
        than recomputing a product."""
        steps = tf.shape(xz)[0]
        peep_parts = tf.unstack(peep) if use_peepholes else None
        per_step = (xz, keep if use_mask else None)

        def step(t, h, c, now, h_ta, *saved):
            # now: step t's slices, read one step ahead (module docstring).
            x, k = now
            z = x + tf.matmul(h, u)
            i, f, g, o, c_new = lstm_gates(z, c, peep_parts, forget_bias, cell_clip)
            h_new = o * tf.tanh(c_new)
            if use_projection:
                h_new = clip(tf.matmul(h_new, proj), proj_clip)
            if use_mask:
                h_new = k * h_new + (1.0 - k) * h
                c_new = k * c_new + (1.0 - k) * c
            if save:
                c_ta, g_ta = saved
                saved = (c_ta.write(t + 1, c_new), g_ta.write(t, tf.concat([i, f, g, o], axis=-1)))
            ahead = _slices(per_step, tf.minimum(t + 1, steps - 1), empty)
            return (t + 1, h_new, c_new, ahead, h_ta.write(t + 1, h_new), *saved)

        # Only the arrays that get written travel in the loop: autodiff under
        # XLA (of the inference loop) cannot handle one that never is.
        saved = (_tensor_array(steps + 1).write(0, c0), _tensor_array(steps)) if save else ()
        _, h_last, c_last, _, h_ta, *saved = tf.while_loop(
            lambda t, *_: t < steps,
            step,
            (tf.constant(0), h0, c0, _slices(per_step, 0, empty),
             _tensor_array(steps + 1).write(0, h0), *saved),
            maximum_iterations=steps,  # lets XLA size autodiff's accumulators
        )
        states_h = h_ta.stack()
        outputs = states_h[1:] * keep if zero_masked else states_h[1:]
        return outputs, h_last, c_last, tuple([states_h] + [ta.stack() for ta in saved])

    if not training:
        return forward(xz, keep, h0, c0, recurrent_kernel, peepholes, projection, False)[:3]

    @tf.custom_gradient
    def run(xz, keep, h0, c0, u, peep, proj):
        outputs, h_last, c_last, (states_h, states_c, gates) = forward(
            xz, keep, h0, c0, u, peep, proj, True)

        def grad(d_outputs, d_h_last, d_c_last):
            if d_outputs is None:
                d_outputs = tf.zeros_like(outputs)
            elif zero_masked:
                d_outputs *= keep  # a zeroed output depends on nothing
            d_h_last = tf.zeros_like(h_last) if d_h_last is None else d_h_last
            d_c_last = tf.zeros_like(c_last) if d_c_last is None else d_c_last
            steps = tf.shape(xz)[0]
            u_t = tf.transpose(u)
            proj_t = tf.transpose(proj) if use_projection else None
            if use_peepholes:
                p_i, p_f, p_o = tf.unstack(peep)

            # What step t reads, as [T, ...] sequences.
            per_step = (
                gates, states_c[:-1], states_c[1:], d_outputs,
                keep if use_mask else None, states_h[1:] if clip_projection else None,
            )

            def backward_step(t, dh, dc, now, dz_ta, dh_proj_ta, d_peep):
                # now: step t's slices, read one step ahead (module docstring).
                gate, c_prev, c_new, d_out, k, h_new = now
                i, f, g, o = tf.split(gate, 4, axis=-1)
                dh_new = d_out + dh
                dc_new = dc
                if use_mask:
                    # A masked step passes the state's gradient straight on.
                    dh_new, dh_pass = k * dh_new, (1.0 - k) * dh_new
                    dc_new, dc_pass = k * dc, (1.0 - k) * dc
                if use_projection:
                    if clip_projection:
                        dh_new = dh_new * _inside(h_new, proj_clip)
                    dh_proj_ta = dh_proj_ta.write(t, dh_new)
                    dm = tf.matmul(dh_new, proj_t)
                else:
                    dm = dh_new
                tanh_c = tf.tanh(c_new)
                dz_o = dm * tanh_c * o * (1.0 - o)
                dc_cur = dc_new + dm * o * (1.0 - tanh_c * tanh_c)
                if use_peepholes:
                    dc_cur += dz_o * p_o
                if cell_clip is not None:
                    dc_cur *= _inside(c_new, cell_clip)
                dz_i = dc_cur * g * i * (1.0 - i)
                dz_f = dc_cur * c_prev * f * (1.0 - f)
                dz_g = dc_cur * i * (1.0 - g * g)
                dc_prev = dc_cur * f
                if use_peepholes:
                    dc_prev += dz_i * p_i + dz_f * p_f
                    # Summed step by step: one sum over all T * B rows after
                    # the loop runs several times slower under XLA on a CPU.
                    d_peep += tf.reduce_sum(
                        tf.stack([dz_i * c_prev, dz_f * c_prev, dz_o * c_new]), axis=1)
                dz = tf.concat([dz_i, dz_f, dz_g, dz_o], axis=-1)
                dh_prev = tf.matmul(dz, u_t)
                if use_mask:
                    dh_prev += dh_pass
                    dc_prev += dc_pass
                ahead = _slices(per_step, tf.maximum(t - 1, 0), empty)
                return t - 1, dh_prev, dc_prev, ahead, dz_ta.write(t, dz), dh_proj_ta, d_peep

            _, dh0, dc0, _, dz_ta, dh_proj_ta, d_peep = tf.while_loop(
                lambda t, *_: t >= 0,
                backward_step,
                (
                    steps - 1, d_h_last, d_c_last, _slices(per_step, steps - 1, empty),
                    _tensor_array(steps), _tensor_array(steps), tf.zeros_like(peep),
                ),
            )
            dz = dz_ta.stack()
            # Weight gradients: one large product each over all T * B rows.
            du = tf.matmul(_flat(states_h[:-1]), _flat(dz), transpose_a=True)
            d_proj = tf.zeros_like(proj)
            if use_projection:
                m = tf.split(gates, 4, axis=-1)[3] * tf.tanh(states_c[1:])
                d_proj = tf.matmul(_flat(m), _flat(dh_proj_ta.stack()), transpose_a=True)
            return dz, tf.zeros_like(keep), dh0, dc0, du, d_peep, d_proj

        return (outputs, h_last, c_last), grad

    return run(xz, keep, h0, c0, recurrent_kernel, peepholes, projection)
