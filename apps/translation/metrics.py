"""Scores of translations with sacreBLEU (Post 2018): BLEU and chrF of the
detokenized output against the raw references, as published results are
compared, and BLEU of both lowercased, as the Multi30k literature reports
it (on its own lowercased, tokenized text, which is kinder still).

Each score comes with sacreBLEU's signature (tokenizer, case, smoothing,
version), which says exactly how it was computed: a BLEU figure without it
cannot be compared with another.
"""


def score(hypotheses, references, tokenize="13a"):
    """``(scores, report)``: ``scores`` flat numbers (``bleu``, ``chrf``,
    ``bleu_lowercase`` floats; ``sentences``, ``hypothesis_length``,
    ``reference_length`` integer counts), ``report`` the lines a person
    reads, the signatures included."""
    from sacrebleu.metrics import BLEU, CHRF

    metrics = {"bleu": BLEU(tokenize=tokenize), "bleu_lowercase": BLEU(tokenize=tokenize,
                                                                        lowercase=True),
               "chrf": CHRF()}
    results = {name: metric.corpus_score(hypotheses, [references])
               for name, metric in metrics.items()}
    bleu = results["bleu"]
    scores = {"bleu": float(bleu.score), "chrf": float(results["chrf"].score),
              "bleu_lowercase": float(results["bleu_lowercase"].score),
              "sentences": len(hypotheses), "hypothesis_length": int(bleu.sys_len),
              "reference_length": int(bleu.ref_len)}
    lines = [f"BLEU {bleu.score:.2f} (lowercased {results['bleu_lowercase'].score:.2f}), chrF "
             f"{results['chrf'].score:.2f} on {len(hypotheses)} sentences",
             f"  {bleu.format(width=2)}"]
    lines += [f"  signature {name}: {metrics[name].get_signature()}" for name in metrics]
    return scores, "\n".join(lines)
