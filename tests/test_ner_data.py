"""CoNLL reading, tag schemes, tokenizer, vocabulary, outputs and the
tensorflow-datasets loader (offline, with mocked data)."""

import json
import random
from pathlib import Path

import numpy as np
import pytest

from apps.ner import data
from apps.ner.data import Sentence
from lstm_core.errors import UserError

SAMPLE = Path(data.__file__).parent / "sample"


def write(tmp_path, text, name="file.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- read_conll -----------------------------------------------------------------


def test_two_columns_docstart_trailing_spaces_blank_runs(tmp_path):
    path = write(tmp_path, "-DOCSTART- O\n\nJohn B-PER  \nlives O\nin O\nRome B-LOC\n"
                           "\n\n\nHe O\nleft O \t\n\n\n")
    assert data.read_conll(path) == [
        Sentence(["John", "lives", "in", "Rome"], ["B-PER", "O", "O", "B-LOC"]),
        Sentence(["He", "left"], ["O", "O"])]


def test_four_columns_no_final_blank_line(tmp_path):
    path = write(tmp_path, "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                           "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER")
    sentences = data.read_conll(path)
    assert sentences[1] == Sentence(["Peter", "Blackburn"], ["B-PER", "I-PER"])
    assert data.read_conll(path, tag_column=2)[0].tags == ["B-NP", "B-VP"]
    assert len(sentences) == 2


def test_utf8_and_crlf(tmp_path):
    path = tmp_path / "file.txt"
    path.write_bytes("\ufeffZürich B-LOC\r\n\r\nAndré B-PER\r\n".encode("utf-8"))
    assert [s.tokens for s in data.read_conll(path)] == [["Zürich"], ["André"]]


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path, "-DOCSTART- O\n\nJohn B-PER\nlives here O\n")
    with pytest.raises(UserError, match=r"file\.txt:4: expected 2 columns, got 3: 'lives here O'"):
        data.read_conll(path)


def test_bad_tag_names_file_and_line(tmp_path):
    path = write(tmp_path, "John B-PER\n\nRome LOC\n")
    with pytest.raises(UserError, match=r"file\.txt:3: bad tag 'LOC'"):
        data.read_conll(path)
    with pytest.raises(UserError, match=r"file\.txt:1: bad tag 'X-PER'"):
        data.read_conll(write(tmp_path, "John X-PER\n"))


def test_missing_file_and_bad_tag_column(tmp_path):
    with pytest.raises(UserError, match="nope.txt"):
        data.read_conll(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="tag_column 5"):
        data.read_conll(write(tmp_path, "John B-PER\n"), tag_column=5)
    with pytest.raises(UserError, match="not UTF-8"):
        path = tmp_path / "latin1.txt"
        path.write_bytes("Z\xfcrich B-LOC\n".encode("latin-1"))
        data.read_conll(path)


# -- schemes --------------------------------------------------------------------

BIO = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-LOC", "B-ORG", "B-MISC"]
IOBES = ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "I-LOC", "E-LOC", "S-ORG", "S-MISC"]
IOB1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-LOC", "I-ORG", "I-MISC"]


def test_detect_scheme():
    assert data.detect_scheme([Sentence(["a"] * 9, BIO)]) == "bio"
    assert data.detect_scheme([Sentence(["a"] * 9, IOBES)]) == "iobes"
    assert data.detect_scheme([Sentence(["a"] * 9, IOB1)]) == "iob1"
    # I- after an entity of another type starts an entity too
    assert data.detect_scheme([Sentence(["a", "b"], ["B-PER", "I-LOC"])]) == "iob1"
    assert data.detect_scheme([Sentence(["a"], ["O"]), Sentence(["b"], ["I-PER"])]) == "iob1"


def test_convert_known_sequences():
    assert data.convert_tags(BIO, "bio", "iobes") == IOBES
    assert data.convert_tags(IOBES, "iobes", "bio") == BIO
    assert data.convert_tags(IOB1, "iob1", "bio") == BIO
    assert data.convert_tags(IOB1, "iob1", "iob2") == BIO
    assert data.convert_tags(BIO, "bio", "iob1") == IOB1
    assert data.convert_tags(IOB1, "iob1", "iobes") == IOBES
    # ill-formed BIO is read as the scorer reads it
    assert data.convert_tags(["O", "I-PER", "I-LOC"], "bio", "bio") == ["O", "B-PER", "B-LOC"]


def random_bio(rng, length):
    tags, previous = [], "O"
    for _ in range(length):
        kind = rng.choice(["PER", "LOC", "ORG"])
        r = rng.random()
        if r < 0.4:
            tag = "O"
        elif r < 0.7 or previous == "O":
            tag = "B-" + kind
        else:
            tag = "I-" + previous[2:]
        tags.append(tag)
        previous = tag
    return tags


