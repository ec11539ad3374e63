"""lstm_core: peephole, clipped and projected LSTMs for Keras 3, and the
shared machinery (recipes, trainer, export) of the lstm-suite apps."""

__version__ = "0.1.0"
