"""The translation app's data on files the tests write: aligned files and
TSVs (plain and gzip), their errors (ragged files, bytes that are not
UTF-8), the filters and their counts, tensorflow-datasets sets through
tfds's mock data, and SentencePiece applied in the graph (tensorflow-text)
exactly as the Python library applies it."""

import gzip

import numpy as np
import pytest
import tensorflow as tf

from apps.translation import data as corpora
from apps.translation import subwords
from apps.translation.app import TranslationApp
from lstm_core.errors import UserError

ENGLISH = ["The dog sees a ball.", "Anna likes the red car!", "Do two cats chase Tom?",
           "A small bird sings.", "The children will paint the house tomorrow."]
TOKIPO = ["La hundo pilkon vidas.", "Anna la aŭton ruĝan ŝatas!", "Ĉu du katoj Tomon ĉasas?",
          "Birdo malgranda kantas.", "Morgaŭ la infanoj la domon pentros."]


def write(path, lines, compress=False):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def config_for(**data):
    app = TranslationApp()
    defaults = {k: v.default for k, v in app.data_schema.items() if not isinstance(v, dict)}
    return app, {"data": {**defaults, "subwords": {}, **data}}


def test_aligned_files_plain_and_gzip_and_tsv_read_alike(tmp_path):
    plain = corpora.read_parallel(write(tmp_path / "a.en", ENGLISH), write(tmp_path / "a.to", TOKIPO))
    packed = corpora.read_parallel(write(tmp_path / "b.en.gz", ENGLISH, True),
                                   write(tmp_path / "b.to.gz", TOKIPO, True))
    tsv = corpora.read_tsv(write(tmp_path / "c.tsv.gz", [f"{e}\t{t}" for e, t in
                                                           zip(ENGLISH, TOKIPO)], True))
    for pairs in (plain, packed, tsv):
        assert [(p.source, p.target) for p in pairs] == list(zip(ENGLISH, TOKIPO))
    assert plain[2].origin == "a.en:3"


def test_files_of_different_lengths_name_both_files_and_counts(tmp_path):
    source = write(tmp_path / "train.en.gz", ENGLISH, True)
    target = write(tmp_path / "train.to", TOKIPO[:3])
    with pytest.raises(UserError) as error:
        corpora.read_parallel(source, target)
    assert str(error.value).startswith(f"{source} has 5 lines but {target} has 3")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path, compress):
    lines = "\n".join(ENGLISH[:2]).encode() + b"\nCaf\xe9 au lait\n"  # Latin-1
    path = tmp_path / ("latin1.en.gz" if compress else "latin1.en")
    path.write_bytes(gzip.compress(lines) if compress else lines)
    with pytest.raises(UserError, match=rf"{path}:3: not UTF-8 text \(byte 0xe9 at column 4\)"):
        corpora.read_lines(path)


def test_tsv_lines_need_two_fields(tmp_path):
    path = write(tmp_path / "pairs.tsv", ["a\tb", "", "one\ttwo\tthree"])
    with pytest.raises(UserError, match=rf"{path}:3: expected source<TAB>target, found 3"):
        corpora.read_tsv(path)
    pairs = corpora.read_tsv(write(tmp_path / "ok.tsv", ["a\tb", "", "c\t"]))
    assert [(p.source, p.target) for p in pairs] == [("a", "b"), ("", ""), ("c", "")]


def test_filters_count_empty_and_long_pairs():
    filtered = corpora.filter_pairs([[5], [], [5, 6, 7], [5, 6], [5]], [[8], [9], [8], [], [8] * 4],
                                    max_source=2, max_target=3)
    assert filtered.kept == [([5], [8])]
    assert (filtered.empty, filtered.too_long) == (2, 2)
    assert "1 pairs kept; left out 2 with an empty side and 2 longer than 2 source or 3 " \
           "target" in filtered.report("train data", 2, 3)


