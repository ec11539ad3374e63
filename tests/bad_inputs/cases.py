"""The bad-input corpus: malformed recipes, data files and run directories,
as data. ``test_bad_inputs.py`` runs each case through the CLI and checks
that it is refused with one line naming the file, line or key, and that
nothing outside the run directory changed.

Each app has a good tiny recipe and good tiny data (:data:`APPS`); a case
starts from its app's and breaks one thing: a recipe edit, a replaced or
added data file, or a command line. Every case's data root holds the good
data of every app, so a case can hand one app's file to another app's run.

Placeholders in ``argv``: ``{recipe}`` (the case's recipe file), ``{root}``
(its data root), ``{run}`` (a new run directory), ``{tmp}`` (the folder
holding them, also the working directory), ``{<app>_run}``: a run
directory of that app made once for the module (a recipe, assets and
untrained weights: every case must be refused before the weights matter),
and ``{run_copy}``: a copy of the case's app's run in ``{tmp}``, with the
case's ``run_files`` written over it (a damaged run directory).

Every app has its cases: NER, phonemes and translation (parallel files and
TSVs of pairs, SentencePiece and decoding settings, damaged translation
runs, and translation's inputs and runs handed to the other apps and
theirs to it). To add an app: an :class:`AppInputs` in :data:`APPS` and a
list of cases appended to :data:`CASES`.
"""

import gzip
import io
from dataclasses import dataclass, field

import numpy as np
import soundfile


@dataclass(frozen=True)
class AppInputs:
    recipe: str  # a good recipe, its data paths relative to the data root
    files: dict  # the good data: path under the data root -> str (UTF-8) or bytes


TRAIN = ("train", "{recipe}", "--data-dir", "{root}", "--run-dir", "{run}", "--quiet")


@dataclass(frozen=True)
class Case:
    id: str
    app: str  # whose good recipe the case starts from
    expect: str  # regex the error line must match: it names the file, line or key
    edit: tuple = ()  # (old, new) replacements in the good recipe
    recipe: str | bytes | None = None  # the whole recipe file instead
    files: dict = field(default_factory=dict)  # path under the data root -> content, None: delete
    argv: tuple = TRAIN
    run_files: dict = field(default_factory=dict)  # written over {run_copy}: path under it -> ...

    @property
    def run_dir(self):
        """The argument naming the run directory, the one place a case may write."""
        if "--run-dir" in self.argv:
            return self.argv[self.argv.index("--run-dir") + 1]
        return self.argv[1] if self.argv[0] in ("evaluate", "predict") else None


def replaced(text, *edits):
    """``text`` with each ``(old, new)`` replaced once; ``old`` must be there,
    so a case cannot silently stop breaking anything when the good data
    changes."""
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} is not exactly once in {text!r}"
        text = text.replace(old, new)
    return text


# -- tiny inputs ---------------------------------------------------------------------

RATE = 8000


def wav(samples=1200, subtype="PCM_16", value=None):
    """A mono WAV file's bytes: a tone of ``samples`` samples (or ``value`` everywhere)."""
    tone = 0.3 * np.sin(np.arange(samples) * 0.3) if value is None else np.full(samples, value)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone.astype("float32"), RATE, format="WAV", subtype=subtype)
    return buffer.getvalue()


GOOD_WAV = wav()

# Line numbers matter: cases name them.
NER_TRAIN = """\
-DOCSTART- O

Anna B-PER
visited O
Paris B-LOC
. O

Omar B-PER
saw O
Oslo B-LOC
"""
NER_DEV = "Li B-PER\nvisited O\nLima B-LOC\n"

NER_RECIPE = """\
app: ner
data:
  train_file: train.txt
  dev_file: dev.txt
model:
  word_dim: 4
  char_dim: 2
  char_units: 2
  caps_dim: 1
  encoder:
    units: 2
train:
  epochs: 1
  batch_size: 2
export:
  check: false
"""

MANIFEST = """\
path\tsplit\tspeaker\tphonemes
audio/u0.wav\ttrain\ts1\ta b
audio/u1.wav\ttrain\ts2\tb
audio/u2.wav\tdev\ts1\ta
"""
WORDS = """\
path\tsplit\ttext
audio/u0.wav\ttrain\thello world
audio/u1.wav\ttrain\thello
audio/u2.wav\tdev\tworld
"""
LEXICON = "HELLO  HH AH0 L OW1\nWORLD  W ER1 L D\n"

