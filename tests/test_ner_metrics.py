"""Entity scores against an independent port of conlleval.pl and against
values worked out by hand."""

import random

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from apps.ner.metrics import entity_scores, format_report

# -- a port of conlleval.pl (Sang & Buchholz), with its streaming counter --------
# endOfChunk / startOfChunk are conlleval's rules; the lines marked IOBES are the
# usual extension for S- tags and for an E- followed by B- (conlleval.pl itself
# predates IOBES). Counting follows conlleval's main loop: a chunk is correct
# when gold and guess start together with one type and end together.


def split_tag(tag):
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def end_of_chunk(prev_tag, tag, prev_type, type_):
    return any([
        prev_tag == "B" and tag == "B",
        prev_tag == "B" and tag == "O",
        prev_tag == "I" and tag == "B",
        prev_tag == "I" and tag == "O",
        prev_tag == "E" and tag == "E",
        prev_tag == "E" and tag == "I",
        prev_tag == "E" and tag == "O",
        prev_tag not in ("O", ".") and prev_type != type_,
        # IOBES
        prev_tag in ("E", "S"),
        prev_tag in ("B", "I") and tag == "S",
    ])


def start_of_chunk(prev_tag, tag, prev_type, type_):
    return any([
        prev_tag == "B" and tag == "B",
        prev_tag == "I" and tag == "B",
        prev_tag == "O" and tag == "B",
        prev_tag == "O" and tag == "I",
        prev_tag == "E" and tag == "E",
        prev_tag == "E" and tag == "I",
        prev_tag == "O" and tag == "E",
        tag not in ("O", ".") and prev_type != type_,
        # IOBES
        tag in ("B", "S"),
        prev_tag == "S" and tag in ("E", "I"),
    ])


def conlleval(true_tags, pred_tags):
    """(precision, recall, FB1, per-type dict) computed the conlleval.pl way."""
    correct_chunk = found_correct = found_guessed = 0
    by_type = {}

    def count(kind, key):
        by_type.setdefault(kind, {"correct": 0, "gold": 0, "guessed": 0})[key] += 1

    lines = []
    for gold, pred in zip(true_tags, pred_tags):
        lines += list(zip(gold, pred)) + [("O", "O")]  # a sentence break is an O line
    last_correct, last_correct_type = "O", ""
    last_guessed, last_guessed_type = "O", ""
    in_correct = False
    for gold, pred in lines:
        correct, correct_type = split_tag(gold)
        guessed, guessed_type = split_tag(pred)
        end_c = end_of_chunk(last_correct, correct, last_correct_type, correct_type)
        end_g = end_of_chunk(last_guessed, guessed, last_guessed_type, guessed_type)
        start_c = start_of_chunk(last_correct, correct, last_correct_type, correct_type)
        start_g = start_of_chunk(last_guessed, guessed, last_guessed_type, guessed_type)
        if in_correct:
            if end_c and end_g and last_guessed_type == last_correct_type:
                in_correct = False
                correct_chunk += 1
                count(last_correct_type, "correct")
            elif end_c != end_g or guessed_type != correct_type:
                in_correct = False
        if start_c and start_g and guessed_type == correct_type:
            in_correct = True
        if start_c:
            found_correct += 1
            count(correct_type, "gold")
        if start_g:
            found_guessed += 1
            count(guessed_type, "guessed")
        last_correct, last_correct_type = correct, correct_type
        last_guessed, last_guessed_type = guessed, guessed_type
    if in_correct:
        correct_chunk += 1
        count(last_correct_type, "correct")

    def prf(c, guessed, gold):
        p = 100.0 * c / guessed if guessed else 0.0
        r = 100.0 * c / gold if gold else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    per_type = {k: prf(v["correct"], v["guessed"], v["gold"]) + (v["gold"],)
                for k, v in by_type.items()}
    return prf(correct_chunk, found_guessed, found_correct) + (per_type,)


def random_tags(rng, length, prefixes, types=("PER", "LOC", "ORG")):
    return ["O" if rng.random() < 0.4 else f"{rng.choice(prefixes)}-{rng.choice(types)}"
            for _ in range(length)]


def corrupt(rng, tags, prefixes, types=("PER", "LOC", "ORG")):
    """A guess close to ``tags``: most tags kept, some replaced at random."""
    return [t if rng.random() < 0.7 else random_tags(rng, 1, prefixes, types)[0] for t in tags]


