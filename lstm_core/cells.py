r"""The peephole LSTM cell: the equations, in one place.

For input :math:`x_t`, previous output :math:`h_{t-1}` and previous cell state
:math:`c_{t-1}`, with :math:`\odot` the elementwise product::

    z   = x_t W + h_{t-1} U                    (4 blocks: i, f, g, o)
    z   = LN(z) per block                      (only with layer_norm=True)
    z   = z + b
    i   = sigmoid(z_i + p_i ⊙ c_{t-1})         input gate  (peephole p_i)
    f   = sigmoid(z_f + forget_bias + p_f ⊙ c_{t-1})   forget gate (p_f)
    g   = tanh(z_g)                            candidate
    c_t = clip(f ⊙ c_{t-1} + i ⊙ g, cell_clip) cell state, clipped to [-c, c]
    o   = sigmoid(z_o + p_o ⊙ c_t)             output gate: peeks at the NEW state
    m_t = o ⊙ tanh(c_t)
    h_t = clip(m_t P, proj_clip)  with a projection (LSTMP), else h_t = m_t

Peepholes follow Gers & Schmidhuber (2000): diagonal (one weight per unit),
the input and forget gates see the previous cell state and the output gate
sees the new one. The projection follows Sak et al. (2014): the recurrent
state ``h`` has ``num_proj`` units, so ``U`` is ``[num_proj, 4 * units]``.
Without peepholes the p terms vanish; without clips the clips are identity.
Gate order in ``W``, ``U`` and ``b`` is Keras's (i, f, g, o), so weights
transfer from ``keras.layers.LSTMCell`` (which folds the forget bias into
``b``; here it is a constant added at run time, as in TensorFlow 1).

Dropout follows Keras: one input mask and one recurrent mask per sequence,
applied to ``x_t`` and ``h_{t-1}`` before the matrix products.
"""

import numbers

import keras
from keras import ops
# Keras's one private import here, on purpose: keras.layers.RNN prepares one
# dropout mask per sequence only for cells built on this mixin (Keras 3 does
# not export it), and a cell usable in any keras.layers.RNN must train with
# dropout there too. pyproject.toml pins the Keras versions this is tested
# with (3.12.4 to 3.15.1, the oldest and newest TensorFlow 2.21 installs).
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

LAYER_NORM_EPSILON = 1e-3


