"""Translation: an attentional LSTM encoder-decoder over SentencePiece subwords."""
