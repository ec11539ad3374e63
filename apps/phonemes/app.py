"""The phonemes app: what the core calls to read audio and transcriptions,
build, score, use and export the CTC phoneme recognizer. Registered as
``phonemes`` in ``pyproject.toml``."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from apps.phonemes import data as audio_data
from apps.phonemes import lexicon as lexicons
from apps.phonemes import timit, tfds_source
from lstm_core.apps import App, model_cache
from lstm_core.errors import UserError
from lstm_core.ngram import count_ngrams, log_prob_table
from lstm_core.recipes import Field, RecipeError
from lstm_core.schema import check_rnn_options, encoder_schema

OPTIONAL_PATH = (str, type(None))
OPTIONAL_STR = (str, type(None))
#: model.normalize in a recipe -> PhonemeRecognizer's normalize.
NORMALIZE = {"utterance": "utterance", "global": "global", "none": None}
#: ``data.score_map`` names: phone -> scored class, built in.
SCORE_MAPS = {"timit39": timit.score_map_39}
#: The keys that name a data source; a recipe sets exactly one.
SOURCES = ("train_manifest", "timit_root", "tfds")
#: The highest order of phone LM a run can decode with (its counts are kept).
PHONE_LM_ORDER = 3
# model.augment.trim leaves every training utterance at least this long: a
# short digit keeps a CTC step for each of its phonemes after speed
# perturbation (0.2 s at 1.2x is 5 steps of 30 ms).
TRIM_KEEP_SECONDS = 0.2


def phone_ids(phones):
    """``{phone: class id}``: 1, 2, ... in order (class 0 is the CTC blank)."""
    return {phone: index for index, phone in enumerate(phones, start=1)}


class PhonemeApp(App):
    name = "phonemes"
    metric = "per"
    metric_mode = "min"
    data_schema = {
        # one source: a manifest, a TIMIT tree or a tensorflow-datasets set
        "train_manifest": Field(OPTIONAL_PATH, None, data_file=True,
                                doc="TSV/CSV manifest: path (relative to it), phonemes and/or "
                                    "text (words, for data.lexicon), optional split and speaker "
                                    "columns"),
        "dev_manifest": Field(OPTIONAL_PATH, None, data_file=True,
                              doc="manifest of the dev utterances (default: train_manifest)"),
        "extra_train_manifest": Field(OPTIONAL_PATH, None, data_file=True,
                                      doc="a manifest every row of which is added to the "
                                          "training data of any source (e.g. synthetic speech "
                                          "from python -m apps.phonemes.synthesize)"),
        "train_split": Field(OPTIONAL_STR, None, doc="train on rows whose split column is this"),
        "dev_split": Field(OPTIONAL_STR, None, doc="score dev on rows whose split column is this"),
        "dev_speakers": Field(list, [], items=str,
                              doc="dev = these speakers (left out of training when the "
                                  "manifests are one file, and for data.tfds)"),
        "dev_paths": Field(OPTIONAL_STR, None,
                           doc="dev = the rows whose audio path this regular expression "
                               "matches (searched; left out of training when the manifests "
                               "are one file), e.g. '_[0-4]\\.wav$' for FSDD's own test takes"),
        "timit_root": Field(OPTIONAL_PATH, None, data_file=True,
                            doc="a TIMIT tree (TRAIN/DR*/SPEAKER/*.WAV + .PHN, TEST/...): train "
                                "on TRAIN, dev from TEST"),
        "timit_dev": Field(str, "core_test", choices=list(timit.DEV_SETS),
                           doc="dev = the TEST speakers of the 24-speaker core test set, all of "
                               "them, or the 144 others"),
        "timit_sa": Field(bool, False, doc="keep the SA1/SA2 sentences every speaker reads"),
        "timit_phones": Field(int, 48, choices=list(timit.PHONE_SETS),
                              doc="training labels: Lee & Hon's 48 phones (q removed) or "
                                  "TIMIT's 61"),
        "tfds": Field(OPTIONAL_STR, None, choices=list(tfds_source.DATASETS),
                      doc="a tensorflow-datasets set, its labels' words transcribed with "
                          "data.lexicon (default for spoken_digit: the bundled digits.dict)"),
        "tfds_data_dir": Field(OPTIONAL_PATH, None, data_file=True,
                               doc="where tfds prepared data.tfds (never downloaded at run time)"),
        "tfds_dev_percent": Field(int, 0, min=0, max=99,
                                  doc="dev = the last N% of data.tfds's one split (or choose "
                                      "data.dev_speakers)"),
        # word transcripts
        "lexicon": Field(OPTIONAL_PATH, None, data_file=True,
                         doc="CMUdict-format pronunciation lexicon for text without phonemes"),
        "strip_stress": Field(bool, True, doc="drop the lexicon's stress digits (AH0 -> AH)"),
        "missing_words": Field(str, "fail", choices=[lexicons.FAIL, lexicons.SKIP],
                               doc="text with words the lexicon lacks: fail (naming the line "
                                   "and word), or skip the utterance (counted and reported)"),
        # audio and scoring
        "sample_rate": Field(int, 16000, min=1, doc="audio is resampled to this rate (Hz)"),
        "bad_audio": Field(str, "fail", choices=list(audio_data.BAD_AUDIO),
                           doc="an unreadable or empty audio file: fail, or skip it (counted "
                               "and reported)"),
        "score_map": Field(OPTIONAL_STR, None, choices=list(SCORE_MAPS),
                           doc="fold phones before scoring PER: timit39 (Lee & Hon's 39 classes)"),
        "score_map_file": Field(OPTIONAL_PATH, None, data_file=True,
                                doc="fold phones before scoring PER: a TSV of 'phone<TAB>scored "
                                    "phone' lines (no scored phone: deleted)"),
    }
    model_schema = {
        "features": {
            "type": Field(str, "log_mel", choices=["log_mel", "mfcc"],
                          doc="log_mel: log mel filterbank energies; mfcc: their first n_mfcc "
                              "cepstral coefficients (orthonormal DCT-II, as librosa)"),
            "n_mels": Field(int, 40, min=1, doc="mel filterbank channels"),
            "window_ms": Field(float, 25.0, min=1, doc="analysis window"),
            "hop_ms": Field(float, 10.0, min=1, doc="frame step"),
            "n_mfcc": Field(int, 13, min=1, doc="mfcc: coefficients kept (at most n_mels)"),
            "deltas": Field(int, 0, min=0, max=2,
                            doc="append the first (1), or first and second (2), time "
                                "derivatives of the features (librosa.feature.delta)"),
            "delta_width": Field(int, 9, min=3,
                                 doc="frames each delta is fitted over (odd, more than deltas)"),
        },
        "normalize": Field(str, "utterance", choices=list(NORMALIZE),
                           doc="feature mean/variance normalisation: utterance (each "
                               "utterance's own statistics), global (statistics of the "
                               "training data, computed when the run is created and kept in "
                               "its assets and the export), or none"),
        "augment": {
            "trim": Field(list, [], items=float, min=0.0, max=0.99,
                          doc="[min, max]: cut a random share in this range off "
                              "each training utterance, split between its start and end, never "
                              f"below {TRIM_KEEP_SECONDS:g} s; the label stays whole, so the "
                              "model learns words from parts of them (isolated words trimmed "
                              "unevenly by their speakers, as in FSDD); [] off"),
            "speed": Field(list, [], items=float, min=0.01,
                           doc="[min, max]: play each training utterance at a random rate in "
                               "this range (1.1: 10% faster, shorter and higher); [] off"),
            "noise_snr_db": Field(list, [], items=float,
                                  doc="[min, max]: add white noise to each training utterance "
                                      "at a random signal-to-noise ratio (dB) in this range; "
                                      "[] off"),
            "warp": Field(list, [], items=float, min=0.01,
                          doc="[min, max]: vocal tract length perturbation: stretch each "
                              "training utterance's spectrum by a random factor in this range "
                              "(1.1: formants 10% higher, tempo unchanged); [] off"),
        },
        "spec_augment": {
            "enabled": Field(bool, True, doc="mask frequency bands and time spans in training"),
            "freq_masks": Field(int, 2, min=0, doc="frequency masks per utterance"),
            "freq_mask_width": Field(int, 8, min=0, doc="widest frequency mask (channels)"),
            "time_masks": Field(int, 2, min=0, doc="time masks per utterance"),
            "time_mask_width": Field(int, 10, min=0, doc="widest time mask (frames)"),
            "time_mask_ratio": Field(float, 0.2, min=0, max=1,
                                     doc="a time mask covers at most this share of the utterance"),
        },
        "subsample": {
            "type": Field(str, "stack", choices=["stack", "conv"],
                          doc="how feature frames become fewer recurrent steps: stack "
                              "(concatenate factor frames) or conv (a strided 1-D convolution "
                              "over time, learned)"),
            "factor": Field(int, 3, min=1, doc="feature frames per recurrent step"),
            "filters": Field(int, 256, min=1, doc="conv: output channels"),
            "kernel_size": Field(int, 5, min=1,
                                 doc="conv: frames each step sees (at least factor)"),
        },
        "encoder": encoder_schema(units=128, num_layers=2, cell_options={"cell_clip": 3.0}),
        "seed": Field(int, 1, doc="seeds SpecAugment's masks and the speed, noise and warp "
                                  "augmentation"),
    }
    decode_schema = {
        "beam_width": Field(int, 8, min=1,
                            doc="CTC beam of final scores, predict and export (1: greedy)"),
        "lm_weight": Field(float, 0.0, min=0,
                           doc="weight of the phone n-gram LM (counted on the training "
                               "transcriptions) rescoring the beam's n-best list (0: off; "
                               "greedy decoding never uses it)"),
        "lm_order": Field(int, 3, min=1, max=PHONE_LM_ORDER,
                          doc="n of the phone n-gram LM: 1 unigram, 2 bigram, 3 trigram"),
        "lm_smoothing": Field(float, 0.1, min=0.0001,
                              doc="count added to every n-gram of the phone LM (Lidstone)"),
    }

    def __init__(self):
        # One read per process of each: the data is asked for at every dev pass.
        self._audio = {}  # (paths, sample rate) -> waveforms, kept, skipped
        self._utterances = {}  # (data section, split, path) -> utterances
        self._read = {}  # (reader, arguments) -> what it read: lexicons, tfds sets

    # -- data -----------------------------------------------------------------

    def utterances(self, config, split, path=None, data_root=None):
        """The utterances of ``split`` (train/dev) from the recipe's data
        source, or all those of the manifest ``path``, with phonemes (word
        transcripts transcribed through ``data.lexicon``). A manifest under
        ``data_root`` must keep its rows under it (see ``read_manifest``)."""
        data = config["data"]
        key = (json.dumps(data, sort_keys=True, default=str), split, str(path), str(data_root))
        if key not in self._utterances:
            what = str(path) if path is not None else f"{split} data"
            lexicon_path = data["lexicon"] or (tfds_source.DIGITS_LEXICON if data["tfds"] else None)
            lexicon = None if lexicon_path is None else self._once(
                lexicons.read_lexicon, str(lexicon_path), data["strip_stress"])
            read, report = audio_data.with_phonemes(
                self._source_utterances(data, split, path, data_root), lexicon,
                data["missing_words"], str(lexicon_path))
            if report:
                print(f"{what}: {report}", file=sys.stderr)
            if not read:
                raise UserError(f"{what}: no utterances left")
            self._utterances[key] = read
        return self._utterances[key]

    def _source_utterances(self, data, split, path, data_root):
        """What the one source the recipe names gives for ``split``, with
        ``data.extra_train_manifest``'s rows in training."""
        if path is not None:
            return audio_data.read_manifest(path, data_root)
        utterances = list(self._named_source_utterances(data, split, data_root))
        if split == "train" and data["extra_train_manifest"] is not None:
            utterances += audio_data.read_manifest(data["extra_train_manifest"], data_root)
        return utterances

    def _named_source_utterances(self, data, split, data_root):
        """``split`` of the one source the recipe names: a manifest, a TIMIT
        tree or a tensorflow-datasets set."""
        named = [key for key in SOURCES if data[key] is not None]
        if len(named) != 1:
            raise UserError(f"set exactly one of data.{', data.'.join(SOURCES)}"
                            + (f" (found {', '.join(named)})" if named else ""))
        if named[0] == "timit_root":
            return timit.utterances(data["timit_root"], split, data["timit_dev"],
                                    data["timit_sa"], data["timit_phones"])
        if named[0] == "tfds":
            everything = self._once(tfds_source.read, data["tfds"], data["tfds_data_dir"])
            return tfds_source.split(everything, split, data["tfds"], data["dev_speakers"],
                                     data["tfds_dev_percent"])
        return self._manifest_utterances(data, split, data_root)

    @staticmethod
    def _manifest_utterances(data, split, data_root):
        train = data["train_manifest"]
        manifest = data["dev_manifest"] or train if split == "dev" else train
        rows = audio_data.read_manifest(manifest, data_root)
        speakers = set(data["dev_speakers"])
        paths = _pattern("data.dev_paths", data["dev_paths"])
        if split == "dev":
            chosen = audio_data.select(rows, manifest, data["dev_split"], speakers, paths=paths)
        else:
            shared = Path(data["dev_manifest"] or train).resolve() == Path(train).resolve()
            chosen = audio_data.select(rows, manifest, data["train_split"],
                                       exclude_speakers=speakers if shared else None,
                                       exclude_paths=paths if shared else None)
        if not chosen:
            raise UserError(f"{manifest}: no {split} utterances (check data.{split}_split, "
                            f"data.dev_speakers and data.dev_paths)")
        return chosen

    def _once(self, reader, *arguments):
        """``reader(*arguments)``, read once per process."""
        key = (reader, arguments)
        if key not in self._read:
            self._read[key] = reader(*arguments)
        return self._read[key]

    def score_map(self, config):
        """The phone folding that PER is scored after (``data.score_map`` or
        ``data.score_map_file``), or None."""
        data = config["data"]
        name, path = data["score_map"], data["score_map_file"]
        if name and path:
            raise UserError("set data.score_map or data.score_map_file, not both")
        if name:
            return SCORE_MAPS[name]()
        return self._once(audio_data.read_phone_map, str(path)) if path else None

    def audio(self, config, utterances, what):
        """Waveforms of ``utterances`` at the recipe's rate, bad files
        skipped or failing per ``data.bad_audio``."""
        rate, policy = config["data"]["sample_rate"], config["data"]["bad_audio"]
        key = (tuple(str(u.path) for u in utterances), rate, policy)
        if key not in self._audio:
            self._audio[key] = audio_data.load_utterances(utterances, rate, policy)
            skipped = self._audio[key][2]
            if skipped:
                print(f"{what}: skipped {len(skipped)} bad audio file(s): "
                      + "; ".join(skipped.reasons[:3]) + (" ..." if len(skipped) > 3 else ""),
                      file=sys.stderr)
        return self._audio[key]

    def build_assets(self, config, data_root, folder):
        """The phone set, the sample rate, and the training transcriptions'
        n-gram counts (for a phone LM at decoding; cheap, so always kept)."""
        transcriptions = [u.phonemes for u in self.utterances(config, "train", data_root=data_root)]
        phones = sorted({p for phonemes in transcriptions for p in phonemes})
        if not phones:
            raise UserError("the training transcriptions have no phonemes")
        ids = phone_ids(phones)
        assets = {"phones": phones, "sample_rate": config["data"]["sample_rate"],
                  "phone_ngrams": count_ngrams(([ids[p] for p in phonemes]
                                                for phonemes in transcriptions), PHONE_LM_ORDER)}
        if config["model"]["normalize"] == "global":
            assets["feature_statistics"] = self.feature_statistics(config, data_root)
        return assets

    def finetune_assets(self, config, data_root, folder, previous):
        """The new data's phone set (shared phones keep their rows, new ones
        are learned, dropped ones go), normalised as the starting run was."""
        new = self.build_assets(config, data_root, folder)
        if "feature_statistics" in previous and "feature_statistics" in new:
            new["feature_statistics"] = previous["feature_statistics"]
        return new

    def vocabularies(self, assets):
        return {"phones": ["\0blank"] + assets["phones"]}  # class 0 is the CTC blank

    def vocabulary_axes(self, model):
        return [(model.classifier.kernel, (None, "phones")), (model.classifier.bias, ("phones",))]

    def build_data(self, config, data_root, assets):
        return (self.dataset("train", config, assets, shuffle=True, data_root=data_root),
                self.dataset("dev", config, assets, shuffle=False, data_root=data_root))

    def dataset(self, split, config, assets, shuffle, data_root=None):
        from lstm_core.data import make_dataset

        self._check_rate(config, assets)
        waveforms, kept, _ = self.audio(config, self.utterances(config, split, data_root=data_root),
                                        f"{split} data")
        if not kept:
            raise UserError(f"{split} data: every audio file was bad")
        ids = phone_ids(assets["phones"])
        unknown = sorted({p for u in kept for p in u.phonemes} - set(ids))
        if unknown:
            raise UserError(f"{split} data: the model has no phoneme {', '.join(unknown)}; it "
                            f"knows {' '.join(assets['phones'])}")
        examples = [({"waveform": w, "lengths": np.int32(len(w))},
                     np.asarray([ids[p] for p in u.phonemes], "int32"))
                    for w, u in zip(waveforms, kept)]
        return make_dataset(examples, batch_size=config["train"]["batch_size"],
                            length=lambda x, y: tf.shape(x["waveform"])[0],
                            lengths=[len(w) for w in waveforms], shuffle=shuffle,
                            seed=config["train"]["seed"], num_buckets=4)

    @staticmethod
    def _check_rate(config, assets):
        if config["data"]["sample_rate"] != assets["sample_rate"]:
            raise UserError(f"data.sample_rate is {config['data']['sample_rate']} but the model "
                            f"was trained at {assets['sample_rate']} Hz")

    # -- model ----------------------------------------------------------------

    def build_model(self, config, assets):
        from apps.phonemes.model import PhonemeRecognizer

        model = config["model"]
        encoder = model["encoder"]
        check_rnn_options("model.encoder", encoder["cell"], encoder["cell_options"])
        statistics = None
        if model["normalize"] == "global":
            statistics = assets.get("feature_statistics")
            if statistics is None:
                raise UserError("model.normalize is global but the run's assets have no feature "
                                "statistics (it was created with another model.normalize)")
        spec_augment = {k: v for k, v in model["spec_augment"].items() if k != "enabled"}
        for key, values in model["augment"].items():
            if values and (len(values) != 2 or values[0] > values[1]):
                raise RecipeError(f"model.augment.{key}: expected [min, max] (or [] for off), "
                                  f"got {values}")
        trim, speed, noise, warp = (model["augment"][k]
                                     for k in ("trim", "speed", "noise_snr_db", "warp"))
        features = feature_settings(model, assets["sample_rate"])
        if warp:
            features["warp"] = {"factors": warp, "seed": model["seed"] + 3}
        recognizer = PhonemeRecognizer(
            num_classes=len(assets["phones"]) + 1,
            features=features,
            normalize=NORMALIZE[model["normalize"]], statistics=statistics,
            # One seed per random layer: the same key would draw correlated values.
            spec_augment={**spec_augment, "seed": model["seed"]}
            if model["spec_augment"]["enabled"] else None,
            trim={"fractions": trim, "seed": model["seed"] + 4,
                  "min_samples": round(TRIM_KEEP_SECONDS * assets["sample_rate"])}
            if trim else None,
            speed={"rates": speed, "seed": model["seed"] + 1} if speed else None,
            noise={"snr_db": noise, "seed": model["seed"] + 2} if noise else None,
            subsample=model["subsample"], encoder=encoder)
        recognizer({"waveform": tf.zeros([1, 800]), "lengths": tf.constant([800])})  # build
        return recognizer

    def feature_statistics(self, config, data_root=None):
        """Mean and standard deviation of each feature the model computes
        (``model.features``), over every frame of the training audio: the
        assets of ``model.normalize: global``."""
        from lstm_core.audio import AudioFeatures, feature_statistics

        waveforms, _, _ = self.audio(config, self.utterances(config, "train", data_root=data_root),
                                     "train data")
        if not waveforms:
            raise UserError("train data: every audio file was bad")
        layer = AudioFeatures(**feature_settings(config["model"], config["data"]["sample_rate"]))
        mean, std = feature_statistics(layer, waveforms)
        return {"mean": mean.tolist(), "std": std.tolist()}

    def serving(self, model, config, assets, beam_width):
        """The model's serving module for ``beam_width`` and the recipe's
        phone LM settings, made once per model and settings (a new one
        would trace its graph again at every dev pass)."""
        from apps.phonemes.serving import PhonemeServing

        decode, settings, lm = config["decode"], None, None
        if beam_width > 1 and decode["lm_weight"] > 0:
            if "phone_ngrams" not in assets:
                raise UserError("decode.lm_weight: this run has no phone n-gram counts (it was "
                                "trained before they were kept); train it again to use an LM")
            settings = (decode["lm_order"], decode["lm_smoothing"], decode["lm_weight"])
            try:
                table = log_prob_table(assets["phone_ngrams"], len(assets["phones"]) + 1,
                                       decode["lm_order"], decode["lm_smoothing"])
            except ValueError as error:
                raise UserError(f"decode.lm_order: {error}") from None
            lm = (table, decode["lm_weight"])
        return model_cache(model, ("serving", beam_width, settings), lambda: PhonemeServing(
            model, assets["phones"], assets["sample_rate"], beam_width, lm=lm))

    # -- use ------------------------------------------------------------------

    def evaluate(self, model, config, data_root, assets, path=None, final=False, figure=None):
        from lstm_core.edit_distance import error_rate

        self._check_rate(config, assets)
        what = str(path) if path is not None else "dev data"
        utterances = self.utterances(config, "dev", path, data_root)
        waveforms, kept, skipped = self.audio(config, utterances, what)
        if not kept:
            raise UserError(f"{what}: every audio file was bad")
        beam = config["decode"]["beam_width"] if final else 1
        hypotheses = self.serving(model, config, assets, beam).transcribe(waveforms)
        references = [u.phonemes for u in kept]
        folding = self.score_map(config)
        if folding is not None:
            references, hypotheses = ([audio_data.fold(p, folding) for p in side]
                                      for side in (references, hypotheses))
        rate = error_rate(references, hypotheses)
        decoding = f"beam {beam}" if beam > 1 else "greedy"
        if figure is not None:
            from apps.phonemes.plots import draw_utterances

            draw_utterances(figure, model, assets["phones"], [u.path.name for u in kept],
                            waveforms, references, hypotheses, decoding)
        report = (f"PER {rate.rate:.2f}% on {len(kept)} utterances ({decoding}): "
                  f"{rate.substitutions} substitutions, {rate.deletions} deletions, "
                  f"{rate.insertions} insertions in {rate.reference_length} phonemes")
        if skipped:
            report += f"; {len(skipped)} bad audio file(s) skipped"
        return {"per": float(rate.rate), "substitutions": int(rate.substitutions),
                "deletions": int(rate.deletions), "insertions": int(rate.insertions),
                "reference_length": int(rate.reference_length), "skipped": len(skipped),
                "report": report}

    def predict(self, model, config, assets, input_path, output_path=None):
        """``path<TAB>phonemes`` lines, or JSON lines with phoneme times when
        ``output_path`` ends in ``.jsonl``/``.json``, for an audio file, a
        folder of them or a manifest."""
        utterances = audio_data.audio_inputs(input_path)
        waveforms, kept, _ = self.audio(config, utterances, str(input_path))
        serving = self.serving(model, config, assets, config["decode"]["beam_width"])
        transcribed = serving.transcribe(waveforms)
        if output_path is not None and Path(output_path).suffix.lower() in (".jsonl", ".json"):
            # JSON lines: the phonemes (as text output) and the greedy path's phoneme times.
            lines = [json.dumps({"path": str(u.path), "phonemes": " ".join(phones),
                                 "alignment": aligned}, ensure_ascii=False) + "\n"
                     for u, phones, aligned in zip(kept, transcribed, serving.align(waveforms))]
        else:
            lines = [f"{u.path}\t{' '.join(phones)}\n" for u, phones in zip(kept, transcribed)]
        if output_path is None:
            sys.stdout.write("".join(lines))
        else:
            Path(output_path).write_text("".join(lines), encoding="utf-8")

    def ensemble(self, models):
        from apps.phonemes.model import PhonemeEnsemble

        return PhonemeEnsemble(models)

    def serving_module(self, model, config, assets):
        return self.serving(model, config, assets, config["decode"]["beam_width"])

    def serving_example(self, assets):
        # Two synthetic rows of different lengths: the shorter one padded.
        rate = assets["sample_rate"]
        rng = np.random.default_rng(0)
        rows = []
        for seconds, pitch in ((0.4, 220.0), (0.25, 330.0)):
            t = np.arange(int(seconds * rate)) / rate
            rows.append((0.3 * np.sin(2 * np.pi * pitch * t)
                         + 0.01 * rng.normal(size=t.size)).astype("float32"))
        waveform, lengths = audio_data.pad_batch(rows)
        return {"waveform": waveform, "lengths": lengths}


def _pattern(key, expression):
    """The compiled regular expression of a recipe key, or None."""
    if expression is None:
        return None
    try:
        return re.compile(expression)
    except re.error as error:
        raise RecipeError(f"{key}: {expression!r} is not a regular expression ({error})") from None


def feature_settings(model, sample_rate):
    """:class:`lstm_core.audio.AudioFeatures` arguments of ``model.features``."""
    features = dict(model["features"])
    return {"kind": features.pop("type"), **features, "sample_rate": sample_rate}
