"""The translation app: what the core calls to read parallel text, learn
subwords, build, score, use and export the attentional encoder-decoder.
Registered as ``translation`` in ``pyproject.toml``."""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from apps.translation import data as corpora
from apps.translation import subwords
from apps.translation.subwords import BOS, EOS
from lstm_core.apps import App, model_cache
from lstm_core.attention import ATTENTIONS, GUIDE_WIDTH
from lstm_core.decoder import BRIDGES
from lstm_core.errors import UserError
from lstm_core.recipes import Field, RecipeError
from lstm_core.schema import check_rnn_options, encoder_schema, rnn_names

OPTIONAL_PATH = (str, type(None))
OPTIONAL_STR = (str, type(None))
SPLITS = ("train", "dev", "test")
#: sacreBLEU tokenizers that need nothing beyond sacreBLEU itself.
BLEU_TOKENIZERS = ["13a", "intl", "zh", "char", "none"]
#: The sentences ``serving_example`` sends through an export in a fresh
#: process: unknown characters and an empty sentence included.
EXAMPLE = ["A man in a red shirt is riding a bicycle.", "", "Zwei Hunde spielen im Schnee!",
           "¿Qué? 東京"]


def _files(split, optional=False):
    """The data keys of one split: two aligned files, or a TSV of pairs."""
    what = {"train": "training", "dev": "dev (model selection)",
            "test": "test (scored at the end, if present)"}[split]
    return {
        f"{split}_source": Field(OPTIONAL_PATH, None, data_file=True, optional_file=optional,
                                 doc=f"{what} source sentences, one a line (plain or .gz)"),
        f"{split}_target": Field(OPTIONAL_PATH, None, data_file=True, optional_file=optional,
                                 doc="their translations, line by line"),
        f"{split}_pairs": Field(OPTIONAL_PATH, None, data_file=True, optional_file=optional,
                                doc="instead of the two: a TSV of source<TAB>target lines"),
    }


