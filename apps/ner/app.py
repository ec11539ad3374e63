"""The NER app: what the core calls to read data, build, score, use and
export the tagger. Registered as ``ner`` in ``pyproject.toml``."""

from pathlib import Path

import numpy as np
import tensorflow as tf

from apps.ner import data as conll
from apps.ner.metrics import entity_scores, format_report
from lstm_core.apps import App, model_cache
from lstm_core.errors import UserError
from lstm_core.recipes import Field
from lstm_core.schema import check_rnn_options, encoder_schema

SCHEMES = ["bio", "iobes"]
OPTIONAL_PATH = (str, type(None))


def extended(known, more):
    """``known``, then the entries of ``more`` it lacks, in their order."""
    seen = set(known)
    return known + [entry for entry in more if entry not in seen]


class NERApp(App):
    name = "ner"
    metric = "f1"
    data_schema = {
        "train_file": Field(OPTIONAL_PATH, None, data_file=True,
                            doc="CoNLL training file under the data root"),
        "dev_file": Field(OPTIONAL_PATH, None, data_file=True, doc="CoNLL dev file (model selection)"),
        "test_file": Field(OPTIONAL_PATH, None, data_file=True, optional_file=True,
                           doc="CoNLL test file, scored at the end if present"),
        "tfds": Field(OPTIONAL_PATH, None,
                      doc="instead of files: a prepared tensorflow-datasets set, conll2003 or wikiann/<lang>"),
        "tfds_dir": Field(OPTIONAL_PATH, None, data_file=True, doc="tensorflow-datasets data_dir"),
        "tag_column": Field(int, -1, doc="column holding the tag (-1: last)"),
        "scheme": Field(str, "iobes", choices=SCHEMES, doc="tag scheme the model is trained in"),
        "lowercase": Field(bool, False, doc="lowercase words (capitalization stays a feature)"),
        "min_count": Field(int, 1, min=1, doc="words seen fewer times are unknown"),
        "max_word_length": Field(int, 20, min=1, doc="characters kept per word"),
        "embeddings": Field(OPTIONAL_PATH, None, data_file=True,
                            doc="pretrained vectors, GloVe or word2vec text format"),
    }
    model_schema = {
        "word_dim": Field(int, 100, min=1, doc="word embedding size"),
        "char_encoder": Field(str, "lstm", choices=["lstm", "cnn", "none"],
                              doc="features from each word's characters: a BiLSTM, a CNN with max "
                                  "pooling, or none"),
        "char_dim": Field(int, 25, min=1, doc="character embedding size"),
        "char_units": Field(int, 25, min=1,
                            doc="character BiLSTM units per direction (the CNN has twice as many filters)"),
        "caps_dim": Field(int, 4, min=1, doc="capitalization class embedding size"),
        "encoder": encoder_schema(units=200, num_layers=1),
        "dropout": Field(float, 0.5, min=0, max=0.99,
                         doc="dropout rate on the token features and on the encoder outputs"),
        "word_dropout": Field(float, 0.05, min=0, max=0.99, doc="chance a training word becomes unknown"),
        "output": Field(str, "crf", choices=["crf", "softmax"],
                        doc="crf scores whole tag sequences; softmax tags each token alone"),
        "constrained": Field(bool, True, doc="forbid invalid tag transitions in the CRF"),
        "seed": Field(int, 1, doc="seeds the word dropout and the model.dropout masks; weight "
                                  "initializers, encoder.dropout and data shuffling follow "
                                  "train.seed"),
    }

    # -- data -----------------------------------------------------------------

    def sentences(self, config, split, path=None):
        """Sentences of ``split`` (train/dev/test) or of the file ``path``,
        in the recipe's tag scheme."""
        data = config["data"]
        if path is None and data["tfds"]:
            tfds_split = {"train": "train", "dev": "validation", "test": "test"}[split]
            sentences = conll.load_tfds(data["tfds"], tfds_split, data["tfds_dir"])
        else:
            path = path or data[f"{split}_file"]
            if path is None:
                raise UserError(f"data.{split}_file is not set (nor data.tfds)")
            sentences = conll.read_conll(path, tag_column=data["tag_column"])
        if not sentences:  # nothing to learn from, or a score of 0 that means nothing
            source = path or f"tensorflow-datasets {data['tfds']} {split}"
            raise UserError(f"{source}: no sentences (the file is empty or has only -DOCSTART- lines)")
        return conll.convert_sentences(sentences, data["scheme"])

    def build_assets(self, config, data_root, folder):
        data = config["data"]
        train = self.sentences(config, "train")
        vocab = conll.build_vocab(train, min_count=data["min_count"], lowercase=data["lowercase"],
                                  scheme=data["scheme"])
        words = vocab["words"]
        if data["embeddings"]:
            known = set(words)
            words += [w for w in read_embeddings(data["embeddings"], data["lowercase"]) if w not in known]
        return {"words": words, "chars": vocab["chars"], "tags": vocab["tags"],
                "scheme": data["scheme"], "lowercase": data["lowercase"],
                "max_word_length": data["max_word_length"]}

    def finetune_assets(self, config, data_root, folder, previous):
        """The starting run's words, characters and entity types, then the
        new data's: a fine-tune adds entity types (in the recipe's scheme,
        which may be another) and words, and forgets none."""
        new = self.build_assets(config, data_root, folder)
        types = {tag[2:] for tag in previous["tags"] + new["tags"] if tag != "O"}
        return {**new, "words": extended(previous["words"], new["words"]),
                "chars": extended(previous["chars"], new["chars"]),
                "tags": conll.scheme_tags(types, config["data"]["scheme"])}

    def vocabularies(self, assets):
        reserved = ["\0padding", "\0unknown"]  # ids PAD and UNK
        return {"words": reserved + assets["words"], "chars": reserved + assets["chars"],
                "tags": assets["tags"]}

    def vocabulary_axes(self, model):
        axes = [(model.word_embedding.embeddings, ("words", None)),
                (model.scores.kernel, (None, "tags")), (model.scores.bias, ("tags",))]
        if model.char_encoder != "none":
            axes.append((model.char_embedding.embeddings, ("chars", None)))
        if model.crf is not None:
            axes += [(model.crf.transitions, ("tags", "tags")),
                     (model.crf.start_transitions, ("tags",)), (model.crf.end_transitions, ("tags",))]
        return axes

    def build_data(self, config, data_root, assets):
        train = self.dataset("train", config, assets, shuffle=True)
        dev = self.dataset("dev", config, assets, shuffle=False)
        return train, dev

    def dataset(self, split, config, assets, shuffle):
        from apps.ner.features import Featurizer
        from lstm_core.data import bucketed_batches

        sentences = self.sentences(config, split)
        examples = [(" ".join(s.tokens), tags) for s, tags in
                    zip(sentences, self._tag_ids(split, sentences, config, assets))]
        featurizer = Featurizer(assets["words"], assets["chars"], assets["lowercase"],
                                assets["max_word_length"])
        ds = tf.data.Dataset.from_generator(
            lambda: iter(examples),
            output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([None], tf.int32)))
        lengths = [len(s.tokens) for s in sentences]
        ds = bucketed_batches(ds, lengths, config["train"]["batch_size"], shuffle=shuffle,
                              seed=config["train"]["seed"], length_fn=lambda text, tag: tf.shape(tag)[0])
        return ds.map(lambda text, tag: (featurizer(text), tag),
                      num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    @staticmethod
    def _tag_ids(split, sentences, config, assets):
        """Tag ids in the model's scheme (a fine-tuning recipe may name
        another); a tag the model lacks is an error, not a silent ``O``."""
        source, target = config["data"]["scheme"], assets["scheme"]
        ids = {tag: index for index, tag in enumerate(assets["tags"])}
        tags = [conll.convert_tags(s.tags, source, target) for s in sentences]
        unknown = sorted({tag for sentence in tags for tag in sentence} - set(ids))
        if unknown:
            types = sorted({tag[2:] for tag in assets["tags"][1:]})
            raise UserError(
                f"{split} data: the model has no tag {', '.join(unknown)}; it knows the "
                f"entity types {', '.join(types) or '(none)'} (fine-tune it on data with the "
                f"others to add them: lstm-suite finetune)")
        return [[ids[tag] for tag in sentence] for sentence in tags]

    # -- model ----------------------------------------------------------------

    def build_model(self, config, assets):
        from apps.ner.model import Tagger
        from lstm_core.crf import allowed_transitions

        model = config["model"]
        check_rnn_options("model.encoder", model["encoder"]["cell"], model["encoder"]["cell_options"])
        allowed = None
        if model["output"] == "crf" and model["constrained"]:
            allowed = [a.tolist() for a in allowed_transitions(assets["tags"], assets["scheme"])]
        tagger = Tagger(
            num_words=len(assets["words"]), num_chars=len(assets["chars"]),
            num_tags=len(assets["tags"]), word_dim=model["word_dim"],
            char_dim=model["char_dim"], char_encoder=model["char_encoder"],
            char_units=model["char_units"], caps_dim=model["caps_dim"],
            encoder=model["encoder"], dropout=model["dropout"],
            word_dropout=model["word_dropout"], output=model["output"], allowed=allowed,
            seed=model["seed"])
        tagger(self.serving(tagger, assets).featurizer(tf.constant(["a"])))  # build
        return tagger

    def initialize(self, model, config, assets):
        if config["data"]["embeddings"]:
            load_embeddings(model, assets, config["data"]["embeddings"])

    def serving(self, model, assets):
        """The model's serving module, made once per model: a new one would
        trace its graph again at every dev evaluation."""
        from apps.ner.serving import NERServing

        return model_cache(model, "serving", lambda: NERServing(model, assets))

    # -- use ------------------------------------------------------------------

    def evaluate(self, model, config, data_root, assets, path=None, final=False, figure=None):
        sentences = self.sentences(config, "dev", path)
        predicted = self.serving(model, assets).tag([s.tokens for s in sentences])
        gold = [conll.convert_tags(s.tags, config["data"]["scheme"], "bio") for s in sentences]
        scores = entity_scores(gold, predicted)
        flat = {k: v for k, v in scores.items() if isinstance(v, (int, float))}
        return {**flat, "report": format_report(scores)}

    def test_sets(self, config):
        test = config["data"]["test_file"]
        return {"test": test} if test else {}

    def predict(self, model, config, assets, input_path, output_path=None):
        path = Path(input_path)
        if not path.is_file():
            raise UserError(f"input file not found: {path}")
        serving = self.serving(model, assets)
        lines = conll.read_lines(path)
        if _looks_like_conll(lines[:50], assets["tags"]):
            sentences = conll.read_conll(path, tag_column=config["data"]["tag_column"])
            tagged = serving.tag([s.tokens for s in sentences])
            conll.write_conll(output_path, sentences, tagged)
            return
        spans = [conll.tokenize(line) for line in lines]
        tagged = serving.tag([[token for token, _, _ in line_spans] for line_spans in spans])
        items = []
        for line, line_spans, tags in zip(lines, spans, tagged):
            tokens = [token for token, _, _ in line_spans]
            offsets = [(start, end) for _, start, end in line_spans]
            items.append({"text": line, "tokens": tokens, "tags": tags,
                          "entities": conll.entity_spans(tokens, tags, line, offsets)})
        conll.write_jsonl(output_path, items)

    def ensemble(self, models):
        from apps.ner.model import TaggerEnsemble

        if len({model.crf is None for model in models}) > 1:
            raise UserError("an ensemble averages like with like: its runs must all have "
                            "model.output crf, or all softmax")
        return TaggerEnsemble(models)

    def serving_module(self, model, config, assets):
        return self.serving(model, assets)

    def serving_example(self, assets):
        # unknown words and an empty sentence too: padding must match in every loader
        return {"sentences": ["John Smith visited Paris on Monday .", "EU rejects German call",
                              "Zyx", ""]}


def _looks_like_conll(lines, model_tags):
    """CoNLL: the token lines (not blank, not ``-DOCSTART-``) all have the
    same number (2+) of columns, the last a tag of an entity type the model
    knows ("Traffic stopped on I-95" is a sentence)."""
    types = {tag[2:] for tag in model_tags if tag != "O"}
    lines = [cols for cols in map(str.split, lines) if cols and cols[0] != "-DOCSTART-"]
    return (bool(lines) and len({len(cols) for cols in lines}) == 1 and len(lines[0]) >= 2
            and all(cols[-1] == "O" or (cols[-1][1:2] == "-" and cols[-1][2:] in types)
                    for cols in lines))


def read_embeddings(path, lowercase):
    """Words and vectors of a GloVe / word2vec text file (a word2vec header
    line ``count dim`` is read for the dimension). Words that contain spaces
    (GloVe 840B has ``. . .``) are skipped: they can never be one token."""
    vectors, dim = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])
                continue
            if dim is not None and len(parts) > dim + 1:
                continue
            try:
                vector = np.asarray(parts[1:], dtype="float32")
            except ValueError:
                raise UserError(f"{path}:{number}: not a 'word v1 v2 ...' line") from None
            dim = dim or len(vector)  # without a header, the first vector's
            if len(vector) != dim:
                raise UserError(f"{path}:{number}: {len(vector)} values where the vectors have {dim}")
            word = parts[0].lower() if lowercase else parts[0]
            vectors.setdefault(word, vector)
    return vectors


def load_embeddings(tagger, assets, path):
    vectors = read_embeddings(path, assets["lowercase"])
    table = tagger.word_embedding.embeddings
    weights = table.numpy()
    for index, word in enumerate(assets["words"], start=2):
        vector = vectors.get(word)
        if vector is not None:
            if vector.shape[0] != weights.shape[1]:
                raise UserError(f"{path}: vectors have {vector.shape[0]} dimensions, "
                                f"model.word_dim is {weights.shape[1]}")
            weights[index] = vector
    table.assign(weights)
