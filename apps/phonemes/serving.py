"""The export contract of the phonemes app, also used in-process by evaluate
and predict, so that ``lstm-suite predict`` and the SavedModel agree.

``serving_default(waveform, lengths)``: ``waveform`` tf.float32 ``[batch,
samples]`` (mono, zero-padded, at ``sample_rate``), ``lengths`` tf.int32
``[batch]`` valid samples per row. Returns ``phonemes`` tf.string ``[batch]``,
each row's decoded phonemes joined by single spaces. ``sample_rate`` is a
scalar int32 variable of the module.
"""

import tensorflow as tf

from lstm_core.ctc import (
    ctc_alignment, ctc_beam_search_decode, ctc_ensemble_beam_search, ctc_greedy_decode)
from lstm_core.ngram import rescore

BLANK_SYMBOL = "<blank>"


class PhonemeServing(tf.Module):
    """``beam_width`` 1 decodes greedily (best path), more runs a beam
    search; a :class:`~apps.phonemes.model.PhonemeEnsemble` always runs its
    members' beams (of one path at ``beam_width`` 1) and ranks what they
    found together. With ``lm`` (a :func:`lstm_core.ngram.log_prob_table`
    and its weight) the phone LM rescores the n-best list. The decoders
    have no XLA kernels: the function is not jit-compiled."""

    #: Kept on the exported object (see lstm_core.export.serving_archive).
    serving_attributes = ("sample_rate",)

    def __init__(self, model, phones, sample_rate, beam_width=1, lm=None):
        from apps.phonemes.model import PhonemeEnsemble

        super().__init__()
        self.model = model
        self.members = model.members if isinstance(model, PhonemeEnsemble) else [model]
        self.symbols = tf.constant([BLANK_SYMBOL] + list(phones))
        self.sample_rate = tf.Variable(int(sample_rate), dtype=tf.int32, trainable=False,
                                       name="sample_rate")
        self.beam_width = int(beam_width)
        self.lm = None if lm is None else (tf.constant(lm[0]), float(lm[1]))

    def decode_ids(self, waveform, lengths):
        """Ragged ``[batch, (phonemes)]`` int32 ids (>= 1)."""
        inputs = {"waveform": waveform, "lengths": lengths}
        scored = [(member(inputs, training=False), member.output_lengths(lengths))
                  for member in self.members]
        if len(scored) == 1 and self.beam_width == 1:
            ids, counts = ctc_greedy_decode(*scored[0])
        else:
            if len(scored) > 1:
                ids, counts, scores = ctc_ensemble_beam_search(scored, self.beam_width)
            else:
                # The phone LM picks from the whole n-best list; without it the best path is first.
                paths = self.beam_width if self.lm is not None else 1
                ids, counts, scores = ctc_beam_search_decode(*scored[0], self.beam_width, paths)
            ids, counts = (rescore(ids, counts, scores, *self.lm) if self.lm is not None
                           else (ids[:, 0], counts[:, 0]))
        return tf.RaggedTensor.from_tensor(ids, lengths=counts)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform"),
                                  tf.TensorSpec([None], tf.int32, name="lengths")])
    def serving_default(self, waveform, lengths):
        symbols = tf.gather(self.symbols, self.decode_ids(waveform, lengths))
        return {"phonemes": tf.strings.reduce_join(symbols, axis=1, separator=" ")}

    def transcribe(self, waveforms, batch_size=16):
        """Phoneme lists of ``waveforms`` (1-D float32 arrays), batched by length."""
        from apps.phonemes.data import pad_batch

        order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))
        results = [None] * len(waveforms)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch, lengths = pad_batch([waveforms[i] for i in chunk])
            out = self.serving_default(tf.constant(batch), tf.constant(lengths))["phonemes"]
            for index, text in zip(chunk, out.numpy()):
                results[index] = text.decode("utf-8").split()
        return results

    def align(self, waveforms, batch_size=16):
        """Per waveform, the phonemes of the greedy (best-path) decoding with
        their times: ``[{"phoneme", "start", "end"}]`` in seconds, from the
        first to the end of the last recurrent step whose best class is that
        phoneme (a step lasts ``model.step_seconds``)."""
        from apps.phonemes.data import pad_batch

        model = self.model
        seconds = model.step_seconds
        symbols = [s.decode("utf-8") for s in self.symbols.numpy()]
        results = []
        for start in range(0, len(waveforms), batch_size):
            batch, lengths = pad_batch(waveforms[start:start + batch_size])
            logits = model({"waveform": tf.constant(batch), "lengths": tf.constant(lengths)},
                           training=False)
            labels, first, last, counts = (t.numpy() for t in ctc_alignment(
                logits, model.output_lengths(tf.constant(lengths))))
            for row, count in enumerate(counts):
                results.append([{"phoneme": symbols[labels[row, k]],
                                 "start": round(float(first[row, k] * seconds), 3),
                                 "end": round(float((last[row, k] + 1) * seconds), 3)}
                                for k in range(count)])
        return results