class TranslationApp(App):
    name = "translation"
    metric = "bleu"
    serving_imports = ("tensorflow_text",)
    data_schema = {
        **_files("train"), **_files("dev"), **_files("test", optional=True),
        "tfds": Field(OPTIONAL_STR, None,
                      doc="instead of files: a prepared tensorflow-datasets translation set, "
                          "e.g. ted_hrlr_translate/pt_to_en or wmt14_translate/de-en"),
        "tfds_data_dir": Field(OPTIONAL_PATH, None, data_file=True,
                               doc="where tfds prepared data.tfds (never downloaded at run time)"),
        "tfds_train_split": Field(str, "train", doc="data.tfds split to train on"),
        "tfds_dev_split": Field(str, "validation", doc="data.tfds split for dev"),
        "tfds_test_split": Field(OPTIONAL_STR, "test", doc="data.tfds split scored at the end "
                                                           "(null: none)"),
        "source_language": Field(OPTIONAL_STR, None,
                                 doc="source language code: the tfds feature translated from "
                                     "(default: the set's own direction), and the suffix that "
                                     "pairs files for `evaluate --data X.<source>[.gz]`"),
        "target_language": Field(OPTIONAL_STR, None, doc="target language code, likewise"),
        "subwords": {
            "type": Field(str, "unigram", choices=list(subwords.KINDS),
                          doc="SentencePiece model learned from the training text"),
            "vocab_size": Field(int, 8000, min=8, doc="most subwords per vocabulary (a small "
                                                      "text may give fewer)"),
            "shared": Field(bool, True, doc="one vocabulary for both languages (else one each)"),
            "character_coverage": Field(float, 1.0, min=0.9, max=1.0,
                                        doc="share of the text's characters given their own "
                                            "subword; the rarest others become unknown"),
            "sampling_alpha": Field(float, 0.0, min=0.0, max=1.0,
                                    doc="> 0: subword regularization in training: each epoch "
                                        "draws every pair's segmentation anew (unigram: Kudo "
                                        "2018, sharpened by this alpha, 0.1 typical; bpe: "
                                        "BPE-dropout, Provilkov et al. 2020, this the merge "
                                        "dropout); dev, test and the export keep the best one"),
            "sampling_nbest_size": Field(int, 64, min=-1,
                                         doc="unigram sampling draws from the n best "
                                             "segmentations (-1: all of them)"),
            "sample_sentences": Field(int, 1_000_000, min=1,
                                      doc="sentences drawn from a larger text to learn from"),
            "finetune": Field(str, "keep", choices=["keep", "new"],
                              doc="lstm-suite finetune: keep the starting run's subwords, or "
                                  "learn new ones from this data (pieces in both keep their "
                                  "embedding and output rows)"),
        },
        "max_source_length": Field(int, 100, min=1,
                                   doc="training pairs with more source subwords are left out "
                                       "(counted and reported)"),
        "max_target_length": Field(int, 100, min=1, doc="likewise for the target side"),
        "batch_tokens": Field(int, 0, min=0,
                              doc="subwords per training batch (the longer side of each pair, "
                                  "padded), so batches cost alike; 0: train.batch_size pairs"),
        "dev_score": Field(str, "bleu", choices=["bleu", "loss"],
                           doc="what picks the best epoch: dev BLEU of greedy translations, or "
                               "the dev loss (no decoding: faster)"),
        "bleu_tokenize": Field(str, "13a", choices=BLEU_TOKENIZERS,
                               doc="sacreBLEU's tokenizer (zh for Chinese output)"),
    }
    model_schema = {
        "source_embedding_dim": Field(int, 256, min=1, doc="source subword embedding size"),
        "target_embedding_dim": Field(int, 256, min=1, doc="target subword embedding size"),
        "embedding_dropout": Field(float, 0.2, min=0, max=0.99,
                                   doc="dropout of the source and target embeddings"),
        "word_dropout": Field(float, 0.0, min=0, max=0.99,
                              doc="share of source and target subwords whose whole embedding "
                                  "is zeroed in training"),
        "encoder": encoder_schema(units=256, num_layers=2, cell_options={"cell_clip": 10.0}),
        "decoder": {
            "cell": Field(str, "peephole_lstm", choices=rnn_names, doc="registered recurrent layer"),
            "units": Field(int, 256, min=1, doc="units of every decoder layer"),
            "num_layers": Field(int, 2, min=1, doc="stacked decoder layers"),
            "attention": Field(str, "general", choices=list(ATTENTIONS),
                               doc="Luong's dot or general (bilinear) score, or Bahdanau's "
                                   "additive one"),
            "attention_options": Field(dict, {}, doc="scale (dot, general); units, normalize "
                                                     "(additive)"),
            "output_units": Field((int, type(None)), None, min=1,
                                  doc="size of the attentional vector (null: units; with "
                                      "tie_embeddings: target_embedding_dim)"),
            "input_feeding": Field(bool, True, doc="feed each step's attentional vector into "
                                                   "the next (Luong et al. 2015)"),
            "dropout": Field(float, 0.2, min=0, max=0.99,
                             doc="between decoder layers and on the attentional vector"),
            "residual": Field(bool, False, doc="add a layer's input to its output (not the "
                                               "first layer's)"),
            "cell_options": Field(dict, {"cell_clip": 10.0},
                                  doc="extra layer arguments: cell_clip, num_proj, ..."),
            "bridge": Field(str, "zeros", choices=list(BRIDGES),
                            doc="the state before the first step: zeros, or mean: from the "
                                "mean of the encoder outputs (Nematus)"),
        },
        "guided_attention": {
            "weight": Field(float, 0.0, min=0,
                            doc="weight of the guided-attention loss (the decoder's attention "
                                "off the diagonal, Tachibana et al. 2018) added to the training "
                                "loss (0: off)"),
            "width": Field(float, GUIDE_WIDTH, min=0.01,
                           doc="how far from the diagonal (as a share of the sentence) "
                               "attention goes unpenalised"),
        },
        "tie_embeddings": Field(bool, False, doc="the output layer reuses the target embeddings"),
        "label_smoothing": Field(float, 0.1, min=0, max=0.99,
                                 doc="share of each target's probability spread over the "
                                     "vocabulary in the loss"),
        "seed": Field(int, 1, doc="seeds the dropout masks; weights and data shuffling follow "
                                  "train.seed"),
    }
    decode_schema = {
        "beam_width": Field(int, 5, min=1, doc="hypotheses kept by the beam search of final "
                                               "scores, predict and export (1: greedy)"),
        "length_penalty": Field(float, 0.6, min=0,
                                doc="GNMT length penalty alpha: higher favours longer output"),
        "max_length_ratio": Field(float, 2.0, min=0,
                                  doc="a translation has at most ratio x source subwords + "
                                      "offset subwords"),
        "max_length_offset": Field(int, 10, min=0, doc="see max_length_ratio"),
        "n_best": Field(int, 5, min=1, doc="hypotheses per sentence in predict's JSON lines "
                                          "(at most beam_width)"),
    }

    def __init__(self):
        self._pairs = {}  # (data section, split, path) -> pairs, read once per process

    def dev_metric(self, config):
        return "" if config["data"]["dev_score"] == "loss" else self.metric

    # -- data -------------------------------------------------------------------

    def pairs(self, config, split, path=None):
        """The raw pairs of ``split`` or of ``path`` (a TSV, a source file
        next to its target, a split's source file, or ``tfds:<split>``)."""
        data = config["data"]
        key = (json.dumps(data, sort_keys=True, default=str), split, str(path))
        if key not in self._pairs:
            pairs = self._read(data, split) if path is None else self._read_path(data, path)
            if not pairs:
                raise UserError(f"{path or self.origin(data, split)}: no sentence pairs")
            self._pairs[key] = pairs
        return self._pairs[key]

    @staticmethod
    def origin(data, split):
        """What ``split``'s pairs are read from, for messages: its files (a
        message that says only "train data" leaves the user to guess which
        files the recipe's keys named), or the tfds set and split."""
        if data["tfds"]:
            return f"tensorflow-datasets {data['tfds']} split {data[f'tfds_{split}_split']}"
        files = [data[f"{split}_{k}"] for k in ("pairs", "source", "target")]
        return ", ".join(str(f) for f in files if f) or f"{split} data"

    @staticmethod
    def _read(data, split):
        if data["tfds"]:
            return corpora.read_tfds(data["tfds"], data[f"tfds_{split}_split"],
                                     data["tfds_data_dir"], data["source_language"],
                                     data["target_language"])
        source, target, tsv = (data[f"{split}_{k}"] for k in ("source", "target", "pairs"))
        if tsv and not (source or target):
            return corpora.read_tsv(tsv)
        if source and target and not tsv:
            return corpora.read_parallel(source, target)
        raise UserError(f"set data.{split}_source and data.{split}_target (two aligned files), "
                        f"or data.{split}_pairs (a TSV), or data.tfds"
                        + (": not both" if tsv and (source or target) else ""))

    def _read_path(self, data, path):
        path = str(path)
        if path.startswith("tfds:"):
            return corpora.read_tfds(data["tfds"], path[len("tfds:"):], data["tfds_data_dir"],
                                     data["source_language"], data["target_language"])
        for split in SPLITS:  # a split's own source file (the test set, say)
            if data[f"{split}_source"] and Path(data[f"{split}_source"]).resolve() == Path(
                    path).resolve():
                return corpora.read_parallel(path, data[f"{split}_target"])
        name = Path(path).name.lower()
        if name.endswith((".tsv", ".tsv.gz")):
            return corpora.read_tsv(path)
        source, target = data["source_language"], data["target_language"]
        if source and target:
            for ending in ("", ".gz"):
                stem = Path(path).name.removesuffix(f".{source}{ending}")
                other = Path(path).with_name(f"{stem}.{target}{ending}")
                if stem != Path(path).name and other.is_file():
                    return corpora.read_parallel(path, other)
        raise UserError(f"{path}: give a TSV of source<TAB>target lines (.tsv or .tsv.gz), or a "
                        f"file X.<source language>[.gz] next to its X.<target language>[.gz] "
                        f"(data.source_language, data.target_language: {source}, {target})")

    def build_assets(self, config, data_root, folder):
        sub = config["data"]["subwords"]
        pairs = [p for p in self.pairs(config, "train") if p.source and p.target]
        if not pairs:
            raise UserError(f"{self.origin(config['data'], 'train')}: every pair has an empty side")
        options = dict(kind=sub["type"], vocab_size=sub["vocab_size"],
                       character_coverage=sub["character_coverage"],
                       sample=sub["sample_sentences"])
        sources, targets = [p.source for p in pairs], [p.target for p in pairs]
        if sub["shared"]:
            size = subwords.train(sources + targets, Path(folder) / "shared.model", **options)
            return {"source_model": "shared.model", "target_model": "shared.model",
                    "source_vocab": size, "target_vocab": size}
        return {"source_model": "source.model", "target_model": "target.model",
                "source_vocab": subwords.train(sources, Path(folder) / "source.model", **options),
                "target_vocab": subwords.train(targets, Path(folder) / "target.model", **options)}

    def finetune_assets(self, config, data_root, folder, previous):
        if config["data"]["subwords"]["finetune"] == "keep":
            return previous
        return self.build_assets(config, data_root, folder)

    def vocabularies(self, assets):
        return {side: [p.id_to_piece(i) for i in range(p.get_piece_size())]
                for side, p in zip(("source", "target"), self.processors(assets))}

    def vocabulary_axes(self, model):
        axes = [(model.source_embedding.embeddings, ("source", None)),
                (model.target_embedding.embeddings, ("target", None)),
                (model.logits.bias, ("target",))]
        if not model.logits.tied:
            axes.append((model.logits.kernel, (None, "target")))
        return axes

    def processors(self, assets):
        """The Python SentencePiece processors of the source and target."""
        return (subwords.load(assets.file(assets["source_model"])),
                subwords.load(assets.file(assets["target_model"])))

    def build_data(self, config, data_root, assets):
        return (self.dataset("train", config, assets, shuffle=True),
                self.dataset("dev", config, assets, shuffle=False))

    def dataset(self, split, config, assets, shuffle):
        """Batches of ``({"source", "target_in"}, target_out)`` subword ids,
        bucketed by the longer side of each pair."""
        from lstm_core.data import auto_boundaries, stream_batches

        data, train = config["data"], config["train"]
        pairs = self.pairs(config, split)
        source_processor, target_processor = self.processors(assets)
        filtered = corpora.filter_pairs(
            subwords.encode(source_processor, (p.source for p in pairs)),
            subwords.encode(target_processor, (p.target for p in pairs)),
            data["max_source_length"], data["max_target_length"])
        limits = data["max_source_length"], data["max_target_length"]
        if not filtered.kept:  # the counts in the error itself: one line, not a report and then it
            raise UserError(f"{self.origin(data, split)}: no pairs left; "
                            f"{filtered.left_out(*limits)}")
        report = filtered.report(f"{split} data", *limits)
        if report:
            print(report, file=sys.stderr)
        sources = [source for source, _ in filtered.kept]
        targets_in = [[BOS, *target] for _, target in filtered.kept]
        targets_out = [[*target, EOS] for _, target in filtered.kept]
        lengths = [max(len(s), len(t)) for s, t in zip(sources, targets_in)]
        longest = max(lengths)
        sampled = split == "train" and data["subwords"]["sampling_alpha"] > 0
        if sampled:
            dataset = self._sampled(
                [pairs[i] for i in filtered.positions], assets, data["subwords"])
            longest = max(limits[0], limits[1] + 1)  # a drawn segmentation may be longer
        else:
            dataset = tf.data.Dataset.from_tensor_slices(
                tuple(_ragged(rows) for rows in (sources, targets_in, targets_out)))
            dataset = dataset.map(
                lambda s, t_in, t_out: ({"source": s, "target_in": t_in}, t_out))
        batch = ({"batch_tokens": data["batch_tokens"]} if data["batch_tokens"]
                 else {"batch_size": train["batch_size"]})
        # Under XLA every batch shape compiles once: padded to their bucket's
        # longest pair, without the last short batch of each bucket (another
        # one each epoch, as the data is shuffled), batches have a few shapes.
        fixed_shapes = train["jit_compile"] and shuffle
        return stream_batches(
            dataset, length=lambda x, y: tf.maximum(tf.shape(x["source"])[0], tf.shape(y)[0]),
            bucket_boundaries=[b for b in auto_boundaries(lengths) if b <= longest],
            max_length=longest, shuffle_buffer=len(lengths) if shuffle else 0,
            seed=train["seed"], pad_to_bucket_boundary=fixed_shapes, drop_remainder=fixed_shapes,
            lengths=None if sampled else lengths, **batch)  # (drawn: their batches vary)

    @staticmethod
    def _sampled(pairs, assets, settings):
        """``pairs`` as subword ids drawn anew each time the dataset is read,
        so each epoch sees other segmentations of the same text (subword
        regularization): tensorflow-text's SentencePiece op samples in the
        pipeline. Its sampler takes no seed, so these draws are not
        repeatable."""
        import tensorflow_text

        if settings["sampling_nbest_size"] in (0, 1):  # the op would quietly not sample
            raise RecipeError("data.subwords.sampling_nbest_size: -1 (all) or at least 2 to "
                              "sample with data.subwords.sampling_alpha")

        def tokenizer(side):
            return tensorflow_text.SentencepieceTokenizer(
                model=assets.file(assets[f"{side}_model"]).read_bytes(), out_type=tf.int32,
                nbest_size=settings["sampling_nbest_size"], alpha=settings["sampling_alpha"])

        source_tokenizer, target_tokenizer = tokenizer("source"), tokenizer("target")

        def encode(source, target):
            target = target_tokenizer.tokenize(target)
            return ({"source": source_tokenizer.tokenize(source),
                     "target_in": tf.concat([[BOS], target], 0)}, tf.concat([target, [EOS]], 0))

        texts = ([p.source for p in pairs], [p.target for p in pairs])
        return tf.data.Dataset.from_tensor_slices(texts).map(
            encode, num_parallel_calls=tf.data.AUTOTUNE)

    # -- model ----------------------------------------------------------------

    def build_model(self, config, assets):
        from apps.translation.model import Translator

        model = config["model"]
        check_rnn_options("model.encoder", model["encoder"]["cell"],
                          model["encoder"]["cell_options"])
        check_rnn_options("model.decoder", model["decoder"]["cell"],
                          model["decoder"]["cell_options"])
        try:
            translator = Translator(
                source_vocab=assets["source_vocab"], target_vocab=assets["target_vocab"],
                source_embedding_dim=model["source_embedding_dim"],
                target_embedding_dim=model["target_embedding_dim"],
                embedding_dropout=model["embedding_dropout"],
                word_dropout=model["word_dropout"], encoder=model["encoder"],
                decoder=model["decoder"], tie_embeddings=model["tie_embeddings"],
                label_smoothing=model["label_smoothing"],
                guided_attention=model["guided_attention"], seed=model["seed"])
            ids = tf.constant([[BOS, EOS]])
            translator({"source": ids, "target_in": ids})  # build
        except ValueError as error:  # settings that do not fit together (dot attention sizes)
            raise RecipeError(f"model: {error}") from None
        return translator

    def serving(self, model, config, assets, beam_width):
        """The serving module of ``model`` (a Translator or an ensemble)
        with the recipe's decode settings and ``beam_width``, made once per
        model and settings (a new one would trace its graph again)."""
        from apps.translation.serving import TranslationServing

        decode = config["decode"]
        settings = (beam_width, decode["length_penalty"], decode["max_length_ratio"],
                    decode["max_length_offset"])

        def make():
            # Loaded in Python first: a damaged .model file is then named,
            # where tensorflow-text's op fails with an InternalError naming none.
            self.processors(assets)
            return TranslationServing(getattr(model, "members", [model]),
                                      assets.file(assets["source_model"]),
                                      assets.file(assets["target_model"]), *settings)

        return model_cache(model, ("serving", *settings), make)

    # -- use ------------------------------------------------------------------

    def evaluate(self, model, config, data_root, assets, path=None, final=False, figure=None):
        from apps.translation import metrics, plots

        pairs = self.pairs(config, "dev", path)
        decode = config["decode"]
        beam = decode["beam_width"] if final else 1
        serving = self.serving(model, config, assets, beam)
        sources, references = [p.source for p in pairs], [p.target for p in pairs]
        hypotheses = serving.translate(sources)
        scores, report = metrics.score(hypotheses, references, config["data"]["bleu_tokenize"])
        decoding = (f"beam {beam}, length penalty {decode['length_penalty']}" if beam > 1
                    else "greedy")
        if figure is not None:
            count = min(plots.SENTENCES, len(pairs))
            rows = plots.attention_rows(model, serving, *self.processors(assets), sources[:count])
            plots.draw_attention(figure, rows, [plots.title(*texts) for texts in zip(
                sources, references, hypotheses)][:count])
        return {**scores, "report": f"{report}\n  decoding: {decoding}"}

    def test_sets(self, config):
        data = config["data"]
        if data["tfds"]:
            split = data["tfds_test_split"]
            return {"test": f"tfds:{split}"} if split else {}
        if data["test_pairs"]:
            return {"test": data["test_pairs"]}
        if data["test_source"] and data["test_target"]:
            return {"test": data["test_source"]}
        return {}

    def predict(self, model, config, assets, input_path, output_path=None):
        """A translation per line of ``input_path``, or JSON lines with the
        n-best list and scores when ``output_path`` ends in ``.jsonl``/``.json``."""
        sentences = corpora.read_lines(input_path)
        decode = config["decode"]
        serving = self.serving(model, config, assets, decode["beam_width"])
        if output_path is not None and Path(output_path).suffix.lower() in (".jsonl", ".json"):
            count = min(decode["n_best"], decode["beam_width"])
            lines = [json.dumps({"source": source, "translation": (best[0]["translation"]
                                                                   if best else ""),
                                 "n_best": best}, ensure_ascii=False) + "\n"
                     for source, best in zip(sentences, serving.translate_n_best(sentences,
                                                                                  count))]
        else:
            lines = [text + "\n" for text in serving.translate(sentences)]
        if output_path is None:
            sys.stdout.write("".join(lines))
        else:
            Path(output_path).write_text("".join(lines), encoding="utf-8")

    def ensemble(self, models):
        from apps.translation.model import TranslatorEnsemble

        return TranslatorEnsemble(models)

    def serving_module(self, model, config, assets):
        return self.serving(model, config, assets, config["decode"]["beam_width"])

    def serving_example(self, assets):
        return {"source": list(EXAMPLE)}


def _ragged(rows):
    """A ``[len(rows), (n)]`` int32 ragged tensor of lists of ints."""
    lengths = np.fromiter((len(row) for row in rows), np.int64, len(rows))
    values = np.fromiter((i for row in rows for i in row), np.int32, int(lengths.sum()))
    return tf.RaggedTensor.from_row_lengths(values, lengths)
