"""lstm_core: peephole, clipped and projected LSTMs for Keras 3, and the
shared machinery (recipes, trainer, export) of the lstm-suite apps."""

__version__ = "0.1.0"

__all__ = ["PeepholeLSTMCell", "PeepholeLSTM", "RNNStack", "RNN_LAYERS", "make_rnn", "register_rnn"]


def __getattr__(name):
    # The layers import Keras and TensorFlow, so they load on first use: the
    # `lstm-suite` command imports this package first and must be able to
    # choose how TensorFlow starts (its C++ start-up lines, see cli.py).
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from lstm_core import layers

    value = getattr(layers, name)
    globals()[name] = value
    return value
