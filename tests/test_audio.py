"""Audio front end: log-mels, MFCCs and deltas against librosa, padding
invariance, frame counts, masked and global normalisation, speed and noise
augmentation, SpecAugment, frame stacking and strided convolution, config
and compiled/XLA/SavedModel round trips."""

import keras
import librosa
import numpy as np
import pytest
import soundfile
import tensorflow as tf

from lstm_core.audio import (
    AddNoise, AudioFeatures, ConvSubsample, Deltas, FrameStack, FrequencyWarp, LogMel, Mfcc,
    Normalize, RandomTrim, SpecAugment, SpeedPerturb, feature_statistics, mel_matrix)
from lstm_core.errors import UserError

SR = 16000
OPTIONS = dict(sample_rate=SR, n_fft=512, win_length=400, hop_length=160, n_mels=40, fmin=20.0,
               fmax=7600.0, log_offset=1e-6)
# Natural-log features, float32 TensorFlow against float64 librosa: measured
# 1.5e-5 at most (6.6e-5 dB) on these utterances, asserted with some margin.
LOG_TOLERANCE = 5e-5


def vowel(samples, pitch, seed):
    """A vowel-like signal: harmonics of ``pitch`` under two formant-ish
    bumps, a slow amplitude envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    signal = np.zeros(samples)
    for k in range(1, int(4000 / pitch)):
        f = k * pitch
        gain = np.exp(-((f - 700) / 300) ** 2) + 0.5 * np.exp(-((f - 1200) / 400) ** 2) + 0.05
        signal += gain * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    signal *= np.hanning(samples) * 0.3
    return (signal + 0.003 * rng.standard_normal(samples)).astype(np.float32)


@pytest.fixture(scope="module")
def utterances(tmp_path_factory):
    """Two utterances written as 16-bit WAV and read back with librosa."""
    out = []
    for name, samples, pitch in (("a", 4000, 120.0), ("b", 6500, 210.0)):
        path = tmp_path_factory.mktemp("wav") / f"{name}.wav"
        soundfile.write(path, vowel(samples, pitch, len(out)), SR, subtype="PCM_16")
        audio, rate = librosa.load(path, sr=None)
        assert rate == SR
        out.append(audio.astype(np.float32))
    return out


def batch(waves):
    longest = max(len(w) for w in waves)
    padded = np.zeros((len(waves), longest), np.float32)
    for row, wave in enumerate(waves):
        padded[row, :len(wave)] = wave
    return padded, np.array([len(w) for w in waves], np.int32)


def librosa_log_mel(wave, pad_mode="constant", **changes):
    options = dict(OPTIONS, **changes)
    mel = librosa.feature.melspectrogram(
        y=wave, sr=SR, n_fft=options["n_fft"], win_length=options["win_length"],
        hop_length=options["hop_length"], n_mels=options["n_mels"], fmin=options["fmin"],
        fmax=options["fmax"], pad_mode=pad_mode, power=options.get("power", 2.0),
    )
    return np.log(mel + options["log_offset"]).T


def test_mel_matrix_is_librosas():
    for htk, norm in ((False, "slaney"), (True, None)):
        ours = mel_matrix(SR, 512, 40, 20.0, 7600.0, htk=htk, norm=norm)
        theirs = librosa.filters.mel(sr=SR, n_fft=512, n_mels=40, fmin=20.0, fmax=7600.0,
                                     htk=htk, norm=norm)
        np.testing.assert_allclose(ours.T, theirs, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_log_mel_matches_librosa_in_a_padded_batch(utterances, pad_mode):
    layer = LogMel(pad_mode=pad_mode, **OPTIONS)
    waves, lengths = batch(utterances)
    features, frame_lengths = layer(waves, lengths)
    for row, wave in enumerate(utterances):
        reference = librosa_log_mel(wave, pad_mode)
        assert frame_lengths[row] == reference.shape[0]
        valid = features[row, :frame_lengths[row]].numpy()
        np.testing.assert_allclose(valid, reference, atol=LOG_TOLERANCE)
        assert np.all(features[row, frame_lengths[row]:].numpy() == 0)


def test_log_mel_magnitude_and_milliseconds(utterances):
    layer = LogMel(sample_rate=SR, window_ms=25, hop_ms=10, n_mels=40, fmin=20.0, fmax=7600.0,
                   power=1.0)
    assert (layer.n_fft, layer.win_length, layer.hop_length) == (512, 400, 160)
    features, _ = layer(utterances[0][None])
    np.testing.assert_allclose(features[0].numpy(), librosa_log_mel(utterances[0], power=1.0),
                               atol=LOG_TOLERANCE)


def test_mfcc_matches_librosa(utterances):
    log_mel, frames = LogMel(**OPTIONS)(*batch(utterances))
    mfcc, mfcc_frames = Mfcc(13)(log_mel, frames)
    np.testing.assert_array_equal(mfcc_frames, frames)
    for row, wave in enumerate(utterances):
        reference = librosa.feature.mfcc(S=librosa_log_mel(wave).T, n_mfcc=13).T
        np.testing.assert_allclose(mfcc[row, :frames[row]].numpy(), reference, atol=1e-4)
        assert np.all(mfcc[row, frames[row]:].numpy() == 0)
    with pytest.raises(UserError, match="n_mfcc"):
        Mfcc(50)(log_mel, frames)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_padding_does_not_change_a_row(utterances, pad_mode):
    layer = LogMel(pad_mode=pad_mode, **OPTIONS)
    short = utterances[0]
    alone, alone_lengths = layer(short[None], np.array([len(short)]))
    waves, lengths = batch([short, utterances[1]])
    waves[0, len(short):] = 5.0  # junk past the length must be ignored too
    padded, padded_lengths = layer(waves, lengths)
    assert padded_lengths[0] == alone_lengths[0]
    np.testing.assert_allclose(padded[0, :alone_lengths[0]].numpy(), alone[0].numpy(), atol=1e-5)


def test_frame_lengths_depend_only_on_the_row():
    layer = LogMel(**OPTIONS)
    lengths = np.array([0, 1, 159, 160, 161, 4000, 6500])
    np.testing.assert_array_equal(layer.frame_lengths(lengths), 1 + lengths // 160)
    for length in (159, 160, 161, 1000):
        wave = np.zeros(length, np.float32)
        assert librosa.stft(wave, n_fft=512, hop_length=160).shape[1] == 1 + length // 160
    uncentred = LogMel(center=False, **OPTIONS)
    np.testing.assert_array_equal(uncentred.frame_lengths([100, 512, 672, 1000]), [0, 1, 2, 4])
    features, frames = uncentred(np.zeros((1, 1000), np.float32))
    assert features.shape[1] == frames[0] == 4


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="pad_mode"):
        LogMel(pad_mode="wrap")
    with pytest.raises(UserError, match="fmax"):
        LogMel(fmax=9000.0)
    with pytest.raises(UserError, match="win_length"):
        LogMel(n_fft=256, win_length=400)
    with pytest.raises(UserError, match="mean and std"):
        Normalize(mean=[0.0])
    with pytest.raises(UserError, match="stack"):
        FrameStack(0)
    with pytest.raises(UserError, match="width"):
        Deltas(1, width=4)
    with pytest.raises(UserError, match="n_mfcc"):
        AudioFeatures(kind="mfcc", n_mfcc=50, n_mels=40)
    with pytest.raises(UserError, match="kind"):
        AudioFeatures(kind="plp")
    with pytest.raises(UserError, match="kernel_size"):
        ConvSubsample(factor=3, kernel_size=2)
    with pytest.raises(UserError, match="speed rates"):
        SpeedPerturb([1.1, 0.9])
    with pytest.raises(UserError, match="speed rates"):
        SpeedPerturb([0.0, 1.1])
    with pytest.raises(UserError, match="snr_db"):
        AddNoise([10.0])


def padded_features(lengths, channels=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, size=(len(lengths), max(lengths), channels)).astype(np.float32)
    for row, length in enumerate(lengths):
        x[row, length:] = 100.0  # padding that would skew any statistic it entered
    return x, np.array(lengths, np.int32)


def test_utterance_normalisation_uses_valid_frames_only():
    x, lengths = padded_features([7, 3, 1])
    y, out_lengths = Normalize(epsilon=0.0)(x, lengths)
    np.testing.assert_array_equal(out_lengths, lengths)
    for row, length in enumerate(lengths):
        valid = x[row, :length]
        expected = (valid - valid.mean(0)) / np.maximum(valid.std(0), 0) if length > 1 else None
        if expected is not None:
            np.testing.assert_allclose(y[row, :length].numpy(), expected, rtol=1e-4, atol=1e-4)
        assert np.all(y[row, length:].numpy() == 0)
    assert np.all(np.isfinite(Normalize()(x, lengths)[0].numpy()))  # one-frame row, std 0


def test_global_normalisation_and_its_weights():
    x, lengths = padded_features([4, 2])
    mean, std = np.arange(5.0), np.linspace(1.0, 2.0, 5)
    layer = Normalize(mean=mean, std=std, epsilon=0.0)
    y, _ = layer(x, lengths)
    np.testing.assert_allclose(y[0].numpy(), (x[0] - mean) / std, rtol=1e-5)
    assert np.all(y[1, 2:].numpy() == 0)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 2


def test_spec_augment_is_identity_at_inference():
    x, lengths = padded_features([9, 4])
    layer = SpecAugment(seed=1)
    for training in (None, False):
        y, out_lengths = layer(x, lengths, training=training)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(out_lengths, lengths)


def test_spec_augment_masks_valid_frames_and_is_seeded():
    x, lengths = padded_features([30, 12, 5], channels=20)
    x = np.abs(x) + 1.0  # no natural zeros: every zero is a mask
    options = dict(freq_masks=2, freq_mask_width=4, time_masks=2, time_mask_width=6,
                   time_mask_ratio=0.4, seed=3)
    layer = SpecAugment(**options)
    draws = [layer(x, lengths, training=True)[0].numpy() for _ in range(3)]
    twin = SpecAugment(**options)
    np.testing.assert_array_equal(twin(x, lengths, training=True)[0], draws[0])
    assert not np.array_equal(draws[0], draws[1])  # a new draw each step
    for y in draws:
        masked = y == 0
        for row, length in enumerate(lengths):
            np.testing.assert_array_equal(y[row, length:], x[row, length:])  # padding untouched
            valid = masked[row, :length]
            band = valid.all(axis=0)  # whole channels masked
            span = valid.all(axis=1)  # whole frames masked
            assert band.sum() <= 2 * 4 and span.sum() <= 2 * min(6, int(0.4 * length))
            # every masked cell is in a masked channel or a masked frame
            assert np.all(valid == (band[None, :] | span[:, None]))
    assert any((y == 0).any() for y in draws)


def test_frame_stack_shapes_and_lengths():
    x, lengths = padded_features([7, 6, 1], channels=3)
    y, out_lengths = FrameStack(3)(x, lengths)
    assert y.shape == (3, 3, 9)
    np.testing.assert_array_equal(out_lengths, [3, 2, 1])
    np.testing.assert_array_equal(y[0, 1].numpy(), x[0, 3:6].reshape(-1))
    np.testing.assert_array_equal(y[0, 2, :3], x[0, 6])
    assert np.all(y[0, 2, 3:].numpy() == 0) and np.all(y[2, 0, 3:].numpy() == 0)


@pytest.mark.parametrize("order,width", [(1, 9), (2, 9), (2, 5)])
def test_deltas_match_librosa_row_by_row(order, width):
    x, lengths = padded_features([30, 12, 9], channels=4)  # padding of 100s
    y, out_lengths = Deltas(order, width)(x, lengths)
    np.testing.assert_array_equal(out_lengths, lengths)
    assert y.shape == (3, 30, 4 * (order + 1))
    for row, length in enumerate(lengths):
        valid = x[row, :length].T.astype(np.float64)
        expected = np.concatenate(
            [valid] + [librosa.feature.delta(valid, width=width, order=n) for n in
                       range(1, order + 1)]).T
        np.testing.assert_allclose(y[row, :length].numpy(), expected, atol=1e-4)
        assert np.all(y[row, length:].numpy() == 0)


def test_deltas_of_a_row_shorter_than_the_window_ignore_the_padding():
    x, lengths = padded_features([12, 4], channels=3)
    layer = Deltas(2, 9)
    alone, _ = layer(x[1:, :4], lengths[1:])
    padded, _ = layer(x, lengths)
    np.testing.assert_allclose(padded[1, :4].numpy(), alone[0].numpy(), atol=1e-6)
    # its window repeats the last frame: a constant row has no slope
    constant = Deltas(1, 9)(np.ones((1, 4, 2), np.float32), np.array([4]))[0].numpy()
    np.testing.assert_allclose(constant[0, :, 2:], 0.0, atol=1e-6)


def test_audio_features_mfcc_with_deltas_match_librosa(utterances):
    layer = AudioFeatures(kind="mfcc", n_mfcc=13, deltas=2, pad_mode="reflect", **OPTIONS)
    assert layer.feature_size == 39
    features, frames = layer(*batch(utterances))
    assert features.shape[-1] == 39
    for row, wave in enumerate(utterances):
        mfcc = librosa.feature.mfcc(S=librosa_log_mel(wave, "reflect").T, n_mfcc=13)
        expected = np.concatenate([mfcc, librosa.feature.delta(mfcc),
                                   librosa.feature.delta(mfcc, order=2)]).T
        np.testing.assert_allclose(features[row, :frames[row]].numpy(), expected, atol=2e-4)
        assert np.all(features[row, frames[row]:].numpy() == 0)
    log_mel = AudioFeatures(**OPTIONS)
    np.testing.assert_array_equal(log_mel(*batch(utterances))[0], LogMel(**OPTIONS)(
        *batch(utterances))[0])


def test_feature_statistics_count_every_frame_once(utterances):
    layer = AudioFeatures(kind="mfcc", n_mfcc=13, deltas=1, **OPTIONS)
    waves = [utterances[0], utterances[1], utterances[0][:1500]]
    frames = np.concatenate([layer(w[None])[0][0].numpy() for w in waves]).astype(np.float64)
    mean, std = feature_statistics(layer, waves, batch_size=2)
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-4)
    # a channel that never varies gets the floor, not a division by ~0
    silent = AudioFeatures(**OPTIONS)
    _, flat = feature_statistics(silent, [np.zeros(800, np.float32)], std_floor=0.01)
    assert np.all(flat == 0.01)
    # normalised with them, the frames have mean 0 and deviation 1
    normalized, lengths = Normalize(mean=mean, std=std, epsilon=0.0)(*layer(*batch(waves)))
    valid = np.concatenate([normalized[r, :n].numpy() for r, n in enumerate(lengths.numpy())])
    np.testing.assert_allclose(valid.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(valid.std(0), 1.0, atol=1e-4)


def sine(frequency, samples, rate=SR):
    return np.sin(2 * np.pi * frequency * np.arange(samples) / rate).astype(np.float32)


def peak_frequency(wave, rate=SR):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave)), n=8 * len(wave)))
    return np.argmax(spectrum) * rate / (8 * len(wave))


def test_waveform_augmentation_is_identity_at_inference():
    waves, lengths = batch([sine(440, 900), sine(300, 500)])
    for layer in (SpeedPerturb([0.8, 1.2], seed=1), AddNoise([0.0, 10.0], seed=1),
                  RandomTrim([0.1, 0.5], seed=1)):
        for training in (None, False):
            y, out_lengths = layer(waves, lengths, training=training)
            np.testing.assert_array_equal(y, waves)
            np.testing.assert_array_equal(out_lengths, lengths)


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_speed_scales_frequency_and_duration_by_the_rate(rate):
    waves, lengths = batch([sine(440, SR), sine(440, SR // 2)])
    y, out_lengths = SpeedPerturb([rate, rate], seed=0)(waves, lengths, training=True)
    expected_lengths = 1 + (lengths - 1) // rate
    np.testing.assert_array_equal(out_lengths, expected_lengths)
    assert y.shape[1] == 1 + (SR - 1) // rate
    for row, length in enumerate(out_lengths.numpy()):
        played = y[row, :length].numpy()
        assert abs(peak_frequency(played) - 440 * rate) < 2.0
        # linear interpolation at i * rate, as numpy computes it
        reference = np.interp(np.arange(length) * rate, np.arange(lengths[row]),
                              waves[row, :lengths[row]])
        np.testing.assert_allclose(played, reference, atol=1e-5)
        assert np.all(y[row, length:].numpy() == 0)


def test_speed_rates_are_drawn_in_range_and_seeded():
    waves = np.ones((64, 1001), np.float32)
    lengths = np.full(64, 1001, np.int32)
    layer = SpeedPerturb([0.9, 1.1], seed=5)
    y, out_lengths = layer(waves, lengths, training=True)
    assert y.shape[1] == 1 + int(1000 / 0.9)
    implied = 1000 / (out_lengths.numpy() - 1)  # each row's rate, to a sample
    assert implied.min() >= 0.9 - 1e-3 and implied.max() <= 1.1 + 1e-3
    assert implied.min() < 0.92 and implied.max() > 1.08
    assert np.all(y.numpy() == _valid(out_lengths, y.shape[1]))  # ones, then zero padding
    twin = SpeedPerturb([0.9, 1.1], seed=5)
    np.testing.assert_array_equal(twin(waves, lengths, training=True)[1], out_lengths)
    assert not np.array_equal(layer(waves, lengths, training=True)[1], out_lengths)


def test_trim_keeps_one_stretch_of_each_row_moved_to_the_front():
    lengths = np.array([1000] * 62 + [300, 200], np.int32)
    waves, lengths = batch([np.arange(1, n + 1, dtype=np.float32) for n in lengths])
    layer = RandomTrim([0.2, 0.4], min_samples=250, seed=2)
    y, out_lengths = layer(waves, lengths, training=True)
    assert y.shape == waves.shape
    y, out_lengths = y.numpy(), out_lengths.numpy()
    starts = y[:, 0] - 1  # each sample is its input position + 1
    for row, (length, kept, start) in enumerate(zip(lengths, out_lengths, starts)):
        np.testing.assert_array_equal(y[row, :kept], np.arange(start + 1, start + kept + 1))
        assert np.all(y[row, kept:] == 0) and start + kept <= length
    shares = 1 - out_lengths[:62] / 1000
    assert shares.min() >= 0.2 - 1e-3 and shares.max() <= 0.4
    assert shares.min() < 0.23 and shares.max() > 0.37
    # the cut is split between the two ends at a uniform point
    split = starts[:62] / (1000 - out_lengths[:62])
    assert split.min() < 0.1 and split.max() > 0.9 and 0.35 < split.mean() < 0.65
    assert out_lengths[62] == 250 and out_lengths[63] == 200  # never below min_samples
    twin = RandomTrim.from_config(layer.get_config())
    np.testing.assert_array_equal(twin(waves, lengths, training=True)[0], y)
    assert not np.array_equal(layer(waves, lengths, training=True)[0], y)
    with pytest.raises(UserError, match=r"trim fractions must be within \[0, 1\)"):
        RandomTrim([0.5, 1.0])


def _valid(lengths, steps):
    return (np.arange(steps)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)


def test_noise_snr_is_in_the_requested_range_and_padding_stays_zero():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3000, 8000, size=64)
    waves, lengths = batch([rng.uniform(0.1, 1.0) * sine(rng.uniform(100, 2000), n)
                            for n in lengths])
    waves[:, :][_valid(lengths, waves.shape[1]) == 0] = 0.0
    layer = AddNoise([5.0, 20.0], seed=3)
    y, out_lengths = layer(waves, lengths, training=True)
    np.testing.assert_array_equal(out_lengths, lengths)
    snrs = []
    for row, length in enumerate(lengths):
        signal, noise = waves[row, :length], y[row, :length].numpy() - waves[row, :length]
        snrs.append(10 * np.log10(np.mean(signal**2) / np.mean(noise**2)))
        assert abs(noise.mean()) < 4 * noise.std() / np.sqrt(length)
        assert np.all(y[row, length:].numpy() == 0)
    snrs = np.array(snrs)
    # each row's measured SNR (noise power estimated from a few thousand samples)
    assert snrs.min() > 5.0 - 0.3 and snrs.max() < 20.0 + 0.3
    assert snrs.min() < 6.5 and snrs.max() > 18.5 and abs(snrs.mean() - 12.5) < 1.5
    twin = AddNoise([5.0, 20.0], seed=3)
    np.testing.assert_array_equal(twin(waves, lengths, training=True)[0], y)
    silent = layer(np.zeros((1, 100), np.float32), np.array([100]), training=True)[0]
    assert np.all(silent.numpy() == 0)


@pytest.mark.parametrize("factor", [0.8, 1.2])
def test_frequency_warp_stretches_each_spectrum_by_its_factor(factor):
    rng = np.random.default_rng(0)
    spectra = rng.uniform(size=(2, 3, 257)).astype(np.float32)
    warped = FrequencyWarp([factor, factor], seed=0)(spectra, training=True).numpy()
    bins = np.arange(257)
    for row in range(2):
        for frame in range(3):
            # bin k reads k / factor, zero past the top bin (positions in float32)
            reference = np.interp(bins / factor, bins, spectra[row, frame], right=0.0)
            np.testing.assert_allclose(warped[row, frame], reference, atol=1e-4)
    # a tone's peak moves with the factor, through the mel features too
    tone = sine(1000, 4000)[None, :]
    plain = LogMel(SR, n_mels=128)(tone)[0][0, 5].numpy()
    moved = LogMel(SR, n_mels=128, warp={"factors": [factor, factor]})(tone, training=True)[0]
    centres = librosa.mel_frequencies(128 + 2, fmax=SR / 2)[1:-1]
    assert abs(centres[np.argmax(moved[0, 5])] / centres[np.argmax(plain)] - factor) < 0.04


def test_frequency_warp_is_identity_at_inference_and_seeded():
    spectra = np.random.default_rng(1).uniform(size=(64, 2, 33)).astype(np.float32)
    layer = FrequencyWarp([0.9, 1.1], seed=4)
    for training in (None, False):
        np.testing.assert_array_equal(layer(spectra, training=training), spectra)
    first = layer(spectra, training=True).numpy()
    twin = FrequencyWarp.from_config(layer.get_config())
    np.testing.assert_array_equal(twin(spectra, training=True), first)
    assert not np.array_equal(layer(spectra, training=True), first)
    graph = FrequencyWarp.from_config(layer.get_config())
    np.testing.assert_allclose(tf.function(lambda x: graph(x, training=True))(spectra), first,
                               atol=1e-6)
    # XLA's stateless RNG is another stream: only what any factor keeps is checked
    xla = FrequencyWarp.from_config(layer.get_config())
    warped = tf.function(lambda x: xla(x, training=True), jit_compile=True)(spectra).numpy()
    assert warped.shape == spectra.shape and np.all(warped[:, :, 0] == spectra[:, :, 0])
    with pytest.raises(UserError, match="warp factors"):
        FrequencyWarp([1.1, 0.9])


def conv_reference(x, kernel, bias, factor, before):
    """Step j: relu of the kernel over frames j * factor - before onwards,
    zeros outside the row."""
    length, size = x.shape[0], kernel.shape[0]
    steps = -(-length // factor)
    padded = np.concatenate([np.zeros((before, x.shape[1])), x,
                             np.zeros((steps * factor + size, x.shape[1]))])
    out = [np.einsum("kf,kfc->c", padded[j * factor:j * factor + size], kernel) + bias
           for j in range(steps)]
    return np.maximum(np.array(out), 0.0)


def test_conv_subsample_is_a_strided_convolution_blind_to_padding():
    x, lengths = padded_features([10, 7, 1], channels=4)
    layer = ConvSubsample(factor=3, filters=6, kernel_size=5)
    y, out_lengths = layer(x, lengths)
    np.testing.assert_array_equal(out_lengths, [4, 3, 1])
    assert y.shape == (3, 4, 6)
    kernel, bias = (w.numpy() for w in layer.conv.weights)
    for row, length in enumerate(lengths):
        expected = conv_reference(x[row, :length], kernel, bias, factor=3, before=1)
        np.testing.assert_allclose(y[row, :out_lengths[row]].numpy(), expected, atol=1e-5)
        assert np.all(y[row, out_lengths[row]:].numpy() == 0)
        alone, _ = layer(x[row:row + 1, :length], lengths[row:row + 1])
        np.testing.assert_allclose(y[row, :out_lengths[row]].numpy(), alone[0].numpy(),
                                   atol=1e-6)


def test_conv_subsample_under_mixed_precision():
    x, lengths = padded_features([10, 7], channels=4)
    full = ConvSubsample(factor=2, filters=3, kernel_size=3)
    y, _ = full(x, lengths)
    mixed = ConvSubsample(factor=2, filters=3, kernel_size=3, dtype="mixed_float16")
    mixed(x, lengths)
    mixed.set_weights(full.get_weights())
    half, half_lengths = mixed(x, lengths)
    assert half.dtype == tf.float16 and mixed.conv.kernel.dtype == "float32"
    np.testing.assert_array_equal(half_lengths, [5, 4])
    np.testing.assert_allclose(half.numpy(), y.numpy(), atol=0.05, rtol=0.01)


LAYERS = [
    (lambda: LogMel(pad_mode="reflect", **OPTIONS), "wave"),
    (lambda: Normalize(), "features"),
    (lambda: Normalize(mean=np.zeros(40), std=np.full(40, 2.0)), "features"),
    (lambda: FrameStack(4), "features"),
    (lambda: Mfcc(20), "features"),
    (lambda: Deltas(2, 5), "features"),
    (lambda: AudioFeatures(kind="mfcc", n_mfcc=13, deltas=1, **OPTIONS), "wave"),
    (lambda: ConvSubsample(factor=3, filters=8, kernel_size=5), "features"),
]


def layer_inputs(kind):
    if kind == "wave":
        rng = np.random.default_rng(0)
        return rng.normal(size=(2, 2000)).astype(np.float32), np.array([2000, 1300], np.int32)
    return padded_features([11, 6], channels=40)


@pytest.mark.parametrize("make,kind", LAYERS)
def test_config_round_trip_tf_function_and_xla(make, kind):
    layer = make()
    x, lengths = layer_inputs(kind)
    expected, expected_lengths = layer(x, lengths)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.get_config() == layer.get_config()
    clone(x, lengths)  # built, then given the layer's weights (ConvSubsample's are random)
    clone.set_weights(layer.get_weights())
    for jit in (False, True):
        compiled = tf.function(lambda a, b: clone(a, b), jit_compile=jit)
        got, got_lengths = compiled(x, lengths)
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_array_equal(got_lengths, expected_lengths)


def test_spec_augment_config_tf_function_and_xla():
    x, lengths = padded_features([11, 6], channels=40)
    layer = SpecAugment(freq_mask_width=5, time_mask_width=3, seed=7)
    clone = SpecAugment.from_config(layer.get_config())
    expected, _ = layer(x, lengths, training=True)
    got, _ = tf.function(lambda a, b: clone(a, b, training=True))(x, lengths)
    np.testing.assert_array_equal(got, expected)
    # XLA's stateless RNG is another stream: reproducible, but not eager's masks.
    runs = []
    for _ in range(2):
        fresh = SpecAugment.from_config(layer.get_config())
        compiled = tf.function(lambda a, b, f=fresh: f(a, b, training=True), jit_compile=True)
        runs.append(compiled(x, lengths)[0].numpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert (runs[0] == 0).any()
    np.testing.assert_array_equal(runs[0][1, 6:], x[1, 6:])  # padding untouched under XLA too
    fresh = SpecAugment.from_config(layer.get_config())
    np.testing.assert_array_equal(fresh(x, lengths, training=False)[0], x)


@pytest.mark.parametrize("make", [lambda: SpeedPerturb([0.8, 1.2], seed=7),
                                  lambda: AddNoise([0.0, 10.0], seed=7),
                                  lambda: RandomTrim([0.0, 0.15], min_samples=100, seed=7)])
def test_waveform_augmentation_config_tf_function_and_xla(make):
    x, lengths = layer_inputs("wave")
    layer = make()
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    expected, expected_lengths = layer(x, lengths, training=True)
    got, got_lengths = tf.function(lambda a, b: clone(a, b, training=True))(x, lengths)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(got_lengths, expected_lengths)
    # XLA's stateless RNG is another stream: reproducible, but not eager's draws.
    runs = []
    for _ in range(2):
        fresh = type(layer).from_config(layer.get_config())
        compiled = tf.function(lambda a, b, f=fresh: f(a, b, training=True), jit_compile=True)
        runs.append([t.numpy() for t in compiled(x, lengths)])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    values, out_lengths = runs[0]
    assert np.all(values * (1 - _valid(out_lengths, values.shape[1])) == 0)
    assert np.all(out_lengths >= 1 + (lengths - 1) // 1.2)
    assert np.all(out_lengths <= 1 + (lengths - 1) // 0.8)

def test_saved_model_round_trip(tmp_path, utterances):
    class Features(tf.Module):
        def __init__(self):
            super().__init__()
            self.log_mel = LogMel(**OPTIONS)

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                      tf.TensorSpec([None], tf.int32)])
        def __call__(self, waveform, lengths):
            features, frames = self.log_mel(waveform, lengths)
            return {"features": features, "frames": frames}

    module = Features()
    waves, lengths = batch(utterances)
    expected = module(waves, lengths)
    tf.saved_model.save(module, str(tmp_path / "model"))
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    got = loaded(tf.constant(waves), tf.constant(lengths))
    np.testing.assert_array_equal(got["frames"], expected["frames"])
    np.testing.assert_allclose(got["features"], expected["features"], atol=1e-6)