def check_positive_int(name, value, allow_none=False):
    """``value`` as a plain int (NumPy integers accepted), or a ValueError."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    return int(value)


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_clip(name, value):
    if value is not None and not (is_number(value) and value > 0):
        raise ValueError(f"{name} must be None or a positive number, got {name}={value!r}")


def check_rate(name, value):
    if not (is_number(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {name}={value!r}")


def clip(x, limit):
    return x if limit is None else ops.clip(x, -limit, limit)


def lstm_gates(z, c_prev, peepholes, forget_bias, cell_clip):
    """The gate equations above from the pre-activations ``z`` (bias added).

    Returns ``(i, f, g, o, c)``: the four gate activations and the (clipped)
    new cell state. ``peepholes`` is ``(p_i, p_f, p_o)`` or None. Shared by
    the step-by-step cell and the fast sequence layer, whose hand-written
    backward pass saves the gate activations.
    """
    z_i, z_f, z_g, z_o = ops.split(z, 4, axis=-1)
    if peepholes is not None:
        p_i, p_f, p_o = peepholes
        z_i = z_i + p_i * c_prev
        z_f = z_f + p_f * c_prev
    i = ops.sigmoid(z_i)
    f = ops.sigmoid(z_f + forget_bias)
    g = ops.tanh(z_g)
    c = clip(f * c_prev + i * g, cell_clip)
    if peepholes is not None:
        z_o = z_o + p_o * c
    o = ops.sigmoid(z_o)
    return i, f, g, o, c


@keras.saving.register_keras_serializable(package="lstm_core")
class PeepholeLSTMCell(keras.layers.Layer, DropoutRNNCell):
    """LSTM cell with peepholes, cell clipping, projection and layer norm.

    Use it inside :class:`lstm_core.PeepholeLSTM` (fast) or any
    ``keras.layers.RNN``. See the module docstring for the equations.

    Args:
        units: number of cell units (size of ``c``).
        num_proj: size of the projected output ``h`` (LSTMP); None = no
            projection, ``h`` has ``units`` values.
        use_peepholes: add the diagonal peephole connections.
        cell_clip: clip the cell state to ``[-cell_clip, cell_clip]``; None =
            no clipping.
        proj_clip: clip the projected output; needs ``num_proj``.
        forget_bias: constant added to the forget gate pre-activation; 1.0
            keeps the cell remembering early in training.
        layer_norm: layer-normalize each gate's pre-activation (Ba et al.
            2016) before the bias is added.
        dropout, recurrent_dropout: rates for the input and recurrent masks.
        seed: seed of the dropout masks.
        kernel_*, recurrent_*, bias_*, peephole_*, projection_*:
            the usual Keras initializer / regularizer / constraint arguments
            for ``W``, ``U``, ``b``, ``p`` and ``P``.
    """

    def __init__(
        self,
        units,
        num_proj=None,
        use_peepholes=True,
        cell_clip=None,
        proj_clip=None,
        forget_bias=1.0,
        layer_norm=False,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        peephole_initializer="glorot_uniform",
        projection_initializer="glorot_uniform",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        peephole_regularizer=None,
        projection_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        peephole_constraint=None,
        projection_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # The recurrence runs in the variable dtype (float32) even under a
        # mixed policy: a float16 cell state loses the long-range memory LSTMs
        # are used for. keras.layers.RNN casts the outputs and the returned
        # states to the compute dtype at the end of the sequence.
        if self.dtype_policy.compute_dtype != self.dtype_policy.variable_dtype:
            self.dtype_policy = self.dtype_policy.variable_dtype
        units = check_positive_int("units", units)
        num_proj = check_positive_int("num_proj", num_proj, allow_none=True)
        check_clip("cell_clip", cell_clip)
        check_clip("proj_clip", proj_clip)
        if proj_clip is not None and num_proj is None:
            raise ValueError(f"proj_clip={proj_clip!r} needs a projection: set num_proj")
        check_rate("dropout", dropout)
        check_rate("recurrent_dropout", recurrent_dropout)
        if not is_number(forget_bias):
            raise ValueError(f"forget_bias must be a number, got forget_bias={forget_bias!r}")
        self.units = units
        self.num_proj = num_proj
        self.use_peepholes = use_peepholes
        self.cell_clip = cell_clip
        self.proj_clip = proj_clip
        self.forget_bias = float(forget_bias)
        self.layer_norm = layer_norm
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        specs = {
            "kernel": (kernel_initializer, kernel_regularizer, kernel_constraint),
            "recurrent": (recurrent_initializer, recurrent_regularizer, recurrent_constraint),
            "bias": (bias_initializer, bias_regularizer, bias_constraint),
            "peephole": (peephole_initializer, peephole_regularizer, peephole_constraint),
            "projection": (projection_initializer, projection_regularizer, projection_constraint),
        }
        self._weight_args = {
            part: dict(initializer=keras.initializers.get(init),
                       regularizer=keras.regularizers.get(reg),
                       constraint=keras.constraints.get(con))
            for part, (init, reg, con) in specs.items()
        }
        self.output_size = num_proj or units
        self.state_size = [self.output_size, units]

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"PeepholeLSTMCell expects inputs of rank 2 [batch, features] "
                f"per step, got inputs with shape {tuple(input_shape)}"
            )
        units = self.units

        def weight(shape, name, part, **kwargs):
            return self.add_weight(shape, name=name, **self._weight_args[part], **kwargs)

        # Only W may be autocast to a float16 compute dtype: it multiplies
        # the inputs outside the recurrence. Everything the recurrence reads
        # stays float32 (see __init__).
        self.kernel = weight((input_shape[-1], 4 * units), "kernel", "kernel")
        recurrent = dict(autocast=False)
        self.recurrent_kernel = weight(
            (self.output_size, 4 * units), "recurrent_kernel", "recurrent", **recurrent
        )
        self.bias = weight((4 * units,), "bias", "bias", **recurrent)
        if self.use_peepholes:
            self.input_peephole, self.forget_peephole, self.output_peephole = (
                weight((units,), f"{gate}_peephole", "peephole", **recurrent)
                for gate in ("input", "forget", "output")
            )
        if self.num_proj:
            self.projection_kernel = weight(
                (units, self.num_proj), "projection_kernel", "projection", **recurrent
            )
        if self.layer_norm:
            self.gamma = self.add_weight((4 * units,), name="gamma", initializer="ones", **recurrent)
            self.beta = self.add_weight((4 * units,), name="beta", initializer="zeros", **recurrent)

    @property
    def peepholes(self):
        if not self.use_peepholes:
            return None
        return (self.input_peephole, self.forget_peephole, self.output_peephole)

    def normalize(self, z):
        """Layer-normalize each gate block of ``z`` separately."""
        blocks = ops.reshape(z, (-1, 4, self.units))
        mean = ops.mean(blocks, axis=-1, keepdims=True)
        var = ops.var(blocks, axis=-1, keepdims=True)
        blocks = (blocks - mean) * ops.rsqrt(var + LAYER_NORM_EPSILON)
        return ops.reshape(blocks, (-1, 4 * self.units)) * self.gamma + self.beta

    def project(self, m):
        if not self.num_proj:
            return m
        return clip(ops.matmul(m, self.projection_kernel), self.proj_clip)

    def call(self, inputs, states, training=False):
        h_prev, c_prev = states
        # The masks are made by the RNN layer from its (maybe float16) inputs.
        if training and self.dropout > 0:
            inputs = inputs * ops.cast(self.get_dropout_mask(inputs), inputs.dtype)
        if training and self.recurrent_dropout > 0:
            h_prev = h_prev * ops.cast(self.get_recurrent_dropout_mask(h_prev), h_prev.dtype)
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h_prev, self.recurrent_kernel)
        if self.layer_norm:
            z = self.normalize(z)
        *_, o, c = lstm_gates(z + self.bias, c_prev, self.peepholes, self.forget_bias, self.cell_clip)
        h = self.project(o * ops.tanh(c))
        return h, [h, c]

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in self.state_size
        ]

    def get_config(self):
        config = {
            "units": self.units,
            "num_proj": self.num_proj,
            "use_peepholes": self.use_peepholes,
            "cell_clip": self.cell_clip,
            "proj_clip": self.proj_clip,
            "forget_bias": self.forget_bias,
            "layer_norm": self.layer_norm,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        for part, args in self._weight_args.items():
            config[f"{part}_initializer"] = keras.initializers.serialize(args["initializer"])
            config[f"{part}_regularizer"] = keras.regularizers.serialize(args["regularizer"])
            config[f"{part}_constraint"] = keras.constraints.serialize(args["constraint"])
        return {**super().get_config(), **config}
