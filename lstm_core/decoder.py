r"""Luong et al. (2015)'s attentional LSTM decoder: one step at a time (greedy
and beam search decoding) and over a whole target sequence (teacher forcing).

At target step t, with ``y_t`` the embedded previous target token::

    x_t = [y_t; a_{t-1}]                      input feeding (x_t = y_t without it)
    h_t = LSTM_n(... LSTM_1(x_t))             stacked cells, dropout between them
    c_t, alignments_t = attention(h_t, memory)
    a_t = dropout(tanh(W_c [c_t; h_t]))       the attentional vector

The state before the first step is zeros, or with ``bridge="mean"`` (as in
Nematus, Sennrich et al. 2017) comes from the source: each layer's ``h`` and
``c`` are ``tanh(mean(memory) W + b)``, the mean over the real source
positions. Without a bridge the decoder reads the source only through
attention, which must then carry the gist of the sentence as well as the
word in focus.

``a_t`` is the step's output (a softmax layer outside turns it into the next
token's distribution) and, with input feeding, the next step's extra input,
so the decoder knows what it attended to before. The query is the top
layer's new output for every attention type (Luong's order; TensorFlow
Addons' ``AttentionWrapper`` used it for Bahdanau attention too).

Dropout (rate ``dropout``) applies to the input of every layer but the first
and to ``a_t``, with a fresh mask at every step; dropout of the embeddings
is the model's business. The cells' own ``dropout`` and
``recurrent_dropout`` are not available: their masks need a
``keras.layers.RNN`` around the cell, which this step-by-step loop is not.

Without input feeding nothing in the recurrence depends on the attention, so
teacher forcing runs each layer over the whole sequence in one call (the
fused :class:`~lstm_core.PeepholeLSTM` path) and attends for all steps at once.

Everything runs in float32 whatever the dtype policy: the attentional vector
is part of the recurrence (see :mod:`lstm_core.cells`).
"""

import keras
import tensorflow as tf
from keras import ops

from lstm_core.attention import make_attention
from lstm_core.cells import check_positive_int, check_rate
from lstm_core.layers import make_rnn

# The cells' own dropout needs a keras.layers.RNN around the cell (see above).
CELL_DROPOUTS = frozenset({"dropout", "recurrent_dropout"})
#: Where the state before the first step comes from (see above).
BRIDGES = ("zeros", "mean")


def state_sizes(cell):
    """A Keras RNN cell's state sizes as a list (a GRU cell's is an int)."""
    sizes = cell.state_size
    return list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]


