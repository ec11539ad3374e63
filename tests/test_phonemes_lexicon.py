"""CMUdict-format lexicon reading, transcription and missing-word handling, on
tiny lexicons the tests write."""

import pytest

from apps.phonemes.lexicon import inventory, read_lexicon, transcribe, transcribe_all, words
from lstm_core.errors import UserError

CMUDICT = """\
;;; # CMUdict  --  Major Version: 0.07
;;; a comment line
HELLO  HH AH0 L OW1
HELLO(2)  HH EH0 L OW1
WORLD  W ER1 L D
DON'T  D OW1 N T
STOP  S T AA1 P
O'CLOCK  AH0 K L AA1 K
ONE  W AH1 N

TWO  T UW1
"""


def write(tmp_path, text, name="lex.dict", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def lexicon(tmp_path):
    return read_lexicon(write(tmp_path, CMUDICT))


def test_first_pronunciation_comments_and_stress(lexicon, tmp_path):
    assert lexicon == {
        "hello": ["HH", "AH", "L", "OW"], "world": ["W", "ER", "L", "D"],
        "don't": ["D", "OW", "N", "T"], "stop": ["S", "T", "AA", "P"],
        "o'clock": ["AH", "K", "L", "AA", "K"], "one": ["W", "AH", "N"], "two": ["T", "UW"]}
    kept = read_lexicon(write(tmp_path, CMUDICT), strip_stress=False)
    assert kept["hello"] == ["HH", "AH0", "L", "OW1"]
    assert inventory(lexicon) == sorted({"HH", "AH", "L", "OW", "W", "ER", "D", "N", "T",
                                         "S", "AA", "P", "K", "UW"})


def test_cmudict_dict_flavour_alternate_first_and_ipa(tmp_path):
    # cmudict.dict style: lower case, one space, trailing "#" comments; an
    # alternate listed before its main entry loses to it; IPA symbols and a
    # phoneme that is only a digit survive stress stripping.
    text = ("tomato(2) t ah0 m aa1 t ow2\ntomato t ah0 m ey1 t ow2 # US\n"
            "only(2) ow1 n l iy0\n"
            "café\tk a f e\u0301\nbit b ɪ 2\n(PAREN  P ER0 EH1 N\n")
    lexicon = read_lexicon(write(tmp_path, text))
    assert lexicon["tomato"] == ["t", "ah", "m", "ey", "t", "ow"]
    assert lexicon["only"] == ["ow", "n", "l", "iy"]
    assert lexicon["café"] == ["k", "a", "f", "e\u0301"]
    assert lexicon["bit"] == ["b", "ɪ", "2"]
    assert lexicon["(paren"] == ["P", "ER", "EH", "N"]  # a real cmudict-0.7b entry


def test_latin1_file_is_read(tmp_path):
    path = write(tmp_path, ";;; Copyright \u00a9 CMU\nNA\u00cfVE  N AY0 IY1 V\n",
                 encoding="latin-1")
    assert read_lexicon(path) == {"naïve": ["N", "AY", "IY", "V"]}


@pytest.mark.parametrize("line", ["HELLO\n", "HELLO(2)  # no phonemes\n"])
def test_malformed_line_names_file_and_line(tmp_path, line):
    path = write(tmp_path, "WORLD  W ER1 L D\n;;; comment\n" + line)
    with pytest.raises(UserError, match=f"{path}:3"):
        read_lexicon(path)


def test_missing_and_empty_lexicon(tmp_path):
    with pytest.raises(UserError, match="lexicon file not found"):
        read_lexicon(tmp_path / "nope.dict")
    with pytest.raises(UserError, match="no lexicon entries"):
        read_lexicon(write(tmp_path, ";;; only comments\n\n"))


def test_words_normalisation():
    assert words("Hello, WORLD! Don't stop.") == ["hello", "world", "don't", "stop"]
    assert words("'Quoted' o\u2019clock -- well-known rock'n'roll_") == [
        "quoted", "o'clock", "well", "known", "rock'n'roll"]
    assert words("  ...  ") == []


def test_transcribe_with_punctuation_and_missing_words(lexicon):
    assert transcribe("Hello, world!", lexicon) == (
        ["HH", "AH", "L", "OW", "W", "ER", "L", "D"], [])
    assert transcribe("\u201cDon\u2019t STOP\u201d", lexicon) == (
        ["D", "OW", "N", "T", "S", "T", "AA", "P"], [])
    phonemes, missing = transcribe("one Zorp two zorp blick", lexicon)
    assert phonemes == ["W", "AH", "N", "T", "UW"]
    assert missing == ["zorp", "zorp", "blick"]


def test_transcribe_all_skips_and_reports(lexicon):
    texts = ["hello world", "one zorp", "zorp blick zorp", "two", "blick"]
    names = [f"m.tsv:{line}" for line in range(2, 7)]
    phonemes, report = transcribe_all(texts, names, lexicon, missing_words="skip",
                                      lexicon_name="lex.dict")
    assert phonemes == [["HH", "AH", "L", "OW", "W", "ER", "L", "D"], None, None, ["T", "UW"],
                        None]
    assert report == ("skipped 3 utterances with words missing from lex.dict: zorp (3), "
                      "blick (2) (first: m.tsv:3, m.tsv:4, m.tsv:6)")
    assert transcribe_all(["one", "two"], ["a", "b"], lexicon, "skip") == (
        [["W", "AH", "N"], ["T", "UW"]], "")


def test_transcribe_all_fails_naming_the_place_and_word(lexicon):
    with pytest.raises(UserError) as error:
        transcribe_all(["hello", "zorp", "zorp blick"], ["m.tsv:2", "m.tsv:3", "m.tsv:4"],
                       lexicon, missing_words="fail", lexicon_name="lex.dict")
    message = str(error.value)
    assert message.startswith("m.tsv:3: 'zorp' is not in lex.dict (words missing in 2 utterances")
    assert "zorp (2), blick (1)" in message and "data.missing_words: skip" in message
    with pytest.raises(UserError, match="missing_words"):
        transcribe_all(["hello"], ["a"], lexicon, missing_words="ignore")
