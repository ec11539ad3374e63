"""Entity-level NER scores, the numbers papers report.

A predicted entity counts only if its type and both boundaries match a gold
entity exactly (CoNLL-2003's rule). Entities are read with seqeval's default
mode, which ports conlleval.pl's chunk rules (extended to IOBES), so the
scores are the ones conlleval prints; ``tests/test_ner_metrics.py`` checks
that against an independent port of conlleval.
"""

from collections import Counter

from seqeval.metrics.sequence_labeling import get_entities


def _prf(correct, found, support):
    """Precision, recall and F1 in percent, 0 where undefined (conlleval)."""
    precision = 100.0 * correct / found if found else 0.0
    recall = 100.0 * correct / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_scores(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
    """Scores of predicted against gold tag sequences (one list per sentence).

    Returns ``precision``, ``recall``, ``f1`` and ``accuracy`` (token-level,
    all tags, O included) in percent like conlleval, the counts ``tokens``,
    ``true_entities``, ``pred_entities``, ``correct_entities``, and
    ``per_type``: ``{type: {precision, recall, f1, support, predicted,
    correct}}`` for every type in the gold or predicted tags.
    """
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted")
    for index, (gold, pred) in enumerate(zip(true_tags, pred_tags)):
        if len(gold) != len(pred):
            raise ValueError(f"sentence {index}: {len(gold)} gold tags but {len(pred)} predicted")
    # get_entities puts an O between sentences, so no entity spans two.
    gold = set(get_entities([list(s) for s in true_tags]))
    pred = set(get_entities([list(s) for s in pred_tags]))
    support = Counter(kind for kind, _, _ in gold)
    found = Counter(kind for kind, _, _ in pred)
    correct = Counter(kind for kind, _, _ in gold & pred)
    tokens = sum(len(s) for s in true_tags)
    right = sum(g == p for gs, ps in zip(true_tags, pred_tags) for g, p in zip(gs, ps))

    precision, recall, f1 = _prf(len(gold & pred), len(pred), len(gold))
    per_type = {}
    for kind in sorted(support.keys() | found.keys()):
        p, r, f = _prf(correct[kind], found[kind], support[kind])
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": support[kind],
                          "predicted": found[kind], "correct": correct[kind]}
    return {"precision": precision, "recall": recall, "f1": f1,
            "accuracy": 100.0 * right / tokens if tokens else 0.0,
            "tokens": tokens, "true_entities": len(gold), "pred_entities": len(pred),
            "correct_entities": len(gold & pred), "per_type": per_type}


def format_report(scores) -> str:
    """A fixed-width table in the manner of conlleval: a counts line, the
    overall scores, then one line per entity type."""
    lines = [
        f"processed {scores['tokens']} tokens with {scores['true_entities']} entities; "
        f"found: {scores['pred_entities']}; correct: {scores['correct_entities']}; "
        f"accuracy: {scores['accuracy']:6.2f}%",
        f"{'type':<10} {'precision':>9} {'recall':>8} {'f1':>8} {'support':>8} {'found':>8}",
        f"{'overall':<10} {scores['precision']:9.2f} {scores['recall']:8.2f} {scores['f1']:8.2f} "
        f"{scores['true_entities']:8d} {scores['pred_entities']:8d}",
    ]
    for kind, s in scores["per_type"].items():
        lines.append(f"{kind:<10} {s['precision']:9.2f} {s['recall']:8.2f} {s['f1']:8.2f} "
                     f"{s['support']:8d} {s['predicted']:8d}")
    return "\n".join(lines)