@keras.saving.register_keras_serializable(package="lstm_core")
class AttentionDecoderCell(keras.layers.Layer):
    """One step of the attentional decoder (equations in the module docstring).

    ``cell(inputs, state, memory, training=False)`` takes the embedded
    previous tokens ``[batch, features]``, the state (from
    :meth:`get_initial_state` or the previous step) and the memory from
    :meth:`prepare_memory`, and returns ``(outputs, alignments, state)``:
    ``a_t`` ``[batch, output_units]``, the attention weights ``[batch,
    src_len]`` and the new state. The state is a dict of ``[batch, ...]``
    tensors: ``{"layers": [[h, c], ...] per layer, "feed": a_{t-1}}``. For
    beam search, tile the state and the memory per beam
    (:func:`lstm_core.beam_search.tile_beams`; tile the raw encoder outputs
    and mask, then call :meth:`prepare_memory`: it is cheaper).

    Args:
        units: units of every recurrent layer.
        num_layers: how many recurrent layers.
        attention: ``"dot"``, ``"general"`` or ``"additive"``
            (:data:`lstm_core.attention.ATTENTIONS`).
        attention_options: arguments of the attention layer (``scale``;
            ``units``, ``normalize``).
        output_units: size of ``a_t``; None = ``units``.
        input_feeding: feed ``a_{t-1}`` into the first layer (Luong et al.).
        dropout: rate of the dropout between layers and on ``a_t``.
        residual: add a layer's input to its output where sizes match (not
            the first layer's, whose input is the embedding; Wu et al. 2016).
        cell: a recurrent layer from :data:`lstm_core.layers.RNN_LAYERS`
            (its cell does the steps): ``"peephole_lstm"``, ``"lstm"``, ``"gru"``.
        cell_options: arguments of every recurrent layer (``cell_clip``,
            ``num_proj``, ``use_peepholes``, ...), not ``dropout`` or
            ``recurrent_dropout``.
        bridge: the state before the first step: ``"zeros"``, or ``"mean"``
            from the memory (see the module docstring; :meth:`initial_state`).
        seed: seed of the dropout masks.
    """

    def __init__(self, units, num_layers=1, attention="general", attention_options=None,
                 output_units=None, input_feeding=True, dropout=0.0, residual=False,
                 cell="peephole_lstm", cell_options=None, bridge="zeros", seed=None, **kwargs):
        super().__init__(**kwargs)
        if self.dtype_policy.compute_dtype != self.dtype_policy.variable_dtype:
            self.dtype_policy = self.dtype_policy.variable_dtype  # float32, see the module
        self.units = check_positive_int("units", units)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.output_units = check_positive_int("output_units", output_units, allow_none=True)
        self.output_units = self.output_units or self.units
        check_rate("dropout", dropout)
        self.cell_options = dict(cell_options or {})
        if CELL_DROPOUTS & set(self.cell_options):
            raise ValueError(f"cell_options {sorted(CELL_DROPOUTS & set(self.cell_options))} are "
                             "not available in a decoder cell: use its dropout argument")
        self.attention_name = attention
        self.attention_options = dict(attention_options or {})
        self.input_feeding = bool(input_feeding)
        self.dropout = dropout
        self.residual = bool(residual)
        self.cell = cell
        if bridge not in BRIDGES:
            raise ValueError(f"bridge must be one of {', '.join(BRIDGES)}, got {bridge!r}")
        self.bridge = bridge
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.rnns = [
            make_rnn(cell, self.units, return_sequences=True, return_state=True,
                     dtype=self.dtype_policy, name=f"{cell}_{index}", **self.cell_options)
            for index in range(self.num_layers)
        ]
        self.attention = make_attention(attention, dtype=self.dtype_policy, name="attention",
                                        **self.attention_options)

    def build(self, inputs_shape, memory_shape):
        # Called by Keras with the shapes of call()'s arguments, where the
        # memory is prepare_memory's dict; by hand, with the encoder outputs'.
        if isinstance(memory_shape, dict):
            memory_shape = memory_shape["values"]
        size = inputs_shape[-1] + (self.output_units if self.input_feeding else 0)
        for rnn in self.rnns:
            rnn.build((None, None, size))
            size = rnn.cell.output_size
        self.attention.build((None, size), memory_shape)
        self.output_kernel = self.add_weight((memory_shape[-1] + size, self.output_units),
                                             name="output_kernel", initializer="glorot_uniform")
        if self.bridge == "mean":
            # Read in float32 even inside a float16 caller (the decoder layer).
            size = sum(sum(state_sizes(rnn.cell)) for rnn in self.rnns)
            self.bridge_kernel = self.add_weight((memory_shape[-1], size), name="bridge_kernel",
                                                 initializer="glorot_uniform", autocast=False)
            self.bridge_bias = self.add_weight((size,), name="bridge_bias", initializer="zeros",
                                               autocast=False)

    def prepare_memory(self, memory, memory_mask=None):
        """The memory as every step reads it: ``{"values": memory, "keys":
        the attention's keys, "mask": [batch, src_len] bool}`` (all True
        without ``memory_mask``)."""
        values = ops.cast(memory, "float32")
        if memory_mask is None:
            memory_mask = ops.ones(ops.shape(values)[:2], dtype="bool")
        return {"values": values, "keys": self.attention.memory_keys(values),
                "mask": ops.cast(memory_mask, "bool")}

    def get_initial_state(self, batch_size, layer_states=None):
        """The state before the first step: ``layer_states`` (a list per layer
        of its cell's states, e.g. from the encoder) or zeros, and ``a_0 = 0``."""
        def zeros(size):
            return ops.zeros((batch_size, size), dtype="float32")

        if layer_states is None:
            layer_states = [[zeros(size) for size in state_sizes(rnn.cell)] for rnn in self.rnns]
        layers = [[ops.cast(state, "float32") for state in states] for states in layer_states]
        return {"layers": layers, "feed": zeros(self.output_units)}

    def initial_state(self, memory):
        """The state before the first step for a memory from
        :meth:`prepare_memory`: zeros, or with ``bridge="mean"`` each
        layer's states from the mean of the memory's real positions (zeros
        for an empty source)."""
        batch_size = ops.shape(memory["values"])[0]
        if self.bridge == "zeros":
            return self.get_initial_state(batch_size)
        mask = ops.cast(memory["mask"], "float32")[..., None]
        mean = ops.sum(memory["values"] * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
        states = ops.tanh(ops.matmul(mean, self.bridge_kernel) + self.bridge_bias)
        layer_states, start = [], 0
        for rnn in self.rnns:
            layer_states.append([])
            for size in state_sizes(rnn.cell):
                layer_states[-1].append(states[:, start:start + size])
                start += size
        return self.get_initial_state(batch_size, layer_states)

    def dropout_masks(self, batch_size, steps=None):
        """Scaled keep masks (0 or ``1 / (1 - dropout)``) for one step,
        ``[batch, size]``, or for ``steps`` steps, ``[batch, steps, size]``:
        ``{"between": [one per layer input but the first], "output": for a_t}``."""
        leading = (batch_size,) if steps is None else (batch_size, steps)

        def mask(size):
            ones = ops.ones(leading + (size,), dtype="float32")
            return keras.random.dropout(ones, self.dropout, seed=self.seed_generator)

        return {"between": [mask(rnn.cell.output_size) for rnn in self.rnns[:-1]],
                "output": mask(self.output_units)}

    def run_layers(self, x, layer_states, masks, run_layer):
        """``x`` through the recurrent layers; ``run_layer(index, inputs,
        states) -> (outputs, new_states)`` runs one layer over one step or a
        whole sequence. Returns the top outputs and the new states."""
        new_states = []
        for index, states in enumerate(layer_states):
            if index and masks is not None:
                x = x * masks["between"][index - 1]
            outputs, states = run_layer(index, x, states)
            if self.residual and index and outputs.shape[-1] == x.shape[-1]:
                outputs = outputs + x
            new_states.append(states)
            x = outputs
        return x, new_states

    def attentional(self, top, memory, masks):
        """``(a, alignments)`` for top-layer outputs of one step or of all steps."""
        context, alignments = self.attention.attend(top, memory["values"], memory["keys"],
                                                    memory["mask"])
        outputs = ops.tanh(ops.matmul(ops.concatenate([context, top], axis=-1),
                                      self.output_kernel))
        if masks is not None:
            outputs = outputs * masks["output"]
        return outputs, alignments

    def step(self, inputs, state, memory, masks=None):
        """One step with the given dropout masks (None: no dropout)."""
        x = ops.cast(inputs, "float32")
        if self.input_feeding:
            x = ops.concatenate([x, state["feed"]], axis=-1)

        def run_layer(index, inputs, states):
            outputs, states = self.rnns[index].cell.call(inputs, list(states))
            return outputs, list(states)

        top, layers = self.run_layers(x, state["layers"], masks, run_layer)
        outputs, alignments = self.attentional(top, memory, masks)
        return outputs, alignments, {"layers": layers, "feed": outputs}

    def call(self, inputs, state, memory, training=False):
        masks = None
        if training and self.dropout > 0:
            masks = self.dropout_masks(ops.shape(inputs)[0])
        return self.step(inputs, state, memory, masks)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "num_layers": self.num_layers,
            "attention": self.attention_name,
            "attention_options": self.attention_options,
            "output_units": self.output_units,
            "input_feeding": self.input_feeding,
            "dropout": self.dropout,
            "residual": self.residual,
            "cell": self.cell,
            "cell_options": self.cell_options,
            "bridge": self.bridge,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="lstm_core")
