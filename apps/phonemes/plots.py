"""The figure of an evaluation (``App.evaluate(..., figure=path)``): for the
first few utterances, what the recognizer heard and what it made of it.

Each utterance takes two rows sharing a time axis in seconds: the log-mel
spectrogram as the model sees it (its own ``log_mel`` and ``normalize``
layers, so after normalisation), and the frame-wise CTC posteriors (the
softmax of its scores): the blank grey, every phoneme that comes near a
decision in colour, and each phoneme of the best path labelled where it
fires. The title gives the reference and the decoded phonemes (the
evaluation's own decoding) with the errors between them. Drawn on a
``matplotlib.figure.Figure``: no pyplot, no global state.
"""

import textwrap

import numpy as np
import tensorflow as tf

from apps.phonemes.data import pad_batch
from lstm_core.apps import model_cache
from lstm_core.edit_distance import align

#: Utterances drawn per evaluation (the first ones of the evaluated data).
UTTERANCES = 3
#: A phoneme's posterior is drawn when it rises above this somewhere.
DRAWN = 0.1
#: Characters per line of the phoneme strings in a title.
TITLE_WIDTH = 130


def model_view(model, waveforms):
    """Per waveform, ``(log_mels [frames, n_mels], posteriors [steps,
    classes])``, each cut to the row's own length."""
    batch, lengths = pad_batch(waveforms)
    view = model_cache(model, "plots.model_view", lambda: tf.function(
        lambda waveform, lengths: compute_view(model, waveform, lengths),
        input_signature=[tf.TensorSpec([None, None], tf.float32),
                         tf.TensorSpec([None], tf.int32)]))
    features, frames, posteriors, steps = (t.numpy() for t in view(batch, lengths))
    return [(features[row, :frames[row]], posteriors[row, :steps[row]])
            for row in range(len(waveforms))]


def compute_view(model, waveform, lengths):
    """The normalised log-mels with their frame counts, and the CTC
    posteriors with their step counts: one traced graph per model, which
    runs several times faster than the layers called eagerly."""
    features, frames = model.normalize(*model.log_mel(waveform, lengths))
    scores = model({"waveform": waveform, "lengths": lengths}, training=False)
    posteriors = tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1)
    return tf.cast(features, tf.float32), frames, posteriors, model.output_lengths(lengths)


def best_path(posteriors):
    """``(class, first step, last step)`` of each phoneme the best path
    emits: the runs of one non-blank argmax."""
    best = posteriors.argmax(-1)
    fired = []
    for step, label in enumerate(best):
        if label and (step == 0 or best[step - 1] != label):
            fired.append([int(label), step, step])
        elif label:
            fired[-1][2] = step
    return fired


def draw_spectrogram(axes, log_mels, frame_seconds):
    axes.imshow(log_mels.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                extent=(0, len(log_mels) * frame_seconds, 0, log_mels.shape[1]))
    axes.set_ylabel("mel channel")
    axes.tick_params(labelbottom=False)


def draw_posteriors(axes, posteriors, symbols, step_seconds):
    """Step-shaped posterior lines (one value per recurrent step), the best
    path's phonemes labelled above their peaks."""
    edges = np.arange(len(posteriors) + 1) * step_seconds
    extended = np.vstack([posteriors, posteriors[-1:]])  # the last step's level to its end
    axes.plot(edges, extended[:, 0], drawstyle="steps-post", color="0.6", linewidth=1,
              label="blank")
    colours = {}
    for label in np.flatnonzero(posteriors[:, 1:].max(0) > DRAWN) + 1:
        colours[label] = f"C{len(colours) % 10}"
        axes.plot(edges, extended[:, label], drawstyle="steps-post", color=colours[label],
                  linewidth=1.2, label=symbols[label])
    for label, first, last in best_path(posteriors):
        peak = first + int(posteriors[first:last + 1, label].argmax())
        axes.text((peak + 0.5) * step_seconds, posteriors[peak, label] + 0.04, symbols[label],
                  ha="center", va="bottom", fontsize=9, color=colours.get(label, "k"))
    axes.set_ylim(0, 1.2)
    axes.set_yticks([0, 0.5, 1])
    axes.set_ylabel("posterior")
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.05), fontsize=7, frameon=False,
                ncols=1 + len(colours) // 8, handlelength=1, columnspacing=0.8)


def title(name, reference, decoded, decoding):
    alignment = align(reference, decoded)
    counts = (f"{alignment.substitutions} sub, {alignment.deletions} del, "
              f"{alignment.insertions} ins in {len(reference)}")
    lines = [f"{name}: {counts} ({decoding})"]
    for head, phones in (("reference:", reference), ("decoded:", decoded)):
        lines += textwrap.wrap(f"{head:<11}{' '.join(phones) or '(nothing)'}", TITLE_WIDTH,
                               subsequent_indent=" " * 11)
    return "\n".join(lines)


# The layout in inches, fixed rather than measured (matplotlib's constrained
# layout measures every text and would double the drawing time): per
# utterance its title lines, the spectrogram, the posteriors and their axis.
WIDTH, LEFT, RIGHT = 11.0, 0.75, 1.5  # the legend of the posteriors on the right
TITLE_LINE, SPECTROGRAM, POSTERIORS, AXIS = 0.16, 1.9, 1.1, 0.65
DPI = 80


def draw_utterances(path, model, phones, names, waveforms, references, decoded, decoding):
    """Draw the first :data:`UTTERANCES` utterances into the PNG ``path``.
    ``phones`` are the model's phonemes (class ``i + 1``), ``decoded`` the
    evaluation's phonemes of each utterance, ``decoding`` how it decoded
    (shown in the titles)."""
    from matplotlib.figure import Figure

    count = min(UTTERANCES, len(waveforms))
    views = model_view(model, waveforms[:count])
    titles = [title(*row, decoding) for row in zip(names, references, decoded)][:count]
    blocks = [(t.count("\n") + 1.5) * TITLE_LINE + SPECTROGRAM + POSTERIORS + AXIS for t in titles]
    height = sum(blocks)
    figure = Figure(figsize=(WIDTH, height), dpi=DPI)

    def axes(top, size, **kwargs):  # ``size`` inches high, its top ``top`` inches down
        return figure.add_axes((LEFT / WIDTH, 1 - (top + size) / height,
                                (WIDTH - LEFT - RIGHT) / WIDTH, size / height), **kwargs)

    symbols = ["blank", *phones]
    frame_seconds = model.log_mel.hop_length / model.log_mel.sample_rate
    step_seconds = frame_seconds * model.frame_stack.stack
    top = 0.0
    for (log_mels, posteriors), text, block in zip(views, titles, blocks):
        spectrogram = axes(top + block - AXIS - POSTERIORS - SPECTROGRAM, SPECTROGRAM)
        lines = axes(top + block - AXIS - POSTERIORS, POSTERIORS, sharex=spectrogram)
        draw_spectrogram(spectrogram, log_mels, frame_seconds)
        draw_posteriors(lines, posteriors, symbols, step_seconds)
        lines.set_xlabel("seconds")
        lines.set_xlim(0, max(len(log_mels) * frame_seconds, len(posteriors) * step_seconds))
        spectrogram.set_title(text, loc="left", fontsize=9, family="monospace")
        top += block
    figure.savefig(path, dpi=DPI)
