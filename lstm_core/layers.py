"""Sequence layers: the fast peephole LSTM, a registry of recurrent layers
that recipes pick by name, and a configurable stack of them."""

import inspect

import keras
from keras import ops

from lstm_core.cells import PeepholeLSTMCell, check_positive_int, check_rate

CELL_ARGUMENTS = frozenset(inspect.signature(PeepholeLSTMCell.__init__).parameters) - {
    "self", "units", "kwargs"
}


@keras.saving.register_keras_serializable(package="lstm_core")
class PeepholeLSTM(keras.layers.RNN):
    """A sequence layer over :class:`~lstm_core.cells.PeepholeLSTMCell`.

    Takes every cell argument (``num_proj``, ``use_peepholes``,
    ``cell_clip``, ``proj_clip``, ``forget_bias``, ``layer_norm``,
    ``dropout``, ``recurrent_dropout``, initializers, ...) and every
    ``keras.layers.RNN`` argument (``return_sequences``, ``return_state``,
    ``go_backwards``, ``stateful``, ...). Masked steps keep the state and,
    unlike ``keras.layers.RNN``'s default, output zeros, so a padded batch
    gives the same results as its sequences one by one;
    ``zero_output_for_mask=False`` repeats the last output instead.

    The fast path (:mod:`lstm_core.fused`) covers peepholes, clipping,
    projection and input dropout with TensorFlow as the backend; layer
    normalization, recurrent dropout in training and ``unroll`` fall back to
    Keras's generic step-by-step loop over the same cell.

    ``call`` also accepts ``lengths`` (``[batch]`` ints) instead of a mask.
    Under a mixed-precision policy the input projection runs in the compute
    dtype and the recurrence, with its cell state, in float32.
    """

    def __init__(
        self,
        units,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        zero_output_for_mask=True,
        **kwargs,
    ):
        cell_kwargs = {name: kwargs.pop(name) for name in list(kwargs) if name in CELL_ARGUMENTS}
        cell = PeepholeLSTMCell(
            units,
            dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True),
            name="peephole_lstm_cell",
            **cell_kwargs,
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            zero_output_for_mask=zero_output_for_mask,
            **kwargs,
        )

    @property
    def units(self):
        return self.cell.units

    def _check_rank(self, shape):
        if len(shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank 3 [batch, time, features], "
                f"got inputs with shape {tuple(shape)}"
            )

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_rank(sequences_shape)
        super().build(sequences_shape, initial_state_shape)

    def call(self, sequences, initial_state=None, mask=None, training=False, lengths=None):
        self._check_rank(sequences.shape)
        if lengths is not None:
            steps = ops.arange(ops.shape(sequences)[1], dtype="int32")
            mask = steps[None, :] < ops.expand_dims(ops.cast(lengths, "int32"), -1)
        return super().call(sequences, initial_state=initial_state, mask=mask, training=training)

    def uses_fast_path(self, training=False):
        cell = self.cell
        return (
            keras.backend.backend() == "tensorflow"
            and not cell.layer_norm
            and not self.unroll
            and not (training and cell.recurrent_dropout > 0)
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self.uses_fast_path(training):
            last, outputs, states = super().inner_loop(
                sequences, initial_state, mask, training=training)
            # Keras's loop returns the last step's output, zeroed for a row
            # that ended earlier; the last output of a sequence is its h.
            return (last if mask is None else states[0]), outputs, states
        # Imported here: only the fast path needs TensorFlow; the rest of the
        # layer runs on any Keras backend.
        import tensorflow as tf

        from lstm_core.fused import fused_lstm

        cell = self.cell
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if training and cell.dropout > 0:
            dropout_mask = cell.get_dropout_mask(sequences[:, 0, :])
            sequences = sequences * tf.cast(dropout_mask, sequences.dtype)[:, None, :]
        x = tf.transpose(sequences, [1, 0, 2])
        if mask is not None:
            mask = tf.transpose(tf.cast(mask, tf.bool))
        if self.go_backwards:
            x = tf.reverse(x, [0])
            mask = None if mask is None else tf.reverse(mask, [0])
        # The one big product, in the compute dtype; the recurrence in float32.
        xz = tf.cast(tf.tensordot(x, cell.kernel.value, axes=1), tf.float32) + cell.bias.value
        peepholes = None if cell.peepholes is None else tf.stack([p.value for p in cell.peepholes])
        h0, c0 = (tf.cast(state, tf.float32) for state in initial_state)
        outputs, h, c = fused_lstm(
            xz, mask, h0, c0, cell.recurrent_kernel.value, peepholes,
            cell.projection_kernel.value if cell.num_proj else None,
            forget_bias=cell.forget_bias, cell_clip=cell.cell_clip, proj_clip=cell.proj_clip,
            training=bool(training), zero_masked_outputs=self.zero_output_for_mask,
        )
        return h, tf.transpose(outputs, [1, 0, 2]), [h, c]

    def get_config(self):
        config = super().get_config()
        cell_config = config.pop("cell")["config"]
        config.update({key: cell_config[key] for key in CELL_ARGUMENTS})
        config["units"] = self.units
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# Recurrent layers a recipe can name. Each is called as LAYER(units, **options).
RNN_LAYERS = {
    "peephole_lstm": PeepholeLSTM,
    "lstm": keras.layers.LSTM,  # takes cuDNN on a GPU
    "gru": keras.layers.GRU,
}


def register_rnn(name):
    """Decorator adding a recurrent layer class to :data:`RNN_LAYERS` under
    ``name``. A name already registered, or a class that is not a
    ``keras.layers.Layer``, is a ValueError: replacing a layer silently
    would change what existing recipes build."""

    def add(layer_class):
        if name in RNN_LAYERS:
            existing = RNN_LAYERS[name]
            raise ValueError(f"a recurrent layer is already registered as {name!r}: "
                             f"{existing.__module__}.{existing.__qualname__}")
        if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
            raise ValueError(f"register_rnn({name!r}) takes a keras.layers.Layer subclass, "
                             f"got {layer_class!r}")
        RNN_LAYERS[name] = layer_class
        return layer_class

    return add


def make_rnn(cell, units, **options):
    """Instantiate the registered recurrent layer ``cell``."""
    if cell not in RNN_LAYERS:
        raise ValueError(f"unknown cell {cell!r}; registered: {', '.join(sorted(RNN_LAYERS))}")
    return RNN_LAYERS[cell](units, **options)


@keras.saving.register_keras_serializable(package="lstm_core")
class RNNStack(keras.layers.Layer):
    """``num_layers`` recurrent layers, as a recipe describes them.

    Args:
        cell: a name from :data:`RNN_LAYERS`.
        units: units per layer (and per direction).
        num_layers: how many layers.
        bidirectional: wrap each layer in ``keras.layers.Bidirectional``
            (outputs of both directions concatenated).
        dropout: dropout rate between layers (not after the last).
        residual: add each layer's input to its output where their sizes
            match (Wu et al. 2016), which eases training deep stacks.
        cell_options: extra arguments for every layer (``cell_clip``,
            ``recurrent_dropout``, ...).

    Returns the full output sequence; the input mask passes through.
    """

    def __init__(self, cell="peephole_lstm", units=128, num_layers=1, bidirectional=False,
                 dropout=0.0, residual=False, cell_options=None, **kwargs):
        super().__init__(**kwargs)
        units = check_positive_int("units", units)
        num_layers = check_positive_int("num_layers", num_layers)
        check_rate("dropout", dropout)
        self.cell = cell
        self.units = units
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.residual = residual
        self.cell_options = dict(cell_options or {})
        self.rnns = []
        for index in range(num_layers):
            rnn = make_rnn(cell, units, return_sequences=True, name=f"{cell}_{index}",
                           **self.cell_options)
            if bidirectional:
                rnn = keras.layers.Bidirectional(rnn, name=f"bidirectional_{index}")
            self.rnns.append(rnn)
        self.between = keras.layers.Dropout(dropout)
        self.supports_masking = True

    def build(self, input_shape):
        shape = tuple(input_shape)
        for rnn in self.rnns:
            rnn.build(shape)
            shape = tuple(rnn.compute_output_shape(shape))

    def call(self, inputs, mask=None, training=None):
        x = inputs
        for index, rnn in enumerate(self.rnns):
            y = rnn(x, mask=mask, training=training)
            if self.residual and y.shape[-1] == x.shape[-1]:
                y = y + x
            if index < self.num_layers - 1:
                y = self.between(y, training=training)
            x = y
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for rnn in self.rnns:
            shape = tuple(rnn.compute_output_shape(shape))
        return shape

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        return {
            **super().get_config(),
            "cell": self.cell,
            "units": self.units,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout,
            "residual": self.residual,
            "cell_options": self.cell_options,
        }


def rnn_arguments(cell) -> set:
    """Keyword arguments the registered recurrent layer ``cell`` accepts
    (its constructor's and its base classes', a peephole layer's cell's)."""
    if cell not in RNN_LAYERS:
        raise ValueError(f"unknown cell {cell!r}; registered: {', '.join(sorted(RNN_LAYERS))}")
    names = set(CELL_ARGUMENTS) if issubclass(RNN_LAYERS[cell], PeepholeLSTM) else set()
    for base in RNN_LAYERS[cell].__mro__:
        if "__init__" in vars(base) and issubclass(base, keras.layers.Layer):
            names |= set(inspect.signature(base.__init__).parameters)
    base_layer = {"trainable", "dtype", "autocast", "name", "activity_regularizer", "input_dim"}
    return (names | base_layer) - {"self", "units", "kwargs", "args", "cell"}
