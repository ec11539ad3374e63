"""lstm_core: peephole, clipped and projected LSTMs for Keras 3, and the
shared machinery (recipes, trainer, export) of the lstm-suite apps."""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {"PeepholeLSTMCell": "cells", "PeepholeLSTM": "layers", "RNNStack": "layers",
            "RNN_LAYERS": "layers", "make_rnn": "layers", "register_rnn": "layers", "CRF": "crf",
            "LuongAttention": "attention", "BahdanauAttention": "attention",
            "ATTENTIONS": "attention", "make_attention": "attention",
            "AttentionDecoderCell": "decoder", "AttentionDecoder": "decoder",
            "greedy_search": "beam_search",
            "Hypotheses": "beam_search", "tile_beams": "beam_search",
            "mean_log_probs": "beam_search", "relative_max_lengths": "beam_search",
            "gnmt_length_penalty": "beam_search"}
# The function beam_search is not exported here: it would shadow its module,
# lstm_core.beam_search (import it from there).
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