def test_evaluate_data_is_a_tsv_a_file_next_to_its_translation_or_a_split(tmp_path):
    write(tmp_path / "test_2016.en.gz", ENGLISH, True)
    write(tmp_path / "test_2016.to.gz", TOKIPO, True)
    app, config = config_for(source_language="en", target_language="to",
                             test_source=str(tmp_path / "test.x"), test_target=str(tmp_path / "t.y"))
    pairs = app.pairs(config, "dev", tmp_path / "test_2016.en.gz")
    assert [p.target for p in pairs] == TOKIPO
    write(tmp_path / "test.x", ENGLISH[:2])
    write(tmp_path / "t.y", TOKIPO[:2])
    assert [p.target for p in app.pairs(config, "dev", tmp_path / "test.x")] == TOKIPO[:2]
    with pytest.raises(UserError, match=r"give a TSV of source<TAB>target lines"):
        app.pairs(config, "dev", write(tmp_path / "other.txt", ENGLISH))
    app, config = config_for(dev_source="a", dev_pairs="b")
    with pytest.raises(UserError, match=r"data\.dev_source and data\.dev_target .*: not both"):
        app.pairs(config, "dev")


def test_tensorflow_datasets_sets_read_offline(tmp_path):
    import tensorflow_datasets as tfds

    name = "ted_hrlr_translate/pt_to_en"
    app, config = config_for(tfds=name, tfds_data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"is not prepared there; prepare it once"):
        app.pairs(config, "train")
    with tfds.testing.mock_data(num_examples=6):
        pairs = app.pairs(config, "dev")
        assert len(pairs) == 6 and all(isinstance(p.source, str) for p in pairs)
        assert pairs[0].origin == f"{name}:validation:1"
        # the reverse direction, by feature name
        _, reverse = config_for(tfds=name, tfds_data_dir=str(tmp_path), source_language="en",
                                target_language="pt")
        assert [(p.target, p.source) for p in app.pairs(reverse, "dev")] == \
            [(p.source, p.target) for p in pairs]
        _, wrong = config_for(tfds=name, tfds_data_dir=str(tmp_path), source_language="de")
        with pytest.raises(UserError, match=r"has no feature 'de'; it has en, pt"):
            app.pairs(wrong, "dev")
    assert app.test_sets(config) == {"test": "tfds:test"}


# -- SentencePiece ------------------------------------------------------------------


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def model_file(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / f"{request.param}.model"
    size = subwords.train((ENGLISH + TOKIPO) * 20, path, kind=request.param, vocab_size=80)
    assert 20 < size <= 80
    return path


def test_training_is_deterministic(model_file, tmp_path):
    kind = model_file.stem
    again = tmp_path / "again.model"
    subwords.train((ENGLISH + TOKIPO) * 20, again, kind=kind, vocab_size=80)
    assert again.read_bytes() == model_file.read_bytes()  # runs of one recipe can ensemble


def test_in_graph_subwords_are_the_python_librarys(model_file):
    import tensorflow_text

    processor = subwords.load(model_file)
    sentences = ENGLISH + TOKIPO + ["", "  spaced   out  ", "Unseen: 東京 ß ¿?", "Ĉu ŭ"]
    expected = subwords.encode(processor, sentences)
    assert all(i not in (subwords.PAD, subwords.BOS, subwords.EOS) for ids in expected for i in ids)
    tokenizer = tensorflow_text.SentencepieceTokenizer(model=model_file.read_bytes())
    ids = tf.function(tokenizer.tokenize)(tf.constant(sentences))
    assert ids.to_list() == expected
    texts = tf.function(tokenizer.detokenize)(ids).numpy()
    assert [t.decode() for t in texts] == [processor.decode(i) for i in expected]
    # raw, cased text comes back as it was (spaces normalised; unseen characters unknown)
    assert [t.decode() for t in texts[:10]] == ENGLISH + TOKIPO
    assert texts[11].decode() == "spaced out"
    assert processor.unk_id() == subwords.UNK and subwords.UNK in expected[12]


def test_too_few_sentences_for_the_characters_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"^data\.subwords\.vocab_size 8 is too small for the "
                                        r"training text: it needs 31 "):
        subwords.train(["abcdefghijklmnopqrstuvwxyz"], tmp_path / "x.model", kind="bpe",
                       vocab_size=8)


def test_unknown_tfds_name_and_missing_data_dir(tmp_path):
    with pytest.raises(UserError, match="data.tfds_data_dir is not set"):
        corpora.read_tfds("ted_hrlr_translate/pt_to_en", "train", None)
    with pytest.raises(UserError, match="data.tfds"):
        corpora.read_tfds("no_such_translate_set", "train", str(tmp_path))


def test_ragged_helper_keeps_rows():
    from apps.translation.app import _ragged

    rows = [[4, 5], [], [6, 7, 8]]
    assert _ragged(rows).to_list() == rows
    assert _ragged(rows).values.dtype == tf.int32 and np.array_equal(
        _ragged(rows).row_lengths(), [2, 0, 3])
