"""The phoneme recognizer: log-mels -> normalisation -> SpecAugment ->
frame stacking -> stacked bidirectional LSTMs -> phoneme scores, with the
CTC loss. The features are layers of the model, so training, evaluation and
the exported SavedModel run the same code."""

import keras
import tensorflow as tf
from keras import ops

from lstm_core.audio import FrameStack, LogMel, Normalize, SpecAugment
from lstm_core.ctc import ctc_loss
from lstm_core.distribute import replica_loss
from lstm_core.layers import RNNStack


@keras.saving.register_keras_serializable(package="apps.phonemes")
class PhonemeRecognizer(keras.Model):
    """CTC scores ``[batch, steps, num_classes]`` (class 0 the blank) from
    ``{"waveform": [batch, samples], "lengths": [batch]}``.

    ``features``: :class:`lstm_core.audio.LogMel` arguments (``sample_rate``
    included); ``spec_augment``: :class:`~lstm_core.audio.SpecAugment`
    arguments or None; ``stack``: frames stacked into one recurrent step;
    ``encoder``: :class:`lstm_core.RNNStack` arguments.
    """

    def __init__(self, num_classes, features=None, spec_augment=None, stack=3, encoder=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(num_classes=num_classes, features=dict(features or {}),
                             spec_augment=None if spec_augment is None else dict(spec_augment),
                             stack=stack, encoder=dict(encoder or {}))
        self.log_mel = LogMel(**self.settings["features"], name="log_mel")
        self.normalize = Normalize(name="normalize")
        self.spec_augment = (None if spec_augment is None
                             else SpecAugment(**spec_augment, name="spec_augment"))
        self.frame_stack = FrameStack(stack, name="frame_stack")
        self.encoder = RNNStack(**self.settings["encoder"], name="encoder")
        self.classifier = keras.layers.Dense(num_classes, dtype="float32", name="classifier")

    def output_lengths(self, lengths):
        """Scored steps of rows of ``lengths`` samples."""
        frames = self.log_mel.frame_lengths(lengths)
        stack = self.frame_stack.stack
        return (frames + stack - 1) // stack

    def call(self, inputs, training=False):
        features, lengths = self.log_mel(inputs["waveform"], inputs["lengths"])
        features, lengths = self.normalize(features, lengths)
        if self.spec_augment is not None:
            features, lengths = self.spec_augment(features, lengths, training=training)
        features, lengths = self.frame_stack(features, lengths)
        mask = tf.sequence_mask(lengths, tf.shape(features)[1])
        hidden = self.encoder(features, mask=mask, training=training)
        return self.classifier(hidden)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Targets are phoneme ids >= 1 padded with 0 (the blank is never a target).
        label_lengths = ops.sum(ops.cast(y > 0, "int32"), axis=1)
        per_example = ctc_loss(y, y_pred, label_lengths, self.output_lengths(x["lengths"]))
        return replica_loss(ops.sum(per_example), ops.shape(per_example)[0],
                            ops.sum(self.losses) if self.losses else None)

    def get_config(self):
        return {**super().get_config(), **self.settings}
