"""Audio front end as Keras layers: trimming, speed and noise augmentation
of the waveform, log-mel features, MFCCs and their deltas, normalisation
(with :func:`feature_statistics` for global statistics), SpecAugment, and
frame stacking or strided convolution to cut the time steps.

Every layer is TensorFlow ops only, so training and the exported SavedModel
run the same feature code (no train/serve skew), and every layer takes
``lengths`` next to its zero-padded batch and returns the new lengths, so a
row's valid output never depends on how much padding its batch has.

:class:`LogMel` follows ``librosa.feature.melspectrogram`` (librosa's
defaults: ``center=True`` with constant padding, a periodic Hann window
centred in ``n_fft``, Slaney mel scale and Slaney area normalisation); the
mel matrix is built in NumPy from librosa's formula at construction, so
neither training nor serving needs librosa.

All the layers run inside ``tf.function(jit_compile=True)`` (XLA has the
FFT, framing and gather they need); the random layers (:class:`SpecAugment`,
:class:`RandomTrim`, :class:`SpeedPerturb`, :class:`AddNoise`) under XLA
draw other values than without it for the same seed (XLA's own RNG stream).
"""

import inspect
import math

import keras
import numpy as np
import tensorflow as tf

from lstm_core.errors import UserError

PAD_MODES = ("constant", "reflect")


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"audio: {name} must be a positive integer, got {value!r}")
    return int(value)


def _hz_to_mel(freqs, htk):
    """librosa.hz_to_mel: HTK's 2595 log10(1 + f/700), or Slaney's scale,
    linear below 1 kHz and logarithmic above."""
    freqs = np.atleast_1d(np.asarray(freqs, dtype=np.float64))
    if htk:
        return 2595.0 * np.log10(1.0 + freqs / 700.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    mels = freqs / f_sp
    high = freqs >= min_log_hz
    mels[high] = min_log_mel + np.log(freqs[high] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels, htk):
    mels = np.atleast_1d(np.asarray(mels, dtype=np.float64))
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    freqs = f_sp * mels
    high = mels >= min_log_mel
    freqs[high] = min_log_hz * np.exp(logstep * (mels[high] - min_log_mel))
    return freqs


def mel_matrix(sample_rate, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney"):
    """The ``[n_fft // 2 + 1, n_mels]`` filterbank of ``librosa.filters.mel``
    (transposed, float32): triangles between mel-spaced edges, each scaled to
    unit area when ``norm="slaney"``."""
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    low, high = _hz_to_mel([fmin, fmax], htk)
    edges = _mel_to_hz(np.linspace(low, high, n_mels + 2), htk)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.T.astype(np.float32)


def hann_window(win_length, n_fft):
    """librosa's default window: periodic Hann of ``win_length`` samples,
    zero-padded to ``n_fft`` with the window in the middle."""
    n = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left)).astype(np.float32)


def _valid_mask(lengths, steps, dtype=tf.float32):
    """``[batch, steps]``: 1 where the step is inside its row's length."""
    return tf.sequence_mask(lengths, steps, dtype=dtype)


def _full_lengths(values):
    shape = tf.shape(values)
    return tf.fill(shape[:1], shape[1])


def _interpolate(values, below, fraction, last, axis=1):
    """Each row of ``values`` read along ``axis`` at ``below + fraction``
    (``below``: ``[batch, n]`` int indices; ``fraction`` broadcast against
    the result), linearly between index ``below`` and ``below + 1`` (at most
    ``last``)."""
    left = tf.gather(values, below, axis=axis, batch_dims=1)
    right = tf.gather(values, tf.minimum(below + 1, last), axis=axis, batch_dims=1)
    return left + fraction * (right - left)


