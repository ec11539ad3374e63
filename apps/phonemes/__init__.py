"""Phoneme recognition: waveform to phonemes with a bidirectional peephole LSTM and CTC."""
