"""The phoneme recognizer: (trimming, speed and noise augmentation) ->
log-mels (of a frequency-warped spectrum in training) or MFCCs (with
deltas) -> normalisation -> SpecAugment -> frame stacking or a strided
convolution -> stacked bidirectional LSTMs -> phoneme scores, with the CTC
loss. The features are layers of the model, so training, evaluation and
the exported SavedModel run the same code."""

import keras
import tensorflow as tf
from keras import ops
from keras.src.backend.common.masking import get_keras_mask, set_keras_mask

from lstm_core.audio import (
    AddNoise, AudioFeatures, ConvSubsample, FrameStack, Normalize, RandomTrim, SpecAugment,
    SpeedPerturb)
from lstm_core.ctc import ctc_loss
from lstm_core.errors import UserError
from lstm_core.distribute import replica_loss
from lstm_core.layers import RNNStack

NORMALIZATIONS = ("utterance", "global", None)
SUBSAMPLERS = {"stack": lambda factor, **_: FrameStack(factor, name="subsample"),
               "conv": lambda **options: ConvSubsample(**options, name="subsample")}


@keras.saving.register_keras_serializable(package="apps.phonemes")
class PhonemeRecognizer(keras.Model):
    """CTC scores ``[batch, steps, num_classes]`` (class 0 the blank) from
    ``{"waveform": [batch, samples], "lengths": [batch]}``; the scores carry
    a Keras mask of each row's steps.

    ``features``: :class:`lstm_core.audio.AudioFeatures` arguments
    (``sample_rate`` included, and ``warp`` for vocal tract length
    perturbation in training); ``normalize``: ``"utterance"`` (each
    utterance's own mean and variance), ``"global"`` (``statistics``, a dict
    of ``mean`` and ``std`` lists computed on the training data, kept as
    weights) or None; ``trim``, ``speed``, ``noise``, ``spec_augment``:
    :class:`~lstm_core.audio.RandomTrim`, :class:`~lstm_core.audio.SpeedPerturb`,
    :class:`~lstm_core.audio.AddNoise` and :class:`~lstm_core.audio.SpecAugment`
    arguments, or None (training only); ``subsample``: ``{"type": "stack" |
    "conv", "factor": ...}`` plus :class:`~lstm_core.audio.ConvSubsample`
    arguments for ``conv``; ``encoder``: :class:`lstm_core.RNNStack`
    arguments.
    """

    def __init__(self, num_classes, features=None, normalize="utterance", statistics=None,
                 trim=None, speed=None, noise=None, spec_augment=None, subsample=None,
                 encoder=None, **kwargs):
        super().__init__(**kwargs)
        subsample = dict(subsample or {"type": "stack", "factor": 3})
        if normalize not in NORMALIZATIONS:
            raise UserError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if (normalize == "global") != (statistics is not None):
            raise UserError("feature statistics go with normalize='global', which needs them")
        if subsample.get("type") not in SUBSAMPLERS:
            raise UserError(f"subsample type must be one of {', '.join(SUBSAMPLERS)}, "
                            f"got {subsample.get('type')!r}")
        optional = {"trim": trim, "speed": speed, "noise": noise, "spec_augment": spec_augment}
        self.settings = dict(num_classes=num_classes, features=dict(features or {}),
                             normalize=normalize, statistics=statistics,
                             **{k: None if v is None else dict(v) for k, v in optional.items()},
                             subsample=subsample, encoder=dict(encoder or {}))
        self.trim = None if trim is None else RandomTrim(**trim, name="trim")
        self.speed = None if speed is None else SpeedPerturb(**speed, name="speed")
        self.noise = None if noise is None else AddNoise(**noise, name="noise")
        self.audio_features = AudioFeatures(**self.settings["features"], name="features")
        self.normalize = (None if normalize is None else
                          Normalize(**(statistics or {}), name="normalize"))
        self.spec_augment = (None if spec_augment is None
                             else SpecAugment(**spec_augment, name="spec_augment"))
        self.subsample = SUBSAMPLERS[subsample["type"]](
            **{k: v for k, v in subsample.items() if k != "type"})
        self.encoder = RNNStack(**self.settings["encoder"], name="encoder")
        self.classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier")

    @property
    def log_mel(self):
        """The :class:`~lstm_core.audio.LogMel` layer the features start from."""
        return self.audio_features.log_mel

    @property
    def step_seconds(self):
        """Audio seconds per scored step."""
        log_mel = self.log_mel
        return self.settings["subsample"]["factor"] * log_mel.hop_length / log_mel.sample_rate

    def output_lengths(self, lengths):
        """Scored steps of rows of ``lengths`` samples, as in inference
        (speed perturbation changes them in training: the loss reads the
        scores' mask)."""
        return self.subsample.output_lengths(self.audio_features.frame_lengths(lengths))

    def call(self, inputs, training=False):
        waveform, lengths = inputs["waveform"], inputs["lengths"]
        for augment in (self.trim, self.speed, self.noise):
            if augment is not None:
                waveform, lengths = augment(waveform, lengths, training=training)
        features, lengths = self.audio_features(waveform, lengths, training=training)
        if self.normalize is not None:
            features, lengths = self.normalize(features, lengths)
        if self.spec_augment is not None:
            features, lengths = self.spec_augment(features, lengths, training=training)
        features, lengths = self.subsample(features, lengths)
        mask = tf.sequence_mask(lengths, tf.shape(features)[1])
        scores = self.classifier(self.encoder(features, mask=mask, training=training))
        # Only the forward pass knows the steps of a speed-perturbed row: the
        # scores carry them to compute_loss as Keras carries any mask.
        set_keras_mask(scores, mask)
        return scores

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Targets are phoneme ids >= 1 padded with 0 (the blank is never a target).
        label_lengths = ops.sum(ops.cast(y > 0, "int32"), axis=1)
        mask = get_keras_mask(y_pred)
        if mask is None:
            raise ValueError("PhonemeRecognizer.compute_loss needs the scores of its own call "
                             "(they carry the steps of each row as a Keras mask)")
        steps = ops.sum(ops.cast(mask, "int32"), axis=1)
        per_example = ctc_loss(y, y_pred, label_lengths, steps)
        return replica_loss(ops.sum(per_example), ops.shape(per_example)[0],
                            ops.sum(self.losses) if self.losses else None)

    def get_config(self):
        return {**super().get_config(), **self.settings}


class PhonemeEnsemble(tf.Module):
    """Recognizers of one phone set (seeds or variants of one recipe),
    decoded as one by :func:`lstm_core.ctc.ctc_ensemble_beam_search`: each
    scores the audio itself, and the labellings their beams found are ranked
    by the members' mean log-likelihood."""

    def __init__(self, members):
        super().__init__()
        self.members = list(members)
