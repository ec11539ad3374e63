"""The phonemes app: what the core calls to read audio and transcriptions,
build, score, use and export the CTC phoneme recognizer. Registered as
``phonemes`` in ``pyproject.toml``."""

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from apps.phonemes import data as audio_data
from lstm_core.apps import App, model_cache
from lstm_core.errors import UserError
from lstm_core.recipes import Field
from lstm_core.schema import check_rnn_options, encoder_schema

OPTIONAL_PATH = (str, type(None))
OPTIONAL_STR = (str, type(None))


class PhonemeApp(App):
    name = "phonemes"
    metric = "per"
    metric_mode = "min"
    data_schema = {
        "train_manifest": Field(OPTIONAL_PATH, None, data_file=True,
                                doc="TSV/CSV manifest: path (relative to it), phonemes, optional "
                                    "split and speaker columns"),
        "dev_manifest": Field(OPTIONAL_PATH, None, data_file=True,
                              doc="manifest of the dev utterances (default: train_manifest)"),
        "train_split": Field(OPTIONAL_STR, None, doc="train on rows whose split column is this"),
        "dev_split": Field(OPTIONAL_STR, None, doc="score dev on rows whose split column is this"),
        "dev_speakers": Field(list, [], items=str,
                              doc="dev = these speakers (left out of training when the "
                                  "manifests are one file)"),
        "sample_rate": Field(int, 16000, min=1, doc="audio is resampled to this rate (Hz)"),
        "bad_audio": Field(str, "fail", choices=list(audio_data.BAD_AUDIO),
                           doc="an unreadable or empty audio file: fail, or skip it (counted "
                               "and reported)"),
    }
    model_schema = {
        "features": {
            "n_mels": Field(int, 40, min=1, doc="mel filterbank channels"),
            "window_ms": Field(float, 25.0, min=1, doc="analysis window"),
            "hop_ms": Field(float, 10.0, min=1, doc="frame step"),
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
        "stack": Field(int, 3, min=1, doc="frames stacked into one recurrent step"),
        "encoder": encoder_schema(units=128, num_layers=2, cell_options={"cell_clip": 3.0}),
        "seed": Field(int, 1, doc="seeds SpecAugment's masks"),
    }
    decode_schema = {
        "beam_width": Field(int, 8, min=1,
                            doc="CTC beam of final scores, predict and export (1: greedy)"),
    }

    def __init__(self):
        self._audio = {}  # (paths, sample rate) -> waveforms, kept, skipped: one read per process

    # -- data -----------------------------------------------------------------

    def utterances(self, config, split, path=None):
        """The manifest rows of ``split`` (train/dev), or all rows of ``path``."""
        data = config["data"]
        if path is not None:
            return audio_data.read_manifest(path)
        train = data["train_manifest"]
        if train is None:
            raise UserError("data.train_manifest is not set")
        manifest = data["dev_manifest"] or train if split == "dev" else train
        rows = audio_data.read_manifest(manifest)
        speakers = set(data["dev_speakers"])
        if split == "dev":
            chosen = audio_data.select(rows, manifest, data["dev_split"], speakers)
        else:
            shared = Path(data["dev_manifest"] or train).resolve() == Path(train).resolve()
            chosen = audio_data.select(rows, manifest, data["train_split"],
                                       exclude_speakers=speakers if shared else None)
        if not chosen:
            raise UserError(f"{manifest}: no {split} utterances (check data.{split}_split "
                            f"and data.dev_speakers)")
        return chosen

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
        phones = sorted({p for u in self.utterances(config, "train") for p in u.phonemes})
        if not phones:
            raise UserError("the training transcriptions have no phonemes")
        return {"phones": phones, "sample_rate": config["data"]["sample_rate"]}

    def build_data(self, config, data_root, assets):
        return (self.dataset("train", config, assets, shuffle=True),
                self.dataset("dev", config, assets, shuffle=False))

    def dataset(self, split, config, assets, shuffle):
        from lstm_core.data import make_dataset

        self._check_rate(config, assets)
        waveforms, kept, _ = self.audio(config, self.utterances(config, split), f"{split} data")
        if not kept:
            raise UserError(f"{split} data: every audio file was bad")
        ids = {phone: index for index, phone in enumerate(assets["phones"], start=1)}
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
        augment = {k: v for k, v in model["spec_augment"].items() if k != "enabled"}
        recognizer = PhonemeRecognizer(
            num_classes=len(assets["phones"]) + 1,
            features={**model["features"], "sample_rate": assets["sample_rate"]},
            spec_augment={**augment, "seed": model["seed"]} if model["spec_augment"]["enabled"]
            else None,
            stack=model["stack"], encoder=encoder)
        recognizer({"waveform": tf.zeros([1, 800]), "lengths": tf.constant([800])})  # build
        return recognizer

    def serving(self, model, assets, beam_width):
        """The model's serving module for ``beam_width``, made once per model
        and width (a new one would trace its graph again at every dev pass)."""
        from apps.phonemes.serving import PhonemeServing

        return model_cache(model, ("serving", beam_width), lambda: PhonemeServing(
            model, assets["phones"], assets["sample_rate"], beam_width))

    # -- use ------------------------------------------------------------------

    def evaluate(self, model, config, data_root, assets, path=None, final=False, figure=None):
        from lstm_core.edit_distance import error_rate

        self._check_rate(config, assets)
        what = str(path) if path is not None else "dev data"
        waveforms, kept, skipped = self.audio(config, self.utterances(config, "dev", path), what)
        if not kept:
            raise UserError(f"{what}: every audio file was bad")
        beam = config["decode"]["beam_width"] if final else 1
        hypotheses = self.serving(model, assets, beam).transcribe(waveforms)
        references = [u.phonemes for u in kept]
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
        serving = self.serving(model, assets, config["decode"]["beam_width"])
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

    def serving_module(self, model, config, assets):
        return self.serving(model, assets, config["decode"]["beam_width"])

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