PHONEMES_RECIPE = """\
app: phonemes
data:
  train_manifest: manifest.tsv
  train_split: train
  dev_split: dev
  sample_rate: 8000
model:
  features:
    n_mels: 8
  spec_augment:
    enabled: false
  subsample:
    factor: 2
  encoder:
    units: 2
    num_layers: 1
    bidirectional: false
decode:
  beam_width: 1
train:
  epochs: 1
  batch_size: 2
export:
  check: false
"""
# The word-transcript variant of the same data: text through a lexicon.
WORDS_RECIPE = ("  train_manifest: manifest.tsv",
                "  train_manifest: words.tsv\n  lexicon: lexicon.dict")

# 30 pairs English -> a made-up SOV language (both sides cased and punctuated,
# the target with letters outside ASCII); line n of train.en is the pair of
# SUBJECTS' (n - 1) // 5-th and VERBS' (n - 1) % 5-th words (cases name lines).
SUBJECTS = {"The dog": "La hundo", "A cat": "Kato", "My friend": "Mia amiko",
            "The child": "La infano", "A farmer": "Kamparano", "The bird": "La birdo"}
VERBS = {"sees": "vidas", "likes": "ŝatas", "paints": "pentras", "finds": "trovas",
         "chases": "ĉasas"}
OBJECTS = [("the ball", "la pilkon"), ("a house", "domon"), ("the river", "la riveron")]
PAIRS = [(f"{s} {v} {OBJECTS[(i + j) % 3][0]}.", f"{ts} {OBJECTS[(i + j) % 3][1]} {tv}.")
         for i, (s, ts) in enumerate(SUBJECTS.items()) for j, (v, tv) in enumerate(VERBS.items())]
TRAIN_EN = "".join(f"{source}\n" for source, _ in PAIRS)
TRAIN_TP = "".join(f"{target}\n" for _, target in PAIRS)
DEV_PAIRS = ("The bird sees a house.\tLa birdo domon vidas.\n"
             "A cat finds the ball.\tKato la pilkon trovas.\n"
             "My friend likes the river.\tMia amiko la riveron ŝatas.\n")

TRANSLATION_RECIPE = """\
app: translation
data:
  train_source: train.en
  train_target: train.tp
  dev_pairs: dev.tsv
  source_language: en
  target_language: tp
  subwords:
    vocab_size: 40
model:
  source_embedding_dim: 4
  target_embedding_dim: 4
  encoder:
    units: 4
    num_layers: 1
  decoder:
    units: 6
    num_layers: 1
decode:
  beam_width: 2
train:
  epochs: 1
  batch_size: 4
export:
  check: false
"""

APPS = {
    "ner": AppInputs(NER_RECIPE, {"train.txt": NER_TRAIN, "dev.txt": NER_DEV}),
    "phonemes": AppInputs(PHONEMES_RECIPE, {
        "manifest.tsv": MANIFEST, "words.tsv": WORDS, "lexicon.dict": LEXICON,
        **{f"audio/u{i}.wav": GOOD_WAV for i in range(3)}}),
    "translation": AppInputs(TRANSLATION_RECIPE, {
        "train.en": TRAIN_EN, "train.tp": TRAIN_TP, "dev.tsv": DEV_PAIRS}),
}