class AttentionDecoder(keras.layers.Layer):
    """An :class:`AttentionDecoderCell` over a whole target sequence, for
    teacher forcing; ``decoder.cell`` steps with the same weights.

    ``call(inputs, memory, memory_mask=None, initial_state=None,
    training=False)`` takes the embedded target inputs ``[batch, tgt_len,
    features]`` (the targets shifted right, starting with the start token,
    so ``tgt_len >= 1``)
    and the encoder outputs ``[batch, src_len, memory_units]`` with their
    mask (True = a real source position; Keras fills it from the memory's
    own mask when not given), and returns ``(outputs [batch, tgt_len,
    output_units]`` in the compute dtype, ``alignments [batch, tgt_len,
    src_len]`` float32``)``. ``initial_state`` is a state as from
    ``cell.get_initial_state`` (None: ``cell.initial_state``, the cell's
    bridge). Steps past a target's end run on padding; a masked loss ignores
    their outputs.

    With input feeding the steps run in one ``tf.while_loop`` (compile it
    with ``jit_compile=True`` where that is faster); without, each layer
    runs over the whole sequence in one call.
    """

    def __init__(self, cell, **kwargs):
        super().__init__(**kwargs)
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        if not isinstance(cell, AttentionDecoderCell):
            raise TypeError(f"AttentionDecoder takes an AttentionDecoderCell, got {cell!r}")
        self.cell = cell
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, inputs_shape, memory_shape):
        if not self.cell.built:  # a cell may come built, with its weights set
            self.cell.build(inputs_shape, memory_shape)

    def call(self, inputs, memory, memory_mask=None, initial_state=None, training=False):
        cell = self.cell
        inputs = ops.cast(inputs, "float32")
        batch, steps = ops.shape(inputs)[0], ops.shape(inputs)[1]
        memory = cell.prepare_memory(memory, memory_mask)
        if initial_state is None:
            state = cell.initial_state(memory)
        else:
            state = tf.nest.map_structure(lambda part: ops.cast(part, "float32"), initial_state)
        masks = None
        if training and cell.dropout > 0:
            masks = cell.dropout_masks(batch, steps)
        if cell.input_feeding:
            outputs, alignments = self.run_steps(inputs, state, memory, masks)
        else:
            outputs, alignments = self.run_sequences(inputs, state, memory, masks, training)
        return ops.cast(outputs, self.compute_dtype), alignments

    def run_steps(self, inputs, state, memory, masks):
        """The steps in a ``tf.while_loop``; per-step inputs and masks are
        read from TensorArrays (whose gradient is cheap, unlike a slice of
        a captured tensor's)."""
        steps = tf.shape(inputs)[1]

        def time_major(sequences):
            array = tf.TensorArray(tf.float32, size=steps)
            return array.unstack(tf.transpose(sequences, [1, 0, 2]))

        inputs = time_major(inputs)
        mask_arrays = [time_major(mask) for mask in tf.nest.flatten(masks or {})]

        def body(t, state, outputs, alignments):
            step_masks = None if masks is None else tf.nest.pack_sequence_as(
                masks, [array.read(t) for array in mask_arrays])
            output, alignment, state = self.cell.step(inputs.read(t), state, memory, step_masks)
            return t + 1, state, outputs.write(t, output), alignments.write(t, alignment)

        start = (0, state, tf.TensorArray(tf.float32, size=steps),
                 tf.TensorArray(tf.float32, size=steps))
        # maximum_iterations: XLA needs it to size the gradient's stacks.
        _, _, outputs, alignments = tf.while_loop(lambda t, *_: t < steps, body, start,
                                                  maximum_iterations=steps)
        return (tf.transpose(outputs.stack(), [1, 0, 2]),
                tf.transpose(alignments.stack(), [1, 0, 2]))

    def run_sequences(self, inputs, state, memory, masks, training):
        """Without input feeding: every layer over all steps, then attention."""
        def run_layer(index, sequences, states):
            outputs, *states = self.cell.rnns[index](sequences, initial_state=states,
                                                     training=training)
            return outputs, states

        top, _ = self.cell.run_layers(inputs, state["layers"], masks, run_layer)
        return self.cell.attentional(top, memory, masks)

    def get_config(self):
        return {**super().get_config(), "cell": keras.saving.serialize_keras_object(self.cell)}
