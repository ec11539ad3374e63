"""The export contract of the translation app, also used in-process by
evaluate and predict, so that ``lstm-suite predict`` and the SavedModel
translate alike.

``serving_default(source)``: ``source`` tf.string ``[batch]``, raw
sentences. Returns ``translation`` tf.string ``[batch]``: the best
hypothesis of a beam search (the recipe's ``decode`` settings), its
subwords joined back into text. Subwords are cut and joined inside the
graph by tensorflow-text's SentencePiece ops (a serving process imports
``tensorflow_text`` to register them). An empty source gives an empty
translation.

The SentencePiece op takes its model as a graph attribute, not a tensor:
the models' bytes are part of the graph (the tokenizers' resources), and
the run's ``.model`` files also ship in the SavedModel's ``assets/``.
"""

from pathlib import Path

import tensorflow as tf

from apps.translation.subwords import BOS, EOS
from lstm_core.beam_search import beam_search, mean_log_probs, relative_max_lengths, tile_beams

SOURCE = tf.TensorSpec([None], tf.string, name="source")


class TranslationServing(tf.Module):
    """Beam search over ``models`` (one :class:`~apps.translation.model.Translator`,
    or several whose log probabilities are averaged at each step), between
    the SentencePiece models ``source_model`` and ``target_model`` (files).

    ``beam_width`` 1 decodes greedily. Hypotheses are ranked by their log
    probability over the GNMT length penalty ``length_penalty``; a
    hypothesis ends at the end id or after ``ceil(max_length_ratio * n +
    max_length_offset)`` subwords for a source of ``n`` subwords.
    """

    def __init__(self, models, source_model, target_model, beam_width=1, length_penalty=0.0,
                 max_length_ratio=2.0, max_length_offset=10):
        import tensorflow_text

        super().__init__()
        self.models = list(models)
        self.source_tokenizer = tensorflow_text.SentencepieceTokenizer(
            model=Path(source_model).read_bytes())
        self.target_tokenizer = self.source_tokenizer if Path(source_model) == Path(
            target_model) else tensorflow_text.SentencepieceTokenizer(
            model=Path(target_model).read_bytes())
        self.beam_width = int(beam_width)
        self.length_penalty = float(length_penalty)
        self.max_length_ratio = float(max_length_ratio)
        self.max_length_offset = int(max_length_offset)

    # -- in the graph ------------------------------------------------------------

    def source_ids(self, source):
        """``(ids [batch, steps], lengths [batch])``, 0-padded, with at
        least one (padding) step even if every sentence is empty."""
        pieces = self.source_tokenizer.tokenize(source)
        ids = tf.pad(pieces.to_tensor(0), [[0, 0], [0, 1]])
        return ids, tf.cast(pieces.row_lengths(), tf.int32)

    def search(self, ids, lengths):
        """The :class:`lstm_core.beam_search.Hypotheses` of the source ids."""
        beams = self.beam_width
        steps, states = [], []
        for model in self.models:
            memory, mask = model.encode(ids)
            step, state = model.step_function(*tile_beams((memory, mask), beams))
            steps.append(step)
            states.append(state)
        step, state = (steps[0], states[0]) if len(steps) == 1 else (mean_log_probs(steps),
                                                                     tuple(states))
        max_lengths = relative_max_lengths(lengths, self.max_length_ratio, self.max_length_offset)
        return beam_search(step, state, start_id=BOS, end_id=EOS,
                           max_lengths=tf.where(lengths > 0, max_lengths, 0),
                           beam_width=beams, length_penalty=self.length_penalty)

    def detokenize(self, ids, lengths):
        """Text of ``ids [n, steps]`` cut to ``lengths``, the end id dropped."""
        pieces = tf.RaggedTensor.from_tensor(ids, lengths=lengths)
        return self.target_tokenizer.detokenize(tf.ragged.boolean_mask(pieces, pieces != EOS))

    @tf.function(input_signature=[SOURCE])
    def serving_default(self, source):
        best = self.search(*self.source_ids(source))
        return {"translation": self.detokenize(best.ids[:, 0], best.lengths[:, 0])}

    @tf.function(input_signature=[SOURCE])
    def n_best(self, source):
        """Every hypothesis of the beam, best first: ``translations``
        ``[batch, beam]`` text, their ``scores`` (what ranks them) and
        ``log_probs``."""
        found = self.search(*self.source_ids(source))
        shape = tf.shape(found.ids)
        flat = self.detokenize(tf.reshape(found.ids, [-1, shape[2]]),
                               tf.reshape(found.lengths, [-1]))
        return {"translations": tf.reshape(flat, shape[:2]), "scores": found.scores,
                "log_probs": found.log_probs}

    @tf.function(input_signature=[SOURCE])
    def best_ids(self, source):
        """The source ids and lengths and the best hypothesis's ids and
        lengths (the end id included): what the attention figure shows."""
        ids, lengths = self.source_ids(source)
        best = self.search(ids, lengths)
        return ids, lengths, best.ids[:, 0], best.lengths[:, 0]

    # -- from Python -----------------------------------------------------------------

    def _batched(self, function, sentences, batch_size):
        """``function``'s outputs for batches of ``sentences`` of similar
        length, rows back in the order given."""
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        rows = [None] * len(sentences)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out = function(tf.constant([sentences[i] for i in chunk], tf.string))
            for position, index in enumerate(chunk):
                rows[index] = {name: value[position] for name, value in out.items()}
        return rows

    def translate(self, sentences, batch_size=64):
        """The translation of each sentence (str)."""
        rows = self._batched(self.serving_default, sentences, batch_size)
        return [row["translation"].numpy().decode("utf-8") for row in rows]

    def translate_n_best(self, sentences, count, batch_size=64):
        """The ``count`` best hypotheses of each sentence, best first, as
        ``{"translation", "score", "log_prob"}`` dicts (a beam may hold fewer)."""
        results = []
        for row in self._batched(self.n_best, sentences, batch_size):
            texts, scores, log_probs = (row[key].numpy() for key in
                                        ("translations", "scores", "log_probs"))
            results.append([{"translation": text.decode("utf-8"), "score": float(score),
                             "log_prob": float(log_prob)}
                            for text, score, log_prob in zip(texts, scores, log_probs)
                            if score > -float("inf")][:count])
        return results
