"""Write the translation quickstart's sample: English sentences and their
translations into Tokipo, a made-up rule-based language (its words borrowed
from Esperanto's, its grammar simpler), as TSV files next to this script.

    python apps/translation/sample/make_sample.py

What a model must learn, besides the words:

- word order: English subject-verb-object becomes subject-object-verb, a
  time adverb moves to the front, a place phrase before the object, an
  adjective after its noun;
- morphology: nouns end in -o, adjectives in -a, both agree in number (-j)
  and mark the object (-n); verbs end in -as (present), -is (past) or -os
  (future: English "will see" is one word), whatever the subject;
- words that come and go: English "a" and the "do" of questions and
  negations have no Tokipo word; questions start with "Ĉu";
- names are copied (with -n as an object), and everything is cased and
  punctuated, so the scores are cased BLEU on raw text.

The same seed gives the same files; the dev and test sentences never occur
in train.
"""

import random
from pathlib import Path

# English singular, plural -> Tokipo stem
NOUNS = {
    "dog": ("dogs", "hund"), "cat": ("cats", "kat"), "bird": ("birds", "bird"),
    "horse": ("horses", "ĉeval"), "child": ("children", "infan"), "man": ("men", "vir"),
    "woman": ("women", "virin"), "teacher": ("teachers", "instruist"),
    "farmer": ("farmers", "kamparan"), "doctor": ("doctors", "kuracist"),
    "friend": ("friends", "amik"), "fish": ("fish", "fiŝ"), "ball": ("balls", "pilk"),
    "book": ("books", "libr"), "apple": ("apples", "pom"), "letter": ("letters", "leter"),
    "picture": ("pictures", "bild"), "song": ("songs", "kant"), "boat": ("boats", "boat"),
    "car": ("cars", "aŭt"), "hat": ("hats", "ĉapel"), "cake": ("cakes", "kuk"),
}
ANIMATE = ["dog", "cat", "bird", "horse", "child", "man", "woman", "teacher", "farmer",
           "doctor", "friend", "fish"]
PLACES = {"house": "dom", "garden": "ĝarden", "city": "urb", "river": "river",
          "park": "park", "kitchen": "kuirej", "school": "lernej", "forest": "arbar"}
PREPOSITIONS = {"in": "en", "near": "apud", "behind": "malantaŭ", "under": "sub"}
ADJECTIVES = {"big": "grand", "small": "malgrand", "red": "ruĝ", "green": "verd",
              "old": "malnov", "young": "jun", "happy": "feliĉ", "beautiful": "bel",
              "fast": "rapid", "quiet": "kviet", "black": "nigr", "white": "blank"}
# English present (3rd person singular, other), past -> Tokipo stem
VERBS = {"see": ("sees", "saw", "vid"), "like": ("likes", "liked", "ŝat"),
         "chase": ("chases", "chased", "ĉas"), "find": ("finds", "found", "trov"),
         "carry": ("carries", "carried", "port"), "watch": ("watches", "watched", "rigard"),
         "paint": ("paints", "painted", "pentr"), "buy": ("buys", "bought", "aĉet"),
         "want": ("wants", "wanted", "vol"), "draw": ("draws", "drew", "desegn")}
NUMBERS = {"two": "du", "three": "tri", "four": "kvar", "five": "kvin"}
NAMES = ["Anna", "Tom", "Maria", "Peter", "Lena", "Omar", "Yuki", "Carlos", "Ingrid", "Kofi"]
TIMES = {"yesterday": ("past", "hieraŭ"), "today": ("present", "hodiaŭ"),
         "tomorrow": ("future", "morgaŭ")}
ENDINGS = {"present": "as", "past": "is", "future": "os"}


