"""SentencePiece subwords (Kudo & Richardson 2018): learned from the raw
training text when a run is created, kept as the run's asset files, and
applied by the same C++ library in Python (training data) and inside the
exported graph (tensorflow-text's SentencePiece ops).

Every model reserves the same four ids, which the translator relies on:
padding 0 (never produced by the encoder, so 0 pads batches), unknown 1,
start of sentence 2 and end of sentence 3.
"""

import io
import re
from pathlib import Path

from lstm_core.errors import UserError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
KINDS = ("unigram", "bpe")


def train(sentences, path, *, kind="unigram", vocab_size=8000, character_coverage=1.0,
          sample=1_000_000):
    """Learn a SentencePiece model of ``kind`` from ``sentences`` (raw
    text) and write it to ``path``. ``vocab_size`` is an upper bound: a
    small text may support fewer pieces, which is not an error.
    ``sample`` sentences at most are drawn (shuffled) from a larger text.
    Returns the number of pieces. Deterministic: the same text and
    settings give a byte-identical model (runs of one recipe can then
    export as an ensemble)."""
    import sentencepiece as spm

    if kind not in KINDS:
        raise UserError(f"subword model type must be one of {', '.join(KINDS)}, got {kind!r}")
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=buffer, model_type=kind,
            vocab_size=vocab_size, character_coverage=character_coverage,
            input_sentence_size=sample, shuffle_input_sentence=True, hard_vocab_limit=False,
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, minloglevel=2)
    except RuntimeError as error:
        message = str(error).splitlines()[0]
        # The usual failure, a vocabulary smaller than the text's characters,
        # comes as an internal check ("INTERNAL: src/trainer_interface.cc(638)
        # [(static_cast<int>(...)) <= ...] Vocabulary size is smaller than
        # required_chars. 20 vs 34. ..."): said instead with the recipe keys.
        small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
        if small:
            raise UserError(f"data.subwords.vocab_size {vocab_size} is too small for the training "
                            f"text: it needs {small[1]} (each character kept, and the 4 reserved "
                            f"ids); raise it, or lower data.subwords.character_coverage") from None
        message = re.sub(r"^INTERNAL: \S+ \[.*?\] ", "", message)  # the check's source line
        raise UserError(f"SentencePiece cannot learn {kind} subwords from the training text: "
                        f"{message}") from None
    Path(path).write_bytes(buffer.getvalue())
    return load(path).get_piece_size()


def load(path):
    """The ``sentencepiece.SentencePieceProcessor`` of a model file; a file
    that is not one (a damaged or replaced run asset) is a UserError naming
    it, where the library raises a bare RuntimeError and tensorflow-text's
    op, given the same bytes, an InternalError without the file's name."""
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as error:
        detail = str(error).splitlines()[0].replace(f" from {path}", "").removeprefix("INTERNAL: ")
        raise UserError(f"{path}: not a SentencePiece model ({detail})") from None


def encode(processor, sentences):
    """Subword ids of each sentence (lists of ints, no start or end id)."""
    return processor.encode(list(sentences), out_type=int)