def test_round_trips():
    rng = random.Random(0)
    for _ in range(300):
        bio = random_bio(rng, rng.randint(0, 15))
        iobes = data.convert_tags(bio, "bio", "iobes")
        iob1 = data.convert_tags(bio, "bio", "iob1")
        assert data.convert_tags(iobes, "iobes", "bio") == bio
        assert data.convert_tags(iob1, "iob1", "bio") == bio
        assert data.convert_tags(iob1, "iob1", "iobes") == iobes
        assert data.convert_tags(bio, "bio", "bio") == bio
        assert data.chunks(bio) == data.chunks(iobes) == data.chunks(iob1)


def test_bad_scheme_names():
    with pytest.raises(ValueError, match="'bilou'"):
        data.convert_tags(["O"], "bio", "bilou")
    with pytest.raises(ValueError, match="'iob3'"):
        data.convert_tags(["O"], "iob3", "bio")


def test_convert_sentences_auto():
    sentences = [Sentence(["a"] * 9, IOB1)]
    out = data.convert_sentences(sentences, "iobes")
    assert out == [Sentence(["a"] * 9, IOBES)]
    assert sentences[0].tags == IOB1  # input untouched
    assert data.convert_sentences(out, "bio", source="iobes")[0].tags == BIO


# -- tokenize and entity_spans ---------------------------------------------------


@pytest.mark.parametrize("text, tokens", [
    ("The U.S. economy grew 3.5% in 2023.",
     ["The", "U.S.", "economy", "grew", "3.5", "%", "in", "2023", "."]),
    ("O'Neil's state-of-the-art plan (e.g. \"this\") costs $3,000!",
     ["O'Neil", "'s", "state-of-the-art", "plan", "(", "e.g.", '"', "this", '"', ")",
      "costs", "$", "3,000", "!"]),
    ("  Zürich,Genève…  naïve  ", ["Zürich", ",", "Genève", "…", "naïve"]),
    ("Hello... world-- a-b--c 1,2 and x,y", ["Hello", ".", ".", ".", "world", "-", "-", "a-b",
                                             "-", "-", "c", "1,2", "and", "x", ",", "y"]),
    ("snake_case Mr. Smith's", ["snake", "_", "case", "Mr", ".", "Smith", "'s"]),
    ("", []),
    ("\t \n", []),
])
def test_tokenize(text, tokens):
    spans = data.tokenize(text)
    assert [t for t, _, _ in spans] == tokens
    for token, start, end in spans:
        assert text[start:end] == token
    assert [s for _, s, _ in spans] == sorted(s for _, s, _ in spans)


def test_read_lines_of_plain_text(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("\ufeffOne\u2028two\r\n\nthree\n".encode("utf-8"))
    assert data.read_lines(path) == ["One\u2028two", "", "three"]
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"in.txt:1: not UTF-8 text \(invalid continuation byte"):
        data.read_lines(path)


def test_entity_spans():
    tokens = ["John", "Smith", "visited", "New", "York", "."]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    assert data.entity_spans(tokens, tags) == [
        {"type": "PER", "start_token": 0, "end_token": 2, "text": "John Smith"},
        {"type": "LOC", "start_token": 3, "end_token": 5, "text": "New York"}]
    iobes = ["B-PER", "E-PER", "O", "B-LOC", "E-LOC", "O"]
    assert data.entity_spans(tokens, iobes) == data.entity_spans(tokens, tags)

    text = "Ask  U.S. officials in New\tYork."
    spans = data.tokenize(text)
    tokens = [t for t, _, _ in spans]
    tags = ["O", "B-LOC", "O", "O", "B-LOC", "I-LOC", "O"]
    entities = data.entity_spans(tokens, tags, text, [(s, e) for _, s, e in spans])
    assert [(e["text"], e["start"], e["end"]) for e in entities] == [
        ("U.S.", 5, 9), ("New\tYork", 23, 31)]
    for e in entities:
        assert text[e["start"]:e["end"]] == e["text"]
    assert data.entity_spans([], []) == []
    with pytest.raises(ValueError):
        data.entity_spans(["a"], [])


# -- vocabulary and outputs ------------------------------------------------------


def test_build_vocab():
    sentences = [Sentence(["the", "Cat", "the", "cat"], ["O", "B-MISC", "O", "O"]),
                 Sentence(["a", "The"], ["S-PER", "O"])]
    vocab = data.build_vocab(sentences)
    assert vocab["words"] == ["the", "Cat", "The", "a", "cat"]
    assert vocab["tags"] == ["O", "B-MISC", "B-PER", "E-MISC", "E-PER", "I-MISC", "I-PER",
                             "S-MISC", "S-PER"]
    assert data.build_vocab(sentences, scheme="bio")["tags"] == \
        ["O", "B-MISC", "B-PER", "I-MISC", "I-PER"]
    assert vocab["chars"][:4] == ["t", "a", "e", "h"]  # t x4; a, e, h x3: alphabetical
    assert set(vocab["chars"]) == set("theCcaT")
    assert data.build_vocab(sentences, min_count=2)["words"] == ["the"]
    assert data.build_vocab(sentences, lowercase=True)["words"] == ["the", "cat", "a"]
    assert data.build_vocab(sentences, min_count=2, lowercase=True)["words"] == ["the", "cat"]
    assert "C" in data.build_vocab(sentences, lowercase=True)["chars"]