def noun_phrase(rng, nouns, role):
    """``(english words, tokipo words, plural)`` of a noun phrase; ``role``
    is ``subject`` or ``object`` (Tokipo marks objects with -n)."""
    accusative = "n" if role == "object" else ""
    if nouns is ANIMATE and rng.random() < 0.2:
        name = rng.choice(NAMES)
        return [name], [name + accusative], False
    noun = rng.choice(nouns)
    plural_form, stem = NOUNS[noun]
    kind = rng.choice(["the", "the", "a", "number", "some"])
    plural = kind in ("number", "some") or (kind == "the" and rng.random() < 0.4)
    adjective = rng.choice(list(ADJECTIVES)) if rng.random() < 0.5 else None
    english = ([adjective] if adjective else []) + [plural_form if plural else noun]
    number = "j" if plural else ""
    tokipo = [stem + "o" + number + accusative]
    if adjective:
        tokipo.append(ADJECTIVES[adjective] + "a" + number + accusative)
    if kind == "the":
        english, tokipo = ["the"] + english, ["la"] + tokipo
    elif kind == "a":
        english = ["an" if english[0][0] in "aeiou" else "a"] + english
    elif kind == "number":
        count = rng.choice(list(NUMBERS))
        english, tokipo = [count] + english, [NUMBERS[count]] + tokipo
    else:
        english, tokipo = ["some"] + english, ["kelkaj" + accusative] + tokipo
    return english, tokipo, plural


def place_phrase(rng):
    preposition, place = rng.choice(list(PREPOSITIONS)), rng.choice(list(PLACES))
    return [preposition, "the", place], [PREPOSITIONS[preposition], "la", PLACES[place] + "o"]


def english_verb(verb, tense, plural, negated, question):
    """The English verb group: ``(auxiliary or None, words after the subject)``."""
    third, past, _ = VERBS[verb]
    if tense == "future":
        return ("will", [verb]) if question else (None, ["will", "not", verb] if negated
                                                  else ["will", verb])
    do = {"past": "did", "present": "do" if plural else "does"}[tense]
    if question:
        return do, [verb]
    if negated:
        return None, [do, "not", verb]
    return None, [{"past": past, "present": verb if plural else third}[tense]]


def sentence(rng):
    """One ``(english, tokipo)`` pair."""
    subject, subject_tokipo, plural = noun_phrase(rng, ANIMATE, "subject")
    obj, object_tokipo, _ = noun_phrase(rng, rng.choice([ANIMATE, list(NOUNS)]), "object")
    verb = rng.choice(list(VERBS))
    time = rng.choice(list(TIMES)) if rng.random() < 0.35 else None
    tense = TIMES[time][0] if time else rng.choice(["present", "present", "past", "future"])
    question = rng.random() < 0.2
    negated = not question and rng.random() < 0.2
    place = place_phrase(rng) if rng.random() < 0.35 else ([], [])
    auxiliary, verb_words = english_verb(verb, tense, plural, negated, question)
    english = ([auxiliary] if auxiliary else []) + subject + verb_words + obj + place[0]
    english += [time] if time else []
    tokipo = (["Ĉu"] if question else []) + ([TIMES[time][1]] if time else [])
    tokipo += subject_tokipo + place[1] + object_tokipo + (["ne"] if negated else [])
    tokipo += [VERBS[verb][2] + ENDINGS[tense]]
    mark = "?" if question else "."
    return _capitalized(english) + mark, _capitalized(tokipo) + mark


def _capitalized(words):
    text = " ".join(words)
    return text[0].upper() + text[1:]


def write(folder, seed=19, sizes=(("train", 4000), ("dev", 200), ("test", 200))):
    rng = random.Random(seed)
    seen = set()
    for split, size in sizes:
        rows = []
        while len(rows) < size:
            pair = sentence(rng)
            if pair[0] not in seen:
                seen.add(pair[0])
                rows.append(pair)
        (Path(folder) / f"{split}.tsv").write_text("".join(f"{e}\t{t}\n" for e, t in rows),
                                                  encoding="utf-8")


if __name__ == "__main__":
    write(Path(__file__).parent)