@keras.saving.register_keras_serializable(package="lstm_core")
class LogMel(keras.layers.Layer):
    """Waveforms to log-mel filterbank features.

    ``call(waveform, lengths=None)`` takes ``waveform`` ``[batch, samples]``
    (zero-padded; samples past a row's length are ignored) and ``lengths``
    ``[batch]`` ints (default: every row full), and returns ``(features,
    frame_lengths)``: ``features`` ``[batch, frames, n_mels]`` =
    ``log(mel_power + log_offset)`` with zeros on the frames past each row's
    ``frame_lengths``.

    A row of ``L`` samples has ``1 + L // hop_length`` frames when ``center``
    (the signal is padded by ``n_fft // 2`` at each end, as librosa does) and
    ``max(0, 1 + (L - n_fft) // hop_length)`` otherwise. The layer computes in
    float32 unless given another ``dtype``. Centre padding is done
    per row from its length: with ``pad_mode="reflect"`` a short row inside
    a long batch reflects its own samples, not the batch's zero padding
    (rows shorter than ``n_fft // 2 + 1`` samples are reflected once and then
    clamped, where NumPy would reflect again).

    Sizes in samples (``n_fft``, ``win_length``, ``hop_length``) or in
    milliseconds (``window_ms``, ``hop_ms``; ``n_fft`` then defaults to the
    next power of two of the window). ``fmax`` defaults to
    ``sample_rate / 2``; ``htk`` and ``norm`` (``"slaney"`` or ``None``) choose
    the mel scale and filter normalisation as in ``librosa.filters.mel``.
    ``warp``: :class:`FrequencyWarp` arguments, to stretch the spectrum
    before the mel filters when ``call(..., training=True)`` (None: never).
    """

    def __init__(
        self,
        sample_rate=16000,
        n_fft=None,
        win_length=None,
        hop_length=None,
        window_ms=25.0,
        hop_ms=10.0,
        n_mels=80,
        fmin=0.0,
        fmax=None,
        power=2.0,
        log_offset=1e-6,
        center=True,
        pad_mode="constant",
        htk=False,
        norm="slaney",
        warp=None,
        **kwargs,
    ):
        # Features are float32 even under a mixed policy: float16 would round the waveform.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.sample_rate = _positive_int("sample_rate", sample_rate)
        if win_length is None:
            win_length = n_fft if n_fft is not None else round(window_ms * sample_rate / 1000)
        self.win_length = _positive_int("win_length", win_length)
        if n_fft is None:
            n_fft = 1 << (self.win_length - 1).bit_length()
        self.n_fft = _positive_int("n_fft", n_fft)
        if hop_length is None:
            hop_length = round(hop_ms * sample_rate / 1000)
        self.hop_length = _positive_int("hop_length", hop_length)
        self.n_mels = _positive_int("n_mels", n_mels)
        if self.win_length > self.n_fft:
            raise UserError(
                f"audio: win_length {self.win_length} is longer than n_fft {self.n_fft}"
            )
        self.fmin = float(fmin)
        self.fmax = float(sample_rate / 2 if fmax is None else fmax)
        if not 0 <= self.fmin < self.fmax <= sample_rate / 2:
            raise UserError(
                f"audio: need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}"
            )
        if pad_mode not in PAD_MODES:
            raise UserError(f"audio: pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if norm not in ("slaney", None):
            raise UserError(f"audio: norm must be 'slaney' or None, got {norm!r}")
        self.power = float(power)
        self.log_offset = float(log_offset)
        self.center = bool(center)
        self.pad_mode = pad_mode
        self.htk = bool(htk)
        self.norm = norm
        # Built from the config, so kept as constants rather than weights.
        self._window = hann_window(self.win_length, self.n_fft)
        self._mel = mel_matrix(
            self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax, self.htk, self.norm
        )
        self.warp_options = None if warp is None else dict(warp)
        self.warp = None if warp is None else FrequencyWarp(**warp, name="warp")

    def frame_lengths(self, lengths):
        """Frames of rows of ``lengths`` samples (a row's own length only)."""
        lengths = tf.cast(lengths, tf.int32)
        if self.center:
            return 1 + lengths // self.hop_length
        return tf.maximum(0, 1 + (lengths - self.n_fft) // self.hop_length)

    def _centre_pad(self, waveform, lengths):
        half = self.n_fft // 2
        if self.pad_mode == "constant":
            return tf.pad(waveform, [[0, 0], [half, half]])
        # Reflect about each row's own ends: index i < 0 reads -i, i >= L reads 2(L-1) - i.
        positions = tf.range(tf.shape(waveform)[1] + 2 * half) - half
        last = tf.maximum(lengths - 1, 0)[:, None]
        index = tf.abs(positions)[None, :]
        index = tf.where(index > last, 2 * last - index, index)
        index = tf.clip_by_value(index, 0, tf.maximum(tf.shape(waveform)[1] - 1, 0))
        return tf.gather(waveform, index, batch_dims=1)

    def call(self, waveform, lengths=None, training=None):
        waveform = tf.cast(waveform, tf.float32)
        lengths = _full_lengths(waveform) if lengths is None else tf.cast(lengths, tf.int32)
        # Whatever lies past a row's length must not leak into its frames.
        waveform = waveform * _valid_mask(lengths, tf.shape(waveform)[1])
        if self.center:
            waveform = self._centre_pad(waveform, lengths)
        frames = tf.signal.frame(waveform, self.n_fft, self.hop_length)
        spectrum = tf.abs(tf.signal.rfft(frames * self._window))
        if self.power != 1.0:
            spectrum = spectrum**self.power
        if self.warp is not None:
            spectrum = self.warp(spectrum, training=training)
        mel = tf.tensordot(spectrum, self._mel, axes=1)
        frame_lengths = self.frame_lengths(lengths)
        mask = _valid_mask(frame_lengths, tf.shape(mel)[1])[:, :, None]
        return tf.math.log(mel + self.log_offset) * mask, frame_lengths

    def compute_output_spec(self, waveform, lengths=None):
        frames = None
        if waveform.shape[1] is not None:
            padded = waveform.shape[1] + (2 * (self.n_fft // 2) if self.center else 0)
            frames = max(0, 1 + (padded - self.n_fft) // self.hop_length)
        return (
            keras.KerasTensor((waveform.shape[0], frames, self.n_mels), dtype="float32"),
            keras.KerasTensor((waveform.shape[0],), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
            power=self.power,
            log_offset=self.log_offset,
            center=self.center,
            pad_mode=self.pad_mode,
            htk=self.htk,
            norm=self.norm,
            warp=self.warp_options,
        )
        return config


@keras.saving.register_keras_serializable(package="lstm_core")
class Mfcc(keras.layers.Layer):
    """MFCCs from log-mel features: the first ``n_mfcc`` coefficients of the
    orthonormal DCT-II over the mel axis (``librosa.feature.mfcc(S=log_mel)``
    with its defaults; ``tf.signal.mfccs_from_log_mel_spectrograms`` scales
    coefficient 0 differently). ``call(log_mel, lengths=None)`` returns
    ``(mfcc, lengths)``, zeros past each row's length."""

    def __init__(self, n_mfcc=13, **kwargs):
        kwargs.setdefault("dtype", "float32")  # as LogMel: statistics in float32
        super().__init__(**kwargs)
        self.n_mfcc = _positive_int("n_mfcc", n_mfcc)

    def call(self, log_mel, lengths=None):
        log_mel = tf.cast(log_mel, tf.float32)
        lengths = _full_lengths(log_mel) if lengths is None else tf.cast(lengths, tf.int32)
        if log_mel.shape[-1] is not None and log_mel.shape[-1] < self.n_mfcc:
            raise UserError(
                f"audio: n_mfcc {self.n_mfcc} is more than the {log_mel.shape[-1]} mel bands"
            )
        mfcc = tf.signal.dct(log_mel, type=2, norm="ortho")[..., : self.n_mfcc]
        valid = tf.sequence_mask(lengths, tf.shape(mfcc)[1])[:, :, None]
        return tf.where(valid, mfcc, 0.0), lengths

    def compute_output_spec(self, log_mel, lengths=None):
        return (
            keras.KerasTensor(log_mel.shape[:-1] + (self.n_mfcc,), dtype="float32"),
            keras.KerasTensor((log_mel.shape[0],), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config["n_mfcc"] = self.n_mfcc
        return config


def delta_filters(order, width):
    """``[order, width]``: row ``n - 1`` gives the ``n``-th time derivative
    of the degree-``n`` least-squares polynomial through ``width`` frames
    (``librosa.feature.delta``'s Savitzky-Golay filter; that derivative is
    the same at every point of the window, so edge frames use the window
    at the edge, as its ``mode="interp"`` does)."""
    positions = np.arange(width, dtype=np.float64)
    filters = []
    for n in range(1, order + 1):
        vandermonde = positions[:, None] ** np.arange(n + 1)[None, :]
        filters.append(math.factorial(n) * np.linalg.pinv(vandermonde)[n])
    return np.stack(filters).astype(np.float32)


@keras.saving.register_keras_serializable(package="lstm_core")
class Deltas(keras.layers.Layer):
    """Features followed by their time derivatives up to ``order``:
    ``[b, t, f] -> [b, t, (order + 1) * f]`` as ``[x, delta_1, ...,
    delta_order]``, each as ``librosa.feature.delta(x, width=width,
    order=n)`` (the default ``mode="interp"``) of the row's valid frames
    alone. ``call(features, lengths=None)`` returns ``(features, lengths)``,
    zeros past each row's length.

    A row shorter than ``width`` frames (librosa refuses those) fits its one
    window with its last frame repeated.
    """

    def __init__(self, order=2, width=9, **kwargs):
        kwargs.setdefault("dtype", "float32")  # as LogMel: statistics in float32
        super().__init__(**kwargs)
        self.order = _positive_int("order", order)
        self.width = _positive_int("width", width)
        if self.width < 3 or self.width % 2 == 0 or self.width <= self.order:
            raise UserError(f"audio: delta width must be odd, >= 3 and more than the order "
                            f"{self.order}, got {width!r}")
        self._filters = delta_filters(self.order, self.width)

    def call(self, features, lengths=None):
        features = tf.cast(features, tf.float32)
        lengths = _full_lengths(features) if lengths is None else tf.cast(lengths, tf.int32)
        shape = tf.shape(features)
        # Frame t reads the window of `width` frames centred on it, moved
        # inside the row at its ends (clamped to the last frame when shorter).
        last = tf.maximum(lengths - 1, 0)[:, None, None]
        start = tf.range(shape[1])[None, :] - self.width // 2
        start = tf.maximum(tf.minimum(start, tf.maximum(lengths - self.width, 0)[:, None]), 0)
        index = tf.minimum(start[:, :, None] + tf.range(self.width)[None, None, :], last)
        windows = tf.gather(features, index, batch_dims=1)  # [b, t, width, f]
        deltas = tf.einsum("btwf,nw->btnf", windows, self._filters)
        deltas = tf.reshape(deltas, [shape[0], shape[1], self.order * features.shape[-1]])
        valid = tf.sequence_mask(lengths, shape[1])[:, :, None]
        return tf.where(valid, tf.concat([features, deltas], axis=-1), 0.0), lengths

    def compute_output_spec(self, features, lengths=None):
        return (
            keras.KerasTensor(
                features.shape[:-1] + ((self.order + 1) * features.shape[-1],), dtype="float32"
            ),
            keras.KerasTensor((features.shape[0],), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(order=self.order, width=self.width)
        return config


FEATURE_KINDS = ("log_mel", "mfcc")
LOG_MEL_OPTIONS = frozenset(inspect.signature(LogMel.__init__).parameters) - {"self", "kwargs"}


@keras.saving.register_keras_serializable(package="lstm_core")
class AudioFeatures(keras.layers.Layer):
    """Waveforms to the features an audio model reads: :class:`LogMel`, or
    its :class:`Mfcc` when ``kind="mfcc"``, then :class:`Deltas` of order
    ``deltas`` (0: none). ``call(waveform, lengths=None)`` returns
    ``(features [batch, frames, feature_size], frame_lengths)``; the other
    keyword arguments are :class:`LogMel`'s. One layer, so that a model and
    the code computing its global statistics (:func:`feature_statistics`)
    cannot disagree on what the features are.
    """

    def __init__(self, kind="log_mel", n_mfcc=13, deltas=0, delta_width=9, **kwargs):
        log_mel_options = {k: kwargs.pop(k) for k in list(kwargs) if k in LOG_MEL_OPTIONS}
        kwargs.setdefault("dtype", "float32")  # as LogMel: features in float32
        super().__init__(**kwargs)
        if kind not in FEATURE_KINDS:
            raise UserError(f"audio: feature kind must be one of {FEATURE_KINDS}, got {kind!r}")
        if isinstance(deltas, bool) or not isinstance(deltas, (int, np.integer)) or deltas < 0:
            raise UserError(f"audio: deltas must be an integer >= 0, got {deltas!r}")
        self.kind, self.n_mfcc, self.delta_width = kind, n_mfcc, delta_width
        self.deltas = int(deltas)
        self.log_mel_options = dict(log_mel_options)
        self.log_mel = LogMel(**self.log_mel_options, name="log_mel")
        self.mfcc = Mfcc(n_mfcc, name="mfcc") if kind == "mfcc" else None
        if self.mfcc is not None and n_mfcc > self.log_mel.n_mels:
            raise UserError(f"audio: n_mfcc {n_mfcc} is more than the {self.log_mel.n_mels} "
                            f"mel bands")
        self.delta_layer = Deltas(self.deltas, delta_width, name="deltas") if deltas else None

    @property
    def feature_size(self):
        """Values per frame."""
        base = self.n_mfcc if self.mfcc is not None else self.log_mel.n_mels
        return base * (self.deltas + 1)

    def frame_lengths(self, lengths):
        """Frames of rows of ``lengths`` samples."""
        return self.log_mel.frame_lengths(lengths)

    def call(self, waveform, lengths=None, training=None):
        features, lengths = self.log_mel(waveform, lengths, training=training)
        for layer in (self.mfcc, self.delta_layer):
            if layer is not None:
                features, lengths = layer(features, lengths)
        return features, lengths

    def compute_output_spec(self, waveform, lengths=None):
        frames = self.log_mel.compute_output_spec(waveform, lengths)[0].shape[1]
        return (
            keras.KerasTensor((waveform.shape[0], frames, self.feature_size), dtype="float32"),
            keras.KerasTensor((waveform.shape[0],), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, n_mfcc=self.n_mfcc, deltas=self.deltas,
                      delta_width=self.delta_width, **self.log_mel_options)
        return config


def feature_statistics(features, waveforms, batch_size=32, std_floor=1e-3):
    """Global ``(mean, std)`` (float64 arrays of ``feature_size`` values) of
    the features a layer such as :class:`AudioFeatures` computes, over every
    valid frame of ``waveforms`` (1-D arrays): the statistics of
    ``Normalize(mean=..., std=...)``. Every frame counts once, whatever its
    utterance's length. ``std`` is at least ``std_floor``: a channel that
    never varies (a mel band above the audio's bandwidth) must not turn
    tiny differences into large inputs."""
    count, total, squares = 0, 0.0, 0.0
    order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))  # little padding
    for start in range(0, len(order), batch_size):
        rows = [np.asarray(waveforms[i], np.float32) for i in order[start:start + batch_size]]
        batch = np.zeros((len(rows), max(len(r) for r in rows)), np.float32)
        for row, wave in enumerate(rows):
            batch[row, :len(wave)] = wave
        values, lengths = features(batch, np.array([len(r) for r in rows], np.int32))
        valid = np.asarray(values, np.float64)[np.asarray(tf.sequence_mask(lengths))]
        count += len(valid)
        total = total + valid.sum(axis=0)
        squares = squares + np.square(valid).sum(axis=0)
    if not count:
        raise UserError("audio: no frames to compute feature statistics on")
    mean = total / count
    return mean, np.maximum(np.sqrt(np.maximum(squares / count - mean**2, 0.0)), std_floor)


def _masked_moments(features, lengths):
    """Mean and standard deviation over each row's valid frames: ``[batch, 1, f]``."""
    mask = _valid_mask(lengths, tf.shape(features)[1], features.dtype)[:, :, None]
    count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
    mean = tf.reduce_sum(features * mask, axis=1, keepdims=True) / count
    variance = tf.reduce_sum(tf.square(features - mean) * mask, axis=1, keepdims=True) / count
    return mean, tf.sqrt(variance)


@keras.saving.register_keras_serializable(package="lstm_core")
class Normalize(keras.layers.Layer):
    """Mean-variance normalisation of ``[batch, frames, features]``.

    ``call(features, lengths=None)`` returns ``(features, lengths)`` with the
    valid frames normalised and the padding zeroed. Without ``mean``/``std``
    each utterance uses the statistics of its own valid frames (padding never
    counts); with them (arrays of ``features`` values computed on the
    training data), every frame is ``(x - mean) / std``. Global statistics
    are kept as non-trainable weights and repeated in the config, so the
    layer rebuilds from its config alone. ``epsilon`` guards the division.
    """

    def __init__(self, mean=None, std=None, epsilon=1e-5, **kwargs):
        kwargs.setdefault("dtype", "float32")  # as LogMel: statistics in float32
        super().__init__(**kwargs)
        if (mean is None) != (std is None):
            raise UserError("audio: Normalize needs both mean and std, or neither")
        self.epsilon = float(epsilon)
        self._mean = self._std = None
        if mean is not None:
            mean = np.asarray(mean, dtype=np.float32).reshape(-1)
            std = np.asarray(std, dtype=np.float32).reshape(-1)
            if mean.shape != std.shape:
                raise UserError(
                    f"audio: Normalize mean has {mean.size} values and std {std.size}"
                )
            if np.any(std < 0) or not np.all(np.isfinite(std)) or not np.all(np.isfinite(mean)):
                raise UserError("audio: Normalize std must be finite and >= 0, mean finite")
            self._mean = self.add_weight(
                name="mean", shape=mean.shape, initializer=keras.initializers.Constant(mean),
                trainable=False,
            )
            self._std = self.add_weight(
                name="std", shape=std.shape, initializer=keras.initializers.Constant(std),
                trainable=False,
            )

    def call(self, features, lengths=None):
        features = tf.cast(features, tf.float32)
        lengths = _full_lengths(features) if lengths is None else tf.cast(lengths, tf.int32)
        if self._mean is None:
            mean, std = _masked_moments(features, lengths)
        else:
            mean, std = tf.convert_to_tensor(self._mean), tf.convert_to_tensor(self._std)
        valid = tf.sequence_mask(lengths, tf.shape(features)[1])[:, :, None]
        # where, not a product: a zero-variance row must not turn padding into NaN
        return tf.where(valid, (features - mean) / (std + self.epsilon), 0.0), lengths

    def compute_output_spec(self, features, lengths=None):
        return (
            keras.KerasTensor(features.shape, dtype="float32"),
            keras.KerasTensor((features.shape[0],), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config["epsilon"] = self.epsilon
        if self._mean is not None:
            config["mean"] = np.asarray(self._mean.numpy()).tolist()
            config["std"] = np.asarray(self._std.numpy()).tolist()
        return config


class _SeededAugmentation(keras.layers.Layer):
    """A layer that draws new random values at every training call from a
    stateless RNG keyed by ``seed`` and a step counter (a non-trainable
    weight, so a resumed run goes on drawing where it stopped): two layers
    with the same seed draw the same values, and a run is reproducible.
    ``seed=None`` picks one at random."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._seed = int(np.random.randint(2**31 - 1) if seed is None else seed)
        self._step = self.add_weight(
            name="step", shape=(), dtype="int64", initializer="zeros", trainable=False
        )

    def _next_key(self):
        """This call's ``[2]`` int64 RNG key; counts the call."""
        step = self._step.value if hasattr(self._step, "value") else self._step
        seed = tf.constant(self._seed, tf.int64)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # Each replica's share of a batch draws its own values (replica 0
            # those of one process): with one key, row i of every share would
            # be augmented alike.
            seed += tf.cast(replica.replica_id_in_sync_group, tf.int64) * 2**32
        key = tf.stack([seed, tf.convert_to_tensor(step)])
        self._step.assign_add(1)
        return key

    def _next_keys(self):
        """Two independent RNG keys for this call (see :meth:`_next_key`)."""
        return tf.unstack(
            tf.random.experimental.stateless_split(self._next_key(), 2, alg="philox")
        )

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config


def _per_row(rows, key, bounds, dtype=tf.float32):
    """One seeded draw per row, uniform in ``bounds`` = ``(min, max)``."""
    return tf.random.stateless_uniform([rows], key, minval=bounds[0], maxval=bounds[1],
                                       dtype=dtype, alg="philox")


def _range_of(name, values, low=None):
    """``(min, max)`` floats from a pair, ``min <= max``, both above ``low``."""
    try:
        first, second = (float(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"audio: {name} must be [min, max], got {values!r}") from None
    if first > second or (low is not None and first <= low):
        bound = f" and min > {low:g}" if low is not None else ""
        raise UserError(f"audio: {name} must be [min, max] with min <= max{bound}, got {values!r}")
    return first, second


class _WaveformAugmentation(_SeededAugmentation):
    """A seeded change of ``(waveform, lengths)`` in training (the subclass's
    ``augment``, given float32 waveforms and int32 lengths), the identity
    otherwise; waveforms stay float32 under any dtype policy."""

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(seed=seed, **kwargs)

    def call(self, waveform, lengths=None, training=None):
        waveform = tf.cast(waveform, tf.float32)
        lengths = _full_lengths(waveform) if lengths is None else tf.cast(lengths, tf.int32)
        if not training:
            return waveform, lengths
        return self.augment(waveform, lengths)

    def compute_output_spec(self, waveform, lengths=None, training=None):
        return (
            keras.KerasTensor(waveform.shape, dtype="float32"),
            keras.KerasTensor((waveform.shape[0],), dtype="int32"),
        )


@keras.saving.register_keras_serializable(package="lstm_core")
class SpeedPerturb(_WaveformAugmentation):
    """Speed perturbation of waveforms, in training only: each row is played
    at a rate drawn uniformly from ``rates`` (``[min, max]``; 1.1 is 10%
    faster: shorter and a tenth higher in pitch, as sox's ``speed`` effect
    and Kaldi's speed perturbation).

    ``call(waveform, lengths=None, training=None)`` returns ``(waveform,
    lengths)``: output sample ``i`` of a row of ``L`` samples at rate ``r``
    is the input linearly interpolated at ``i * r``, for the ``1 + (L - 1)
    // r`` samples that stay inside the row (zeros after them); a batch of
    ``T`` samples becomes ``1 + (T - 1) // min(rates)`` long. Linear
    interpolation has no anti-aliasing filter: a rate above 1 folds the
    energy above ``sample_rate / (2 r)`` back into the band (little, for
    speech). Not training, it is the identity. Rates are seeded (see
    :class:`_SeededAugmentation`).
    """

    def __init__(self, rates=(0.9, 1.1), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rates = _range_of("speed rates", rates, low=0.0)

    def output_lengths(self, lengths, rates):
        """Samples of rows of ``lengths`` samples played at ``rates`` (float64)."""
        lengths = tf.cast(lengths, tf.float64)
        played = tf.floor(tf.maximum(lengths - 1.0, 0.0) / rates) + 1.0
        return tf.cast(tf.where(lengths > 0, played, 0.0), tf.int32)

    def augment(self, waveform, lengths):
        shape = tf.shape(waveform)
        low, _ = self.rates
        rates = _per_row(shape[0], self._next_key(), self.rates, tf.float64)
        # Sizes follow from the static input size (XLA needs them constant).
        steps = self.output_lengths(shape[1:2], low)[0]
        new_lengths = tf.minimum(self.output_lengths(lengths, rates), steps)
        # Positions in float64: float32 would be off by a tenth of a sample
        # after a minute of audio.
        position = tf.cast(tf.range(steps), tf.float64)[None, :] * rates[:, None]
        below = tf.floor(position)
        fraction = tf.cast(position - below, tf.float32)
        last = tf.maximum(lengths - 1, 0)[:, None]
        below = tf.minimum(tf.cast(below, tf.int32), last)
        played = _interpolate(waveform, below, fraction, last)
        return played * _valid_mask(new_lengths, steps), new_lengths

    def compute_output_spec(self, waveform, lengths=None, training=None):
        return (
            keras.KerasTensor((waveform.shape[0], None), dtype="float32"),
            keras.KerasTensor((waveform.shape[0],), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config["rates"] = list(self.rates)
        return config


@keras.saving.register_keras_serializable(package="lstm_core")
class RandomTrim(_WaveformAugmentation):
    """Random trimming of waveforms, in training only: each row loses a share
    of its samples drawn uniformly from ``fractions`` (``[min, max]``, ``0 <=
    min <= max < 1``), the cut split between its start and its end at a
    uniform random point, and the rest moved to the front. The label stays
    whole, so the model learns to name a word from part of it: recordings of
    isolated words are trimmed differently by each speaker (one of the Free
    Spoken Digit Dataset's speakers cuts inside the word). Suited to words
    and short phrases, not to sentences, whose lost phonemes no fragment
    predicts.

    ``call(waveform, lengths=None, training=None)`` returns ``(waveform,
    lengths)``, as long as the input: no row is cut below ``min_samples``
    (CTC needs a step for each label) and a shorter row is left whole. Not
    training, it is the identity. Shares and split points are seeded (see
    :class:`_SeededAugmentation`).
    """

    def __init__(self, fractions=(0.0, 0.3), min_samples=0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.fractions = _range_of("trim fractions", fractions)
        if self.fractions[0] < 0 or self.fractions[1] >= 1:
            raise UserError(f"audio: trim fractions must be within [0, 1), got {fractions!r}")
        self.min_samples = _positive_int("min_samples", min_samples) if min_samples else 0

    def augment(self, waveform, lengths):
        shape = tf.shape(waveform)
        share_key, split_key = self._next_keys()
        share = _per_row(shape[0], share_key, self.fractions)
        split = _per_row(shape[0], split_key, (0.0, 1.0))
        length = tf.cast(lengths, tf.float32)
        spare = tf.maximum(length - float(self.min_samples), 0.0)
        cut = tf.minimum(tf.floor(share * length), spare)
        start = tf.cast(tf.floor(cut * split), tf.int32)
        new_lengths = lengths - tf.cast(cut, tf.int32)
        index = tf.minimum(tf.range(shape[1])[None, :] + start[:, None], shape[1] - 1)
        trimmed = tf.gather(waveform, index, axis=1, batch_dims=1)
        return trimmed * _valid_mask(new_lengths, shape[1]), new_lengths

    def get_config(self):
        config = super().get_config()
        config.update(fractions=list(self.fractions), min_samples=self.min_samples)
        return config


@keras.saving.register_keras_serializable(package="lstm_core")
class AddNoise(_WaveformAugmentation):
    """Additive white Gaussian noise, in training only, at a signal-to-noise
    ratio drawn per row uniformly from ``snr_db`` (``[min, max]`` in dB)
    relative to the power of the row's valid samples.

    ``call(waveform, lengths=None, training=None)`` returns ``(waveform,
    lengths)``, the noise on the valid samples only (the padding is zeroed, a
    silent row stays silent); not training, it is the identity. The SNRs and
    the noise are seeded (see :class:`_SeededAugmentation`).
    """

    def __init__(self, snr_db=(10.0, 30.0), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.snr_db = _range_of("noise snr_db", snr_db)

    def augment(self, waveform, lengths):
        shape = tf.shape(waveform)
        snr_key, noise_key = self._next_keys()
        snr = _per_row(shape[0], snr_key, self.snr_db)
        mask = _valid_mask(lengths, shape[1])
        count = tf.maximum(tf.cast(lengths, tf.float32), 1.0)
        power = tf.reduce_sum(tf.square(waveform) * mask, axis=1) / count
        scale = tf.sqrt(power * tf.pow(10.0, -snr / 10.0))
        noise = tf.random.stateless_normal(shape, noise_key, alg="philox")
        return (waveform + noise * scale[:, None]) * mask, lengths

    def get_config(self):
        config = super().get_config()
        config["snr_db"] = list(self.snr_db)
        return config


@keras.saving.register_keras_serializable(package="lstm_core")
class FrequencyWarp(_SeededAugmentation):
    """Vocal tract length perturbation (Jaitly & Hinton 2013), in training
    only: each row's spectrum is stretched along the frequency axis by a
    factor drawn uniformly from ``factors`` (``[min, max]``; 1.1 moves a
    formant at 1 kHz to 1.1 kHz), its tempo left as it is (speed
    perturbation changes both).

    ``call(spectrum, training=None)`` takes ``[batch, frames, bins]``
    linear-frequency magnitudes or powers and returns them with bin ``k`` of
    a row read at ``k / factor`` (linear interpolation; zero past the top
    bin); not training, it is the identity. Factors are seeded (see
    :class:`_SeededAugmentation`).
    """

    def __init__(self, factors=(0.9, 1.1), seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # spectra stay float32, as LogMel's
        super().__init__(seed=seed, **kwargs)
        self.factors = _range_of("warp factors", factors, low=0.0)

    def call(self, spectrum, training=None):
        if not training:
            return spectrum
        shape = tf.shape(spectrum)
        factors = _per_row(shape[0], self._next_key(), self.factors)
        top = tf.cast(shape[2] - 1, tf.float32)
        position = tf.range(top + 1.0)[None, :] / factors[:, None]
        below = tf.minimum(tf.floor(position), top)
        fraction = (position - below)[:, None, :]
        inside = tf.cast(position <= top, spectrum.dtype)[:, None, :]
        warped = _interpolate(spectrum, tf.cast(below, tf.int32), fraction, shape[2] - 1, axis=2)
        return warped * inside

    def get_config(self):
        config = super().get_config()
        config["factors"] = list(self.factors)
        return config


@keras.saving.register_keras_serializable(package="lstm_core")
class SpecAugment(_SeededAugmentation):
    """SpecAugment's frequency and time masking, in training only.

    ``call(features, lengths=None, training=None)`` returns ``(features,
    lengths)``. With ``training`` true it sets ``mask_value`` on
    ``freq_masks`` bands of up to ``freq_mask_width`` channels and
    ``time_masks`` spans of up to ``time_mask_width`` frames (and at most
    ``time_mask_ratio`` of the row's length), each span inside the row's
    valid frames (padding is left as it is); otherwise it is the identity.
    Each training call draws new masks, seeded (see
    :class:`_SeededAugmentation`; under a tf.distribute strategy each replica
    draws its own). Under XLA the same seed gives other (equally
    reproducible) masks: XLA's stateless RNG is its own stream.
    """

    def __init__(
        self,
        freq_masks=2,
        freq_mask_width=15,
        time_masks=2,
        time_mask_width=40,
        time_mask_ratio=1.0,
        mask_value=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        for name, value in (
            ("freq_masks", freq_masks), ("freq_mask_width", freq_mask_width),
            ("time_masks", time_masks), ("time_mask_width", time_mask_width),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise UserError(f"audio: {name} must be an integer >= 0, got {value!r}")
        if not 0.0 <= time_mask_ratio <= 1.0:
            raise UserError(f"audio: time_mask_ratio must be in [0, 1], got {time_mask_ratio}")
        self.freq_masks = int(freq_masks)
        self.freq_mask_width = int(freq_mask_width)
        self.time_masks = int(time_masks)
        self.time_mask_width = int(time_mask_width)
        self.time_mask_ratio = float(time_mask_ratio)
        self.mask_value = float(mask_value)

    def _spans(self, key, count, max_width, limit):
        """``[batch, count]`` starts and widths with ``start + width <= limit``
        (``max_width`` and ``limit``: ``[batch]``)."""
        shape = tf.stack([2, tf.shape(limit)[0], count])
        draws = tf.random.stateless_uniform(shape, key, alg="philox")
        limit = tf.cast(limit, tf.float32)[:, None]
        max_width = tf.minimum(tf.cast(max_width, tf.float32)[:, None], limit)
        widths = tf.floor(draws[0] * (max_width + 1.0))
        widths = tf.minimum(widths, max_width)
        starts = tf.floor(draws[1] * (limit - widths + 1.0))
        starts = tf.minimum(starts, limit - widths)
        return tf.cast(starts, tf.int32), tf.cast(widths, tf.int32)

    @staticmethod
    def _covered(starts, widths, steps):
        """``[batch, steps]`` bool: inside any of the spans."""
        position = tf.range(steps)[None, None, :]
        inside = (position >= starts[:, :, None]) & (position < (starts + widths)[:, :, None])
        return tf.reduce_any(inside, axis=1)

    def call(self, features, lengths=None, training=None):
        lengths = _full_lengths(features) if lengths is None else tf.cast(lengths, tf.int32)
        if not training:
            return features, lengths
        freq_key, time_key = self._next_keys()
        shape = tf.shape(features)
        channels = tf.fill(shape[:1], shape[2])
        f_start, f_width = self._spans(
            freq_key, self.freq_masks, tf.minimum(channels, self.freq_mask_width), channels
        )
        time_width = tf.floor(self.time_mask_ratio * tf.cast(lengths, tf.float32))
        time_width = tf.minimum(tf.cast(time_width, tf.int32), self.time_mask_width)
        t_start, t_width = self._spans(time_key, self.time_masks, time_width, lengths)
        masked = (
            self._covered(f_start, f_width, shape[2])[:, None, :]
            | self._covered(t_start, t_width, shape[1])[:, :, None]
        ) & tf.sequence_mask(lengths, shape[1])[:, :, None]
        return tf.where(masked, tf.cast(self.mask_value, features.dtype), features), lengths

    def compute_output_spec(self, features, lengths=None, training=None):
        return (
            keras.KerasTensor(features.shape, dtype=features.dtype),
            keras.KerasTensor((features.shape[0],), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            freq_masks=self.freq_masks,
            freq_mask_width=self.freq_mask_width,
            time_masks=self.time_masks,
            time_mask_width=self.time_mask_width,
            time_mask_ratio=self.time_mask_ratio,
            mask_value=self.mask_value,
        )
        return config


@keras.saving.register_keras_serializable(package="lstm_core")
class FrameStack(keras.layers.Layer):
    """Stacks ``stack`` consecutive frames into one, with stride ``stack``:
    ``[b, t, f] -> [b, ceil(t / stack), stack * f]`` and lengths to
    ``ceil(lengths / stack)``, so the recurrence pays for fewer steps. The last
    group of a row is filled with zeros past its length."""

    def __init__(self, stack=3, **kwargs):
        super().__init__(**kwargs)
        self.stack = _positive_int("stack", stack)

    def output_lengths(self, lengths):
        """Steps of rows of ``lengths`` frames."""
        return (tf.cast(lengths, tf.int32) + self.stack - 1) // self.stack

    def call(self, features, lengths=None):
        lengths = _full_lengths(features) if lengths is None else tf.cast(lengths, tf.int32)
        shape = tf.shape(features)
        channels = features.shape[-1]
        if channels is None:
            raise UserError("audio: FrameStack needs a known feature size (last axis)")
        valid = tf.sequence_mask(lengths, shape[1])[:, :, None]
        features = tf.where(valid, features, tf.zeros_like(features))
        steps = (shape[1] + self.stack - 1) // self.stack
        features = tf.pad(features, [[0, 0], [0, steps * self.stack - shape[1]], [0, 0]])
        stacked = tf.reshape(features, [shape[0], steps, self.stack * channels])
        return stacked, self.output_lengths(lengths)

    def compute_output_spec(self, features, lengths=None):
        steps = features.shape[1]
        steps = None if steps is None else -(-steps // self.stack)
        return (
            keras.KerasTensor(
                (features.shape[0], steps, self.stack * features.shape[-1]), dtype=features.dtype
            ),
            keras.KerasTensor((features.shape[0],), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config["stack"] = self.stack
        return config



@keras.saving.register_keras_serializable(package="lstm_core")
class ConvSubsample(keras.layers.Layer):
    """A strided 1-D convolution over time, the learned alternative to
    :class:`FrameStack`: ``[b, t, f] -> [b, ceil(t / factor), filters]``
    and lengths to ``ceil(lengths / factor)``.

    Step ``j`` sees the ``kernel_size`` frames from ``j * factor - (kernel_size
    - factor) // 2`` on (centred on the frames a stack of ``factor`` would
    group), with zeros before the first frame and past the row's length:
    frames past a row's length are zeroed first and the padding is explicit
    (not Keras's ``"same"``, whose split depends on the batch's length), so
    a row's steps never depend on its batch. Steps past the row's length are
    zeros. ``call(features, lengths=None)`` returns ``(values, lengths)`` in
    the layer's compute dtype.
    """

    def __init__(self, factor=3, filters=256, kernel_size=5, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.factor = _positive_int("factor", factor)
        self.filters = _positive_int("filters", filters)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        if self.kernel_size < self.factor:
            raise UserError(f"audio: kernel_size {kernel_size} is less than the factor {factor}: "
                            "frames between the steps would be skipped")
        self.activation = activation
        self.conv = keras.layers.Conv1D(
            self.filters, self.kernel_size, strides=self.factor, padding="valid",
            activation=activation, dtype=self.dtype_policy, name="conv",
        )

    def build(self, features_shape, lengths_shape=None):
        self.conv.build((features_shape[0], None, features_shape[-1]))

    def output_lengths(self, lengths):
        """Steps of rows of ``lengths`` frames."""
        return (tf.cast(lengths, tf.int32) + self.factor - 1) // self.factor

    def call(self, features, lengths=None):
        lengths = _full_lengths(features) if lengths is None else tf.cast(lengths, tf.int32)
        frames = tf.shape(features)[1]
        valid = tf.sequence_mask(lengths, frames)[:, :, None]
        features = tf.where(valid, features, tf.zeros_like(features))
        steps = self.output_lengths(frames)
        before = (self.kernel_size - self.factor) // 2
        after = tf.maximum((steps - 1) * self.factor + self.kernel_size - before - frames, 0)
        padded = tf.pad(features, [[0, 0], [before, after], [0, 0]])
        values = self.conv(padded)
        out_lengths = self.output_lengths(lengths)
        valid = tf.sequence_mask(out_lengths, tf.shape(values)[1])[:, :, None]
        return tf.where(valid, values, tf.zeros_like(values)), out_lengths

    def compute_output_spec(self, features, lengths=None):
        steps = features.shape[1]
        steps = None if steps is None else -(-steps // self.factor)
        return (
            keras.KerasTensor(
                (features.shape[0], steps, self.filters), dtype=self.compute_dtype
            ),
            keras.KerasTensor((features.shape[0],), dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor, filters=self.filters, kernel_size=self.kernel_size,
                      activation=self.activation)
        return config
