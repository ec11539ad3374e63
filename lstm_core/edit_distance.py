"""Levenshtein alignment of a hypothesis against a reference, and corpus
error rates (phone/word/character error rate: PER, WER, CER).

Sequences are lists (or tuples) of any hashable symbols compared with ``==``:
phoneme strings such as ``"aa"`` or IPA ``"ʃ"``, words, ints. A Python
string is a sequence of characters, so passing strings gives a CER; split
words or phonemes into a list first for a WER/PER.

Written here rather than wrapping ``jiwer`` (the usual WER library, which
would add jiwer and rapidfuzz as dependencies): jiwer scores text, sentences
of whitespace-separated string tokens, so a CTC decoder's ids would go
through a string round trip, and it does not document which of several
equally short alignments it reports, which decides the S/D/I split. The
dynamic programme is the textbook one; ``tf.edit_distance`` checks its
distance in the tests.

Tie-break: every minimal alignment has the same ``S + D + I`` but which
symbols are paired, and the S/D/I split, can differ (``a a`` against ``a``:
which ``a`` is deleted; ``a b c d e`` against ``a x c e f``: 3 S, or 1 S +
1 D + 1 I). The backtrace, from the end of both sequences, takes the first
of these moves that lies on a minimal path: match/substitution (diagonal),
then deletion (reference symbol unmatched), then insertion (hypothesis
symbol unmatched). So pairing symbols wins over opening gaps (3 S above),
and gaps go as early in the sequences as possible (the first ``a`` is
deleted). Symbols must not be ``None``, which marks gaps in ``pairs``.
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Alignment:
    """One minimal alignment: ``pairs`` are ``(ref_symbol, hyp_symbol)`` in
    order, with ``None`` for the missing side of a deletion (hyp None) or an
    insertion (ref None)."""

    pairs: tuple
    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def errors(self):
        """The Levenshtein distance, S + D + I."""
        return self.substitutions + self.deletions + self.insertions


@dataclass(frozen=True)
class ErrorRate:
    """Corpus totals and ``rate = 100 * (S + D + I) / N`` (percent, lower is
    better; can exceed 100 with many insertions). ``N`` is the total
    reference length; with ``N == 0`` the rate is 0.0 without errors and
    ``inf`` with insertions (nothing to normalise by)."""

    rate: float
    substitutions: int
    deletions: int
    insertions: int
    reference_length: int

    @property
    def errors(self):
        return self.substitutions + self.deletions + self.insertions


def _cost_table(reference, hypothesis):
    """cost[i][j] = edit distance between reference[:i] and hypothesis[:j]."""
    cost = [list(range(len(hypothesis) + 1))]
    for i, ref_symbol in enumerate(reference, start=1):
        row = [i]
        previous = cost[-1]
        for j, hyp_symbol in enumerate(hypothesis, start=1):
            row.append(min(previous[j - 1] + (ref_symbol != hyp_symbol),
                           previous[j] + 1,  # delete ref_symbol
                           row[j - 1] + 1))  # insert hyp_symbol
        cost.append(row)
    return cost


def align(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> Alignment:
    """The minimal alignment of ``hypothesis`` to ``reference`` chosen by the
    module's tie-break, with its substitution, deletion and insertion counts.
    An empty reference gives ``len(hypothesis)`` insertions, an empty
    hypothesis ``len(reference)`` deletions."""
    reference, hypothesis = list(reference), list(hypothesis)
    cost = _cost_table(reference, hypothesis)
    i, j = len(reference), len(hypothesis)
    pairs, counts = [], {"S": 0, "D": 0, "I": 0, "H": 0}
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            same = reference[i - 1] == hypothesis[j - 1]
            counts["H" if same else "S"] += 1
            pairs.append((reference[i - 1], hypothesis[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            counts["D"] += 1
            pairs.append((reference[i - 1], None))
            i -= 1
        else:
            counts["I"] += 1
            pairs.append((None, hypothesis[j - 1]))
            j -= 1
    return Alignment(tuple(reversed(pairs)), counts["S"], counts["D"], counts["I"], counts["H"])


def error_rate(refs: Sequence[Sequence[Hashable]],
               hyps: Sequence[Sequence[Hashable]]) -> ErrorRate:
    """Corpus-level error rate over pairs ``(refs[k], hyps[k])``: the S, D, I
    of every pair's :func:`align` summed, divided by the summed reference
    lengths (not an average of per-sentence rates)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    totals = [0, 0, 0]
    length = 0
    for reference, hypothesis in zip(refs, hyps):
        alignment = align(reference, hypothesis)
        totals[0] += alignment.substitutions
        totals[1] += alignment.deletions
        totals[2] += alignment.insertions
        length += len(reference)
    errors = sum(totals)
    if length:
        rate = 100.0 * errors / length
    else:
        rate = 0.0 if errors == 0 else float("inf")
    return ErrorRate(rate, *totals, length)
