"""lstm_core: peephole, clipped and projected LSTMs for Keras 3, and the
shared machinery (recipes, trainer, export) of the lstm-suite apps."""

__version__ = "0.1.0"

from lstm_core.cells import PeepholeLSTMCell  # noqa: E402
from lstm_core.crf import CRF  # noqa: E402
from lstm_core.layers import RNN_LAYERS, PeepholeLSTM, RNNStack, make_rnn, register_rnn  # noqa: E402

__all__ = ["PeepholeLSTMCell", "PeepholeLSTM", "RNNStack", "RNN_LAYERS", "make_rnn", "register_rnn",
           "CRF"]