@pytest.mark.parametrize("prefixes", ["BI", "I", "BIES"], ids=["bio", "iob1", "iobes"])
def test_matches_conlleval_on_random_sequences(prefixes):
    rng = random.Random(f"ner-{prefixes}")
    for seed in range(300):
        n_sent = rng.randint(1, 4)
        gold = [random_tags(rng, rng.randint(0, 12), prefixes) for _ in range(n_sent)]
        pred = [corrupt(rng, g, prefixes) for g in gold]
        scores = entity_scores(gold, pred)
        p, r, f, per_type = conlleval(gold, pred)
        assert scores["precision"] == pytest.approx(p), (seed, gold, pred)
        assert scores["recall"] == pytest.approx(r), (seed, gold, pred)
        assert scores["f1"] == pytest.approx(f), (seed, gold, pred)
        assert set(scores["per_type"]) == set(per_type)
        for kind, (tp, tr, tf, support) in per_type.items():
            got = scores["per_type"][kind]
            assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((tp, tr, tf))
            assert got["support"] == support


def test_matches_seqeval_scores():
    rng = random.Random(7)
    for _ in range(50):
        gold = [random_tags(rng, rng.randint(1, 10), "BI") for _ in range(3)]
        pred = [corrupt(rng, g, "BI") for g in gold]
        scores = entity_scores(gold, pred)
        kwargs = {"zero_division": 0}
        assert scores["precision"] == pytest.approx(100 * precision_score(gold, pred, **kwargs))
        assert scores["recall"] == pytest.approx(100 * recall_score(gold, pred, **kwargs))
        assert scores["f1"] == pytest.approx(100 * f1_score(gold, pred, **kwargs))


def test_hand_computed_example():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG"],
            ["O", "B-MISC", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-ORG", "O"],  # PER right; LOC, ORG too long/short
            ["I-MISC", "I-MISC", "O"]]  # I- after O starts an entity: MISC 0-1, wrong boundary
    s = entity_scores(gold, pred)
    # gold: PER, LOC, ORG, MISC = 4; predicted: PER, LOC(2), ORG(1), MISC(2) = 4; correct: PER
    assert (s["true_entities"], s["pred_entities"], s["correct_entities"]) == (4, 4, 1)
    assert s["precision"] == pytest.approx(25.0)
    assert s["recall"] == pytest.approx(25.0)
    assert s["f1"] == pytest.approx(25.0)
    assert s["tokens"] == 10
    assert s["accuracy"] == pytest.approx(60.0)  # 4 of 10 tags differ
    assert s["per_type"]["PER"] == {"precision": 100.0, "recall": 100.0, "f1": 100.0,
                                    "support": 1, "predicted": 1, "correct": 1}
    assert s["per_type"]["LOC"]["f1"] == 0.0 and s["per_type"]["LOC"]["support"] == 1


def test_precision_recall_differ():
    gold = [["B-PER", "O", "B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "O", "B-LOC", "O", "O"]]
    s = entity_scores(gold, pred)
    assert s["precision"] == pytest.approx(100.0)
    assert s["recall"] == pytest.approx(200 / 3)
    assert s["f1"] == pytest.approx(80.0)
    assert s["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                    "support": 1, "predicted": 0, "correct": 0}


def test_entities_do_not_cross_sentences():
    # Joined, these would be one PER entity; per sentence they are two.
    s = entity_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])
    assert s["true_entities"] == 2 and s["f1"] == pytest.approx(100.0)


def test_iobes_and_bio_score_alike():
    gold_bio = [["B-PER", "I-PER", "I-PER", "O", "B-LOC"]]
    gold_iobes = [["B-PER", "I-PER", "E-PER", "O", "S-LOC"]]
    pred = [["B-PER", "I-PER", "O", "O", "B-LOC"]]
    assert entity_scores(gold_bio, pred)["f1"] == pytest.approx(entity_scores(gold_iobes, pred)["f1"])


def test_empty_and_no_entities():
    s = entity_scores([], [])
    assert (s["precision"], s["recall"], s["f1"], s["accuracy"]) == (0.0, 0.0, 0.0, 0.0)
    s = entity_scores([["O", "O"]], [["O", "O"]])
    assert s["accuracy"] == 100.0 and s["per_type"] == {} and s["f1"] == 0.0


def test_length_mismatch():
    with pytest.raises(ValueError, match="sentence 0"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold sentences but 2"):
        entity_scores([["O"]], [["O"], ["O"]])


def test_format_report():
    s = entity_scores([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]])
    lines = format_report(s).splitlines()
    assert lines[0].startswith("processed 3 tokens with 2 entities; found: 1; correct: 1;")
    assert lines[1].split() == ["type", "precision", "recall", "f1", "support", "found"]
    assert lines[2].split() == ["overall", "100.00", "50.00", "66.67", "2", "1"]
    assert lines[3].split() == ["LOC", "0.00", "0.00", "0.00", "1", "0"]
    assert lines[4].split() == ["PER", "100.00", "100.00", "100.00", "1", "1"]
    assert len({len(line) for line in lines[1:]}) == 1  # fixed width