# A YAML "billion laughs": nine aliases of nine aliases ... (9**9 strings
# expanded); as a mapping too, which a walk over the keys would expand.
LAUGHS = "\n".join(["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)])
MAPPING_LAUGHS = "\n".join(["m0: &m0 {k0: lol, k1: lol, k2: lol, k3: lol, k4: lol}"] + [
    f"m{i}: &m{i} {{{', '.join(f'k{j}: *m{i - 1}' for j in range(9))}}}" for i in range(1, 12)])
LAUGHED = r"recipe\.yaml:\d+: invalid YAML: its aliases expand to more than 100000 values"
NOT_UTF8 = "caf\u00e9".encode("latin-1")  # b"caf\xe9"

# -- recipes (any app: the recipe loader and the schema) --------------------------------

RECIPES = [
    Case("misspelled-section", "ner",
         r"^trian: unknown key \(.*recipe\.yaml:12\); did you mean train\?",
         edit=[("train:", "trian:")]),
    Case("misspelled-nested-key", "ner",
         r"model\.encoder\.unts: unknown key \(.*recipe\.yaml:11\); did you mean model\.encoder\.units\?",
         edit=[("    units: 2", "    unts: 2")]),
    Case("key-in-the-wrong-section", "ner",
         r"data\.epochs: unknown key \(.*recipe\.yaml:5\); did you mean train\.epochs\?",
         edit=[("  dev_file: dev.txt", "  dev_file: dev.txt\n  epochs: 3")]),
    Case("dotted-key-in-a-file", "ner", r"train\.epochs: unknown key \(.*recipe\.yaml:\d+\); "
         r"in a recipe file write nested mappings", edit=[("export:", "train.epochs: 3\nexport:")]),
    Case("string-for-int", "ner",
         r"train\.epochs: expected int, got str 'one' \(.*recipe\.yaml:13\)",
         edit=[("  epochs: 1", "  epochs: one")]),
    Case("float-for-int", "ner",
         r"train\.batch_size: expected int, got float 2\.5 \(.*recipe\.yaml:14\)",
         edit=[("  batch_size: 2", "  batch_size: 2.5")]),
    Case("string-for-list", "phonemes",
         r"data\.dev_speakers: expected list, got str 's1' \(.*recipe\.yaml:5\)",
         edit=[("  dev_split: dev", "  dev_speakers: s1")]),
    Case("section-not-a-mapping", "ner",
         r"^export: expected a mapping, got bool False \(.*recipe\.yaml:15\)",
         edit=[("export:\n  check: false", "export: false")]),
    Case("above-the-maximum", "ner", r"model\.dropout: 1\.5 is out of range \(.*recipe\.yaml:10\); "
         r"must be >= 0 and <= 0\.99", edit=[("  caps_dim: 1", "  caps_dim: 1\n  dropout: 1.5")]),
    Case("zero-batch-size", "ner",
         r"train\.batch_size: 0 is out of range \(.*recipe\.yaml:14\); must be >= 1",
         edit=[("  batch_size: 2", "  batch_size: 0")]),
    Case("not-a-choice", "ner",
         r"data\.scheme: 'bioes' is not allowed \(.*recipe\.yaml:5\); allowed: bio, iobes",
         edit=[("  dev_file: dev.txt", "  dev_file: dev.txt\n  scheme: bioes")]),
    Case("nested-range", "phonemes",
         r"model\.features\.deltas: 3 is out of range \(.*recipe\.yaml:10\)",
         edit=[("    n_mels: 8", "    n_mels: 8\n    deltas: 3")]),
    Case("misspelled-option-of-a-layer", "ner",
         r"model\.encoder\.cell_options: peephole_lstm takes no cell_clipp; did you mean cell_clip\?",
         edit=[("    units: 2", "    units: 2\n    cell_options: {cell_clipp: 3.0}")]),
    Case("inverted-range", "phonemes", r"model\.augment\.speed: expected \[min, max\]",
         edit=[("  spec_augment:", "  augment:\n    speed: [1.2, 0.9]\n  spec_augment:")]),
    Case("misspelled-set-key", "ner",
         r"train\.epoch: unknown key \(--set train\.epoch=3\); did you mean train\.epochs\?",
         argv=TRAIN + ("--set", "train.epoch=3")),
    Case("set-value-not-yaml", "ner", r"--set train\.epochs=\[1: invalid YAML",
         argv=TRAIN + ("--set", "train.epochs=[1")),
    Case("python-object-tag", "ner", r"recipe\.yaml:1: invalid YAML: could not determine a "
         r"constructor for the tag 'tag:yaml\.org,2002:python/object/apply:os\.system'",
         edit=[("app: ner", "app: !!python/object/apply:os.system ['echo pwned > pwned.txt']")]),
    Case("python-name-tag", "phonemes", r"recipe\.yaml:\d+: invalid YAML: could not determine a "
         r"constructor for the tag 'tag:yaml\.org,2002:python/name:os\.getcwd'",
         edit=[("  factor: 2", "  factor: !!python/name:os.getcwd ''")]),
    Case("billion-laughs", "ner", LAUGHED, edit=[("app: ner", f"app: ner\n{LAUGHS}")]),
    Case("billion-laughs-in-a-value", "phonemes", LAUGHED,
         recipe=f"{LAUGHS}\n{replaced(PHONEMES_RECIPE, ('  epochs: 1', '  epochs: *a9'))}"),
    Case("billion-laughs-of-mappings", "ner", LAUGHED,
         edit=[("app: ner", f"app: ner\n{MAPPING_LAUGHS}")]),
    Case("alias-inside-itself", "ner",
         r"recipe\.yaml:2: invalid YAML: an alias refers to a collection it is in",
         edit=[("app: ner", "app: ner\nloop: &loop {again: *loop}")]),
    Case("nested-too-deeply", "ner", r"recipe\.yaml:16: invalid YAML: nested too deeply",
         edit=[("  check: false", "  check: " + "[" * 5000 + "]" * 5000)]),
    Case("yaml-syntax", "ner", r"recipe\.yaml:\d+: invalid YAML",
         edit=[("    units: 2", "    units: [2")]),
    Case("recipe-not-utf8", "ner", r"recipe\.yaml:2: not UTF-8",
         recipe=replaced(NER_RECIPE.encode(), (b"app: ner\n", b"app: ner\n# " + NOT_UTF8 + b"\n"))),
    Case("recipe-empty", "ner", r"recipe\.yaml: a recipe must be a mapping .*got an empty file",
         recipe=""),
    Case("recipe-a-list", "ner", r"recipe\.yaml: a recipe must be a mapping .*got a list",
         recipe="- app: ner\n"),
    Case("recipe-missing", "ner", r"nowhere\.yaml: no such recipe file",
         argv=("train", "{tmp}/nowhere.yaml", "--data-dir", "{root}", "--run-dir", "{run}")),
    Case("extends-missing", "ner", r"recipe file not found: .*base\.yaml \(extends at .*recipe\.yaml:1\)",
         edit=[("app: ner", "extends: base.yaml\napp: ner")]),
    Case("no-app", "ner", r"app: required key naming the application \(.*recipe\.yaml\)",
         edit=[("app: ner\n", "")]),
    Case("unknown-app", "ner", r"app: unknown app 'nre'; installed apps: .*\(.*recipe\.yaml:1\)",
         edit=[("app: ner", "app: nre")]),
]

# -- NER data --------------------------------------------------------------------------

NER = [
    Case("conll-missing", "ner", r"data file not found: .*trian\.txt \(data\.train_file at .*recipe\.yaml:3",
         edit=[("train_file: train.txt", "train_file: trian.txt")]),
    Case("conll-empty", "ner", r"train\.txt: no sentences", files={"train.txt": ""}),
    Case("conll-only-docstart", "ner", r"dev\.txt: no sentences", files={"dev.txt": "-DOCSTART- O\n\n"}),
    Case("conll-extra-column", "ner", r"train\.txt:4: expected 2 columns, got 3",
         files={"train.txt": replaced(NER_TRAIN, ("visited O", "visited VBD O"))}),
    Case("conll-one-column", "ner", r"dev\.txt:1: expected a token and a tag",
         files={"dev.txt": "Li\nvisited O\n"}),
    Case("conll-tag-without-prefix", "ner", r"train\.txt:5: bad tag 'LOC'",
         files={"train.txt": replaced(NER_TRAIN, ("Paris B-LOC", "Paris LOC"))}),
    Case("conll-empty-type", "ner", r"dev\.txt:4: bad tag 'B-'", files={"dev.txt": NER_DEV + "x B-\n"}),
    Case("conll-not-utf8", "ner", r"train\.txt:9: not UTF-8",
         files={"train.txt": replaced(NER_TRAIN.encode(), (b"saw O", NOT_UTF8 + b" O"))}),
    Case("conll-tag-column-out-of-range", "ner", r"train\.txt:3: tag_column 3 is out of range for 2 columns",
         edit=[("  dev_file: dev.txt", "  dev_file: dev.txt\n  tag_column: 3")]),
    Case("vectors-not-numbers", "ner", r"vectors\.txt:2: not a 'word v1 v2 \.\.\.' line",
         edit=[("  dev_file: dev.txt", "  dev_file: dev.txt\n  embeddings: vectors.txt")],
         files={"vectors.txt": "anna 0.1 0.2 0.3 0.4\nparis 0.1 x 0.3 0.4\n"}),
    Case("vectors-ragged", "ner", r"vectors\.txt:2: 3 values where the vectors have 4",
         edit=[("  dev_file: dev.txt", "  dev_file: dev.txt\n  embeddings: vectors.txt")],
         files={"vectors.txt": "anna 0.1 0.2 0.3 0.4\nparis 0.1 0.2 0.3\n"}),
]

# -- phonemes data -----------------------------------------------------------------------

PHONEMES = [
    Case("manifest-missing", "phonemes",
         r"data file not found: .*manifets\.tsv \(data\.train_manifest at .*recipe\.yaml:3",
         edit=[("train_manifest: manifest.tsv", "train_manifest: manifets.tsv")]),
    Case("manifest-empty", "phonemes", r"manifest\.tsv: no path or phonemes or text column",
         files={"manifest.tsv": ""}),
    Case("manifest-without-transcripts", "phonemes", r"manifest\.tsv: no phonemes or text column",
         files={"manifest.tsv": "path\tsplit\naudio/u0.wav\ttrain\n"}),
    Case("manifest-not-utf8", "phonemes", r"manifest\.tsv:3: not UTF-8",
         files={"manifest.tsv": replaced(MANIFEST.encode(), (b"s2\tb", b"s2\t" + NOT_UTF8))}),
    Case("manifest-empty-path", "phonemes", r"manifest\.tsv:3: empty path",
         files={"manifest.tsv": replaced(MANIFEST, ("audio/u1.wav", ""))}),
    Case("manifest-field-too-long", "phonemes", r"manifest\.tsv:3: field larger than field limit",
         files={"manifest.tsv": replaced(MANIFEST, ("s2\tb", "s2\t" + "b " * 70000))}),
    Case("manifest-csv-quote-not-closed", "phonemes", r"manifest\.csv:3: a field runs over several lines",
         edit=[("train_manifest: manifest.tsv", "train_manifest: manifest.csv")],
         files={"manifest.csv": replaced(MANIFEST.replace("\t", ","), (",s2,b", ',s2,"b'))}),
    Case("manifest-row-missing-audio", "phonemes", r"manifest\.tsv:3: audio file not found: .*audio/u7\.wav",
         files={"manifest.tsv": replaced(MANIFEST, ("audio/u1.wav", "audio/u7.wav"))}),
    Case("manifest-row-outside-the-data-root", "phonemes",
         r"manifest\.tsv:3: \.\./outside\.wav is outside the data root",
         files={"manifest.tsv": replaced(MANIFEST, ("audio/u1.wav", "../outside.wav")),
                "../outside.wav": GOOD_WAV}),
    Case("manifest-row-climbing-out-and-back", "phonemes",
         r"manifest\.tsv:4: audio/\.\./\.\./data2/u2\.wav is outside the data root",
         files={"manifest.tsv": replaced(MANIFEST, ("audio/u2.wav", "audio/../../data2/u2.wav")),
                "../data2/u2.wav": GOOD_WAV}),
    Case("no-split-rows", "phonemes", r"manifest\.tsv: no train utterances \(check data\.train_split",
         edit=[("train_split: train", "train_split: trian")]),
    Case("two-data-sources", "phonemes", r"set exactly one of data\.train_manifest, data\.timit_root, "
         r"data\.tfds \(found train_manifest, timit_root\)",
         edit=[("  dev_split: dev", "  dev_split: dev\n  timit_root: audio")]),
    Case("wav-zero-length", "phonemes", r"u1\.wav: empty file", files={"audio/u1.wav": b""}),
    Case("wav-that-is-text", "phonemes", r"u1\.wav: cannot read audio",
         files={"audio/u1.wav": "path\tphonemes\n"}),
    Case("wav-data-chunk-cut", "phonemes", r"u1\.wav: truncated audio",
         files={"audio/u1.wav": GOOD_WAV[:-300]}),
    Case("wav-header-cut", "phonemes", r"u1\.wav: cannot read audio",
         files={"audio/u1.wav": GOOD_WAV[:30]}),
    Case("wav-without-samples", "phonemes", r"u1\.wav: no audio samples",
         files={"audio/u1.wav": wav(0)}),
    Case("wav-of-nan", "phonemes", r"u2\.wav: audio has NaN",
         files={"audio/u2.wav": wav(800, "FLOAT", value=np.nan)}),
    Case("lexicon-without-a-word", "phonemes",
         r"words\.tsv:2: 'world' is not in .*lexicon\.dict \(words missing in 1 utterance",
         edit=[WORDS_RECIPE], files={"lexicon.dict": "HELLO  HH AH0 L OW1\n"}),
    Case("lexicon-line-without-phonemes", "phonemes", r"lexicon\.dict:3: expected a word and its phonemes",
         edit=[WORDS_RECIPE], files={"lexicon.dict": LEXICON + "ZEBRA\n"}),
    Case("lexicon-utf16", "phonemes", r"lexicon\.dict: NUL bytes in a lexicon \(UTF-16 text\?\)",
         edit=[WORDS_RECIPE], files={"lexicon.dict": LEXICON.encode("utf-16")}),
    Case("lexicon-missing", "phonemes", r"data file not found: .*lexicn\.dict \(data\.lexicon at",
         edit=[(WORDS_RECIPE[0], WORDS_RECIPE[1].replace("lexicon.dict", "lexicn.dict"))]),
    Case("text-without-a-lexicon", "phonemes", r"words\.tsv:2: no phonemes, and no lexicon",
         edit=[(WORDS_RECIPE[0], "  train_manifest: words.tsv")]),
]

# -- run directories given to evaluate, predict and finetune ------------------------------

RUNS = [
    Case("evaluate-a-data-folder", "ner", r"audio is not a run directory \(no recipe\.yaml\)",
         argv=("evaluate", "{root}/audio")),
    Case("predict-with-a-data-folder", "ner", r"audio is not a run directory \(no recipe\.yaml\)",
         argv=("predict", "{root}/audio", "{root}/dev.txt")),
    Case("evaluate-missing-data", "ner", r"--data .*nope\.txt: no such file",
         argv=("evaluate", "{ner_run}", "--data", "{root}/nope.txt")),
    Case("predict-missing-input", "phonemes", r"nope\.wav: input file not found",
         argv=("predict", "{phonemes_run}", "{root}/nope.wav")),
    Case("predict-would-overwrite", "ner", r"train\.txt exists; won't overwrite it",
         argv=("predict", "{ner_run}", "{root}/dev.txt", "--output", "{root}/train.txt")),
    Case("predict-ner-run-on-audio", "ner", r"u0\.wav:1: not UTF-8 text",
         argv=("predict", "{ner_run}", "{root}/audio/u0.wav")),
    Case("predict-phonemes-run-on-text", "phonemes", r"dev\.txt: cannot read audio",
         argv=("predict", "{phonemes_run}", "{root}/dev.txt")),
    Case("evaluate-ner-run-on-a-manifest", "ner", r"manifest\.tsv:1: ",
         argv=("evaluate", "{ner_run}", "--data", "{root}/manifest.tsv")),
    Case("evaluate-phonemes-run-on-conll", "phonemes", r"dev\.txt: no path or phonemes or text column",
         argv=("evaluate", "{phonemes_run}", "--data", "{root}/dev.txt")),
    Case("finetune-phonemes-from-a-ner-run", "phonemes", r"--from .*ner_run: .*ner.*phonemes",
         argv=("finetune", "{recipe}", "--from", "{ner_run}", "--data-dir", "{root}",
               "--run-dir", "{run}", "--quiet")),
    Case("finetune-ner-from-a-phonemes-run", "ner", r"--from .*phonemes_run: .*phonemes.*ner",
         argv=("finetune", "{recipe}", "--from", "{phonemes_run}", "--data-dir", "{root}",
               "--run-dir", "{run}", "--quiet")),
    Case("run-recipe-without-app", "ner", r"fake/recipe\.yaml: .*app",
         files={"fake/recipe.yaml": "data: {}\n"}, argv=("predict", "{root}/fake", "{root}/dev.txt")),
    Case("run-recipe-not-yaml", "ner", r"fake/recipe\.yaml:\d+: invalid YAML",
         files={"fake/recipe.yaml": "app: ner\ndata: {\n"}, argv=("evaluate", "{root}/fake")),
    Case("run-without-assets", "ner", r"fake has no assets\.json",
         files={"fake/recipe.yaml": "app: ner\n"}, argv=("predict", "{root}/fake", "{root}/dev.txt")),
    Case("run-assets-not-json", "ner", r"fake/assets\.json:2: not valid JSON",
         files={"fake/recipe.yaml": "app: ner\n", "fake/assets.json": '{"words": [\n'},
         argv=("predict", "{root}/fake", "{root}/dev.txt")),
    Case("run-without-a-model", "ner", r"fake holds no trained model yet",
         files={"fake/recipe.yaml": "app: ner\n", "fake/assets.json": "{}\n"},
         argv=("predict", "{root}/fake", "{root}/dev.txt")),
]

# -- translation ------------------------------------------------------------------------
# Its good recipe reads the training pairs from two aligned files and dev from a
# TSV, so both readers are broken here; then the run directories (damaged
# copies of a translation run, and runs and inputs crossed with the other apps).

TRANSLATION = [
    Case("parallel-files-of-different-lengths", "translation",
         r"train\.en has 30 lines but .*train\.tp has 29: the files of a parallel corpus",
         files={"train.tp": TRAIN_TP.removesuffix(f"{PAIRS[-1][1]}\n")}),
    Case("source-not-utf8", "translation", r"train\.en:7: not UTF-8 text \(byte 0xe9 at column 4\)",
         files={"train.en": replaced(TRAIN_EN.encode(), (b"A cat likes", NOT_UTF8 + b" likes"))}),
    Case("target-not-utf8", "translation", r"train\.tp:12: not UTF-8 text \(byte 0xfe at column 21\)",
         files={"train.tp": replaced(TRAIN_TP.encode(), *[(line.encode(), line.encode("iso8859-3"))
                                                          for line in ["amiko la pilkon ŝatas"]])}),
    Case("source-missing", "translation",
         r"data file not found: .*trian\.en \(data\.train_source at .*recipe\.yaml:3",
         edit=[("train_source: train.en", "train_source: trian.en")]),
    Case("target-deleted", "translation",
         r"data file not found: .*train\.tp \(data\.train_target at .*recipe\.yaml:4",
         files={"train.tp": None}),
    Case("training-files-empty", "translation",
         r"train\.en, .*train\.tp: no sentence pairs", files={"train.en": "", "train.tp": ""}),
    Case("training-gzip-cut", "translation", r"train\.en\.gz: cannot read it after line \d+",
         edit=[("train_source: train.en", "train_source: train.en.gz")],
         files={"train.en.gz": gzip.compress(TRAIN_EN.encode())[:-40]}),
    Case("pairs-row-without-a-tab", "translation",
         r"dev\.tsv:2: expected source<TAB>target, found 1 tab-separated field$",
         files={"dev.tsv": replaced(DEV_PAIRS, ("ball.\tKato", "ball. Kato"))}),
    Case("pairs-and-parallel-files", "translation",
         r"data\.train_source and data\.train_target .* or data\.train_pairs .*: not both",
         edit=[("  dev_pairs: dev.tsv", "  dev_pairs: dev.tsv\n  train_pairs: dev.tsv")]),
    Case("subword-type-misspelled", "translation",
         r"data\.subwords\.type: 'bpee' is not allowed \(.*recipe\.yaml:9\); allowed: unigram, bpe",
         edit=[("    vocab_size: 40", "    type: bpee\n    vocab_size: 40")]),
    Case("vocab-size-negative", "translation",
         r"data\.subwords\.vocab_size: -40 is out of range \(.*recipe\.yaml:9\); must be >= 8",
         edit=[("vocab_size: 40", "vocab_size: -40")]),
    Case("vocab-size-a-string", "translation",
         r"data\.subwords\.vocab_size: expected int, got str '40k' \(.*recipe\.yaml:9\)",
         edit=[("vocab_size: 40", "vocab_size: 40k")]),
    Case("vocab-size-below-the-characters", "translation",
         r"data\.subwords\.vocab_size 20 is too small for the training text: it needs 34",
         edit=[("vocab_size: 40", "vocab_size: 20")]),
    Case("sub-words-misspelled", "translation",
         r"data\.sub_words: unknown key \(.*recipe\.yaml:8\); did you mean data\.subwords\?",
         edit=[("  subwords:", "  sub_words:")]),
    Case("attention-unknown", "translation",
         r"model\.decoder\.attention: 'luong' is not allowed \(.*recipe\.yaml:18\); "
         r"allowed: dot, general, additive",
         edit=[("    units: 6", "    units: 6\n    attention: luong")]),
    Case("beam-width-zero", "translation",
         r"decode\.beam_width: 0 is out of range \(.*recipe\.yaml:20\); must be >= 1",
         edit=[("beam_width: 2", "beam_width: 0")]),
    Case("length-penalty-a-string", "translation",
         r"decode\.length_penalty: expected float, got str 'long' \(.*recipe\.yaml:21\)",
         edit=[("beam_width: 2", "beam_width: 2\n  length_penalty: long")]),
    Case("max-source-length-zero", "translation",
         r"data\.max_source_length: 0 is out of range \(.*recipe\.yaml:8\); must be >= 1",
         edit=[("  subwords:", "  max_source_length: 0\n  subwords:")]),
    Case("every-pair-too-long", "translation",
         r"train\.en, .*train\.tp: no pairs left; left out 0 with an empty side and 30 longer than "
         r"100 source or 2 target subwords \(data\.max_source_length, data\.max_target_length\)$",
         edit=[("  subwords:", "  max_target_length: 2\n  subwords:")]),
    Case("dev-score-misspelled", "translation",
         r"data\.dev_score: 'blue' is not allowed \(.*recipe\.yaml:8\); allowed: bleu, loss",
         edit=[("  subwords:", "  dev_score: blue\n  subwords:")]),
    # runs: a translation run given other apps' inputs, other apps' runs translation's,
    # and damaged copies of a translation run
    Case("predict-translation-missing-input", "translation", r"nope\.en: input file not found",
         argv=("predict", "{translation_run}", "{root}/nope.en")),
    Case("predict-translation-not-utf8", "translation", r"latin1\.en:2: not UTF-8 text",
         files={"latin1.en": b"The dog sees a house.\n" + NOT_UTF8 + b" au lait\n"},
         argv=("predict", "{translation_run}", "{root}/latin1.en")),
    Case("predict-translation-run-on-audio", "translation", r"u0\.wav:1: not UTF-8 text",
         argv=("predict", "{translation_run}", "{root}/audio/u0.wav")),
    Case("evaluate-translation-run-on-a-manifest", "translation",
         r"manifest\.tsv:1: expected source<TAB>target, found 4 tab-separated fields",
         argv=("evaluate", "{translation_run}", "--data", "{root}/manifest.tsv")),
    Case("evaluate-translation-run-on-conll", "translation",
         r"dev\.txt: give a TSV of source<TAB>target lines",
         argv=("evaluate", "{translation_run}", "--data", "{root}/dev.txt")),
    Case("evaluate-ner-run-on-pairs", "ner", r"dev\.tsv:1: bad tag 'vidas\.'",
         argv=("evaluate", "{ner_run}", "--data", "{root}/dev.tsv")),
    Case("evaluate-phonemes-run-on-pairs", "phonemes", r"dev\.tsv: no path or phonemes or text column",
         argv=("evaluate", "{phonemes_run}", "--data", "{root}/dev.tsv")),
    Case("predict-phonemes-run-on-source-text", "phonemes", r"train\.en: cannot read audio",
         argv=("predict", "{phonemes_run}", "{root}/train.en")),
    Case("run-subword-model-missing", "translation",
         r"asset file 'shared\.model' is missing from .*run_copy/assets; the run directory is "
         r"incomplete", run_files={"assets/shared.model": None},
         argv=("predict", "{run_copy}", "{root}/train.en")),
    Case("run-subword-model-damaged", "translation",
         r"run_copy/assets/shared\.model: not a SentencePiece model \(could not parse ModelProto\)",
         run_files={"assets/shared.model": "not a model\n"},
         argv=("evaluate", "{run_copy}", "--data-dir", "{root}")),
    Case("run-model-not-a-zip", "translation",
         r"run_copy/best\.keras: cannot read the weights \(File is not a zip file\)",
         run_files={"best.keras": "not a model\n"},
         argv=("predict", "{run_copy}", "{root}/train.en")),
    Case("run-checkpoint-weights-damaged", "translation",
         r"run_copy/checkpoints/ckpt-0001-0000007/state\.weights\.h5: cannot read the weights "
         r"\(Unable to .*open file \(file signature not found\)\)",
         run_files={"best.keras": None, "checkpoints/ckpt-0001-0000007/state.json": "{}\n",
                    "checkpoints/ckpt-0001-0000007/state.weights.h5": "not weights\n"},
         argv=("evaluate", "{run_copy}", "--data-dir", "{root}")),
    Case("run-vocabulary-sizes-edited", "translation",
         r"cannot load weights from .*run_copy/best\.keras into this model \(.*source_embedding",
         run_files={"assets.json": '{"source_model": "shared.model", "target_model": '
                                   '"shared.model", "source_vocab": 50, "target_vocab": 50}\n'},
         argv=("predict", "{run_copy}", "{root}/train.en")),
    Case("finetune-translation-from-a-ner-run", "translation",
         r"--from .*ner_run: a ner run, and this recipe is for translation",
         argv=("finetune", "{recipe}", "--from", "{ner_run}", "--data-dir", "{root}",
               "--run-dir", "{run}", "--quiet")),
    Case("finetune-phonemes-from-a-translation-run", "phonemes",
         r"--from .*translation_run: a translation run, and this recipe is for phonemes",
         argv=("finetune", "{recipe}", "--from", "{translation_run}", "--data-dir", "{root}",
               "--run-dir", "{run}", "--quiet")),
]

CASES = RECIPES + NER + PHONEMES + RUNS + TRANSLATION