def test_write_conll_and_jsonl(tmp_path, capsys):
    sentences = [Sentence(["John", "left"], ["B-PER", "O"]), Sentence(["Go"], ["O"])]
    data.write_conll(tmp_path / "out.txt", sentences, [["B-PER", "O"], ["B-LOC"]])
    assert (tmp_path / "out.txt").read_text() == "John B-PER B-PER\nleft O O\n\nGo O B-LOC\n\n"
    again = data.read_conll(tmp_path / "out.txt", tag_column=1)
    assert again == sentences
    data.write_conll(None, [Sentence(["Go"], [])], [["O"]])
    assert capsys.readouterr().out == "Go O\n\n"

    item = {"text": "Zürich", "tokens": ["Zürich"], "tags": ["B-LOC"],
            "entities": data.entity_spans(["Zürich"], ["B-LOC"], "Zürich", [(0, 6)])}
    data.write_jsonl(tmp_path / "out.jsonl", [item, item])
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "Zürich" in lines[0] and json.loads(lines[1]) == item


# -- tensorflow-datasets ---------------------------------------------------------


def aligned_examples(requested):
    """An ``as_dataset_fn`` for tfds' mock: random examples whose tokens and
    tags have one length (the default mock draws each sequence separately)."""
    import tensorflow as tf

    def as_dataset(self, split, *args, **kwargs):
        requested.append(str(split))
        features = self.info.features
        tag_key = "ner" if "ner" in features else "tags"
        rng = np.random.default_rng(0)
        examples = []
        for _ in range(3):
            n = int(rng.integers(1, 6))
            example = {"tokens": [f"w{i} x" if i == 0 else f"w{i}" for i in range(n)],
                       tag_key: rng.integers(0, features[tag_key].feature.num_classes, n)}
            for key in features:
                if key not in example:  # pos, chunks, langs, spans
                    example[key] = np.zeros(n, np.int64) if key in ("pos", "chunks") else ["x"] * n
            examples.append(example)
        signature = features.get_tensor_info()
        return tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_signature={k: tf.TensorSpec(v.shape, v.dtype) for k, v in signature.items()})
    return as_dataset


@pytest.mark.parametrize("name, split, real_split, names", [
    ("conll2003", "validation", "dev", {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC",
                                        "I-LOC", "B-MISC", "I-MISC"}),
    ("wikiann/en", "dev", "validation", {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC",
                                         "I-LOC"}),
])
def test_load_tfds(tmp_path, name, split, real_split, names):
    import tensorflow_datasets as tfds

    requested = []
    with tfds.testing.mock_data(num_examples=3, as_dataset_fn=aligned_examples(requested)):
        sentences = data.load_tfds(name, split, data_dir=str(tmp_path))
    assert requested == [real_split]
    assert len(sentences) == 3
    for sentence in sentences:
        assert isinstance(sentence, Sentence)
        assert len(sentence.tokens) == len(sentence.tags) > 0
        assert all(isinstance(t, str) and t.split() == [t] for t in sentence.tokens)
        assert set(sentence.tags) <= names
    assert sentences[0].tokens[0] == "w0_x"  # whitespace inside a token


@pytest.mark.parametrize("name", ["conll2003", "wikiann/en"])
def test_load_tfds_default_mock(tmp_path, name):
    """tfds' own random mock draws each sequence with its own length: a
    misaligned example is reported, never silently truncated."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        with pytest.raises(UserError, match=r"example 0: \d+ tokens but \d+ tags"):
            data.load_tfds(name, "train", data_dir=str(tmp_path))


def test_load_tfds_errors(tmp_path):
    with pytest.raises(UserError, match="not prepared.*tfds build conll2003.*" + tmp_path.name):
        data.load_tfds("conll2003", "train", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="unsupported"):
        data.load_tfds("mnist", "train")
    with pytest.raises(UserError, match="wikiann/en"):
        data.load_tfds("wikiann", "train")


# -- the shipped sample ----------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "valid"])
def test_sample_files(split):
    path = SAMPLE / f"{split}.txt"
    assert path.stat().st_size < 100_000
    assert path.read_text(encoding="utf-8").startswith("-DOCSTART- O\n")
    sentences = data.read_conll(path)
    assert len(sentences) >= (600 if split == "train" else 150)
    assert data.detect_scheme(sentences) == "bio"
    types = {e["type"] for s in sentences for e in data.entity_spans(s.tokens, s.tags)}
    assert types == {"PER", "ORG", "LOC", "MISC"}


def test_sample_valid_has_unseen_names():
    def entities(split):
        return {e["text"] for s in data.read_conll(SAMPLE / f"{split}.txt")
                for e in data.entity_spans(s.tokens, s.tags)}
    valid = entities("valid")
    assert len(valid - entities("train")) >= len(valid) // 10
