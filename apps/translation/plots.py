"""The figure of an evaluation (``App.evaluate(..., figure=path)``): for the
first few sentences, where the model looked while it translated.

Each sentence is a heat map of the attention weights: one row per subword
of the model's own translation (the evaluation's decoding, the end of
sentence last), one column per source subword, the weights of a row summing
to 1 over the source. The weights are those of the decoder reading the
translation back (teacher forcing its own output gives the same steps as
decoding it). The title gives the source, the reference and the output.
Drawn on a ``matplotlib.figure.Figure``: no pyplot, no global state.
"""

import textwrap

import numpy as np
import tensorflow as tf

from apps.translation.subwords import BOS, EOS
from lstm_core.apps import model_cache

#: Sentences drawn per evaluation (the first ones of the evaluated data).
SENTENCES = 3
#: Subwords shown per axis at most (a longer sentence is cut).
MOST_PIECES = 40
#: Characters per line of a title.
TITLE_WIDTH = 110


def alignments(model, source_ids, target_in):
    """Attention weights ``[batch, target_steps, source_steps]`` of the
    decoder reading ``target_in``: one traced graph per model."""
    attend = model_cache(model, "plots.alignments", lambda: tf.function(
        lambda source, target_in: model.teacher_forced(
            {"source": source, "target_in": target_in})[1], reduce_retracing=True))
    return attend(source_ids, target_in).numpy()


def attention_rows(model, serving, source_processor, target_processor, sentences):
    """Per sentence: ``(source pieces, output pieces, weights [outputs,
    sources])``, decoded as ``serving`` decodes."""
    ids, lengths, output, output_lengths = (t.numpy() for t in serving.best_ids(
        tf.constant(sentences, tf.string)))
    target_in = np.concatenate([np.full((len(output), 1), BOS, output.dtype), output], axis=1)
    weights = alignments(model, ids, target_in[:, :max(1, output.shape[1])])
    rows = []
    for row, (n, m) in enumerate(zip(lengths, output_lengths)):
        source = [source_processor.id_to_piece(int(i)) for i in ids[row, :n]]
        target = [("</s>" if i == EOS else target_processor.id_to_piece(int(i)))
                  for i in output[row, :m]]
        rows.append((source, target, weights[row, :m, :n]))
    return rows


# The layout in inches, fixed rather than measured (constrained layout
# measures every text and costs more than the drawing).
LEFT, RIGHT, CELL, TITLE_LINE, AXIS_LABELS, DPI = 1.4, 0.3, 0.22, 0.17, 1.2, 80


def draw_attention(path, rows, titles):
    """Heat maps of ``rows`` (from :func:`attention_rows`) with their
    ``titles`` into the PNG ``path``."""
    from matplotlib.figure import Figure

    rows = [(s[:MOST_PIECES], t[:MOST_PIECES], w[:MOST_PIECES, :MOST_PIECES])
            for s, t, w in rows]
    titles = ["\n".join(wrapped for line in t.splitlines()
                         for wrapped in textwrap.wrap(line, TITLE_WIDTH, subsequent_indent=" " * 11))
              for t in titles]
    width = LEFT + RIGHT + CELL * max([len(s) for s, _, _ in rows] + [25])
    blocks = [(title.count("\n") + 2) * TITLE_LINE + CELL * max(len(t), 1) + AXIS_LABELS
              for (_, t, _), title in zip(rows, titles)]
    height = sum(blocks)
    figure = Figure(figsize=(width, height), dpi=DPI)
    top = 0.0
    for (source, target, weights), title, block in zip(rows, titles, blocks):
        size = (CELL * max(len(source), 1), CELL * max(len(target), 1))
        box = (LEFT / width, 1 - (top + block - AXIS_LABELS) / height, size[0] / width,
               size[1] / height)
        axes = figure.add_axes(box)
        axes.imshow(weights if weights.size else np.zeros((1, 1)), cmap="Greys", vmin=0.0,
                    vmax=1.0, aspect="auto", interpolation="nearest")
        axes.set_xticks(range(len(source)), source, rotation=90, fontsize=8)
        axes.set_yticks(range(len(target)), target, fontsize=8)
        axes.tick_params(length=0)
        axes.set_title(title, loc="left", fontsize=8, family="monospace")
        top += block
    figure.savefig(path, dpi=DPI)


def title(source, reference, output):
    return f"source:    {source}\nreference: {reference}\noutput:    {output}"
