"""lstm_core: peephole, clipped and projected LSTMs for Keras 3, and the
shared machinery (recipes, trainer, export) of the lstm-suite apps."""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {"PeepholeLSTMCell": "cells", "PeepholeLSTM": "layers", "RNNStack": "layers",
            "RNN_LAYERS": "layers", "make_rnn": "layers", "register_rnn": "layers", "CRF": "crf"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    # The layers import Keras and TensorFlow, so they load on first use: the
    # `lstm-suite` command imports this package first and must be able to
    # choose how TensorFlow starts (its C++ start-up lines, see cli.py).
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lstm_core.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
