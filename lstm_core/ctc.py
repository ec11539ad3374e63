"""Connectionist temporal classification (CTC): loss, decoders and alignment
for any model whose output is one score vector per frame.

All functions take batch-major logits ``[batch, time, classes]`` (unnormalised
scores; a softmax over ``classes`` gives the frame's distribution) and the
number of real frames of each example, ``logit_lengths [batch]``; frames past
an example's length are padding and ignored.

Blank convention: **the blank is class 0** (``BLANK``) unless a function is
given another ``blank``, and the real labels are ``1..classes-1``. Reasons:
TensorFlow's dense-label CTC loss works on blank 0 without copying the
logits (another blank index makes it build a shifted copy), Keras's
``ops.ctc_loss``/``ops.ctc_decode`` default to ``mask_index=0``, and a
vocabulary can keep id 0 reserved the way padding ids usually are. Only
``tf.nn.ctc_beam_search_decoder`` insists on blank = last class; this module
moves the blank column there and maps the decoded ids back, so callers only
ever see their own ids. Every function accepts ``blank`` (negative counts from
the end, ``-1`` = last class); use the same value for the loss and decoders.

Everything runs in graph ops (no Python loop over frames), eagerly and
inside ``tf.function`` (so in an exported SavedModel signature). The loss
also compiles with XLA (``jit_compile=True``, so a jit-compiled train step
works); the decoders and the alignment do not (TensorFlow's decoder ops have
no XLA kernel, and their outputs' lengths depend on the data), so keep them
out of jit-compiled functions, e.g. in evaluation/serving code. Logits are
cast to float32 first, so a ``mixed_float16``/``mixed_bfloat16`` policy's
outputs are fine.

Decoders return dense int32 label ids padded with ``PAD`` (-1), plus lengths,
so an exported graph can map them to strings with a lookup table.
"""

import tensorflow as tf

BLANK = 0
PAD = -1


def _blank_index(blank, num_classes):
    """The blank as an index in [0, classes) (a Python int: the class count of
    CTC logits is always static)."""
    if num_classes is None:
        raise ValueError("CTC logits need a static number of classes (last axis)")
    index = blank + num_classes if blank < 0 else blank
    if not 0 <= index < num_classes:
        raise ValueError(f"blank={blank} is not a class of logits with {num_classes} classes")
    return index


def _float_logits(logits):
    """Logits as float32 (CTC's log-space sums lose too much in float16)."""
    logits = tf.convert_to_tensor(logits)
    return tf.cast(logits, tf.float32), logits.shape[-1]


def ctc_loss(labels, logits, label_lengths, logit_lengths, blank=BLANK):
    """Per-example CTC negative log-likelihood, ``-log p(labels | logits)``.

    Args:
      labels: int ``[batch, max_label_len]`` label ids (never the blank);
        entries past ``label_lengths`` are ignored (any padding value).
      logits: float ``[batch, time, classes]``, batch-major.
      label_lengths: int ``[batch]``.
      logit_lengths: int ``[batch]``, real frames of each example.
      blank: the blank class (see the module docstring).

    Returns float32 ``[batch]``. An example whose labels cannot fit in its
    frames (a repeated label needs a blank frame between) has probability 0:
    its loss is a large finite number (hundreds), not ``inf``, so keep label
    sequences short enough for their frames. Uses ``tf.nn.ctc_loss`` with dense
    labels (its forward-backward in TF ops, with its own gradient).
    """
    logits, num_classes = _float_logits(logits)
    index = _blank_index(blank, num_classes)
    labels = tf.cast(labels, tf.int32)
    # Padding may hold any value (e.g. -1); the op only reads within lengths
    # but gathers over the whole row, so make every entry a valid class.
    labels = tf.where(labels < 0, tf.zeros_like(labels), labels)
    return tf.nn.ctc_loss(
        labels=labels,
        logits=logits,
        label_length=tf.cast(label_lengths, tf.int32),
        logit_length=tf.cast(logit_lengths, tf.int32),
        logits_time_major=False,
        blank_index=index,
    )


def _dense(sparse):
    """A decoder's SparseTensor [batch, max_len] as dense int32 padded with
    PAD, and each row's length."""
    dense = tf.sparse.to_dense(tf.cast(sparse, tf.int32), default_value=PAD)
    lengths = tf.reduce_sum(tf.cast(dense != PAD, tf.int32), axis=1)
    return dense, lengths


def ctc_greedy_decode(logits, logit_lengths, blank=BLANK):
    """Best-path decoding: the argmax class of each real frame, repeats merged,
    blanks dropped (``tf.nn.ctc_greedy_decoder``).

    Returns ``(labels, lengths)``: int32 ``[batch, max_len]`` padded with -1
    (``max_len`` = longest decoding in the batch, possibly 0) and int32
    ``[batch]``. Ties between classes go to the lowest index (argmax).
    """
    logits, num_classes = _float_logits(logits)
    index = _blank_index(blank, num_classes)
    decoded, _ = tf.nn.ctc_greedy_decoder(
        tf.transpose(logits, [1, 0, 2]),
        tf.cast(logit_lengths, tf.int32),
        merge_repeated=True,
        blank_index=index,
    )
    return _dense(decoded[0])


def _same_width(labels):
    """Label tensors (the label axis last) padded with ``PAD`` to the widest."""
    width = tf.reduce_max([tf.shape(x)[-1] for x in labels])
    return [tf.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[0, width - tf.shape(x)[-1]]],
                   constant_values=PAD) for x in labels]


def _blank_last(logits, index):
    """``logits`` with the blank's column moved last, where TensorFlow's
    native CTC kernels want it (the classes after it move down by one)."""
    return tf.concat(
        [logits[..., :index], logits[..., index + 1:], logits[..., index:index + 1]], axis=-1)


def _blank_padded(logits, logit_lengths, frames, index):
    """Rows shorter than ``frames`` lengthened to it by frames of certain
    blank. TensorFlow's beam search fails the whole batch when a row has
    fewer labellings than the paths asked for (a row of no frames has one,
    the empty one); a frame of certain blank changes no labelling's
    probability (in float32), and ``frames`` of them give any row enough
    improbable labellings (about -1e4 a label) to fill the list."""
    logit_lengths = tf.cast(logit_lengths, tf.int32)
    steps = tf.maximum(tf.shape(logits)[1], frames)
    logits = tf.pad(logits, [[0, 0], [0, steps - tf.shape(logits)[1]], [0, 0]])
    certain_blank = tf.one_hot(index, logits.shape[-1], on_value=0.0, off_value=-1e4)
    real = tf.range(steps)[None, :] < logit_lengths[:, None]
    return (tf.where(real[..., None], logits, certain_blank),
            tf.maximum(logit_lengths, frames))


def ctc_beam_search_decode(logits, logit_lengths, beam_width, top_paths=1, blank=BLANK):
    """Prefix beam search for the most probable labellings (summing over their
    alignments), ``tf.nn.ctc_beam_search_decoder``.

    Returns ``(labels, lengths, scores)``: int32 ``[batch, top_paths, max_len]``
    padded with -1 (``max_len`` the longest of all paths in the batch), int32
    ``[batch, top_paths]`` and float32 ``[batch, top_paths]`` log-probabilities
    of the labellings as the beam estimates them (best first). Take
    ``labels[:, 0]`` for the best path.
    """
    if top_paths > beam_width:
        raise ValueError(f"top_paths={top_paths} is more than beam_width={beam_width}")
    logits, num_classes = _float_logits(logits)
    index = _blank_index(blank, num_classes)
    if top_paths > 1:
        logits, logit_lengths = _blank_padded(logits, logit_lengths, top_paths, index)
    # TensorFlow's beam search has the blank last: move its column there and
    # map the decoded ids (classes after the blank moved down by one) back.
    decoded, scores = tf.nn.ctc_beam_search_decoder(
        tf.transpose(_blank_last(logits, index), [1, 0, 2]),
        tf.cast(logit_lengths, tf.int32),
        beam_width=beam_width,
        top_paths=top_paths,
    )
    paths = [_dense(path) for path in decoded]
    labels = tf.stack(_same_width([dense for dense, _ in paths]), axis=1)
    labels = tf.where(labels >= index, labels + 1, labels)  # PAD (-1) < index stays
    lengths = tf.stack([length for _, length in paths], axis=1)
    return labels, lengths, tf.cast(scores, tf.float32)


def ctc_log_likelihoods(labels, label_lengths, logits, logit_lengths, blank=BLANK):
    """``log p(labelling | logits)`` of ``n`` labellings of each example, summed
    over their alignments (the CTC forward pass): ``labels`` int ``[batch, n,
    max_len]`` padded with ``PAD`` (a decoder's n-best list), ``label_lengths``
    ``[batch, n]``. Returns float32 ``[batch, n]``, ``-inf`` for a labelling
    too long for its example's frames (a repeated label needs a blank frame
    between). For decoding: it runs TensorFlow's native CTC kernel (sparse
    labels, several times faster than :func:`ctc_loss`'s dense-label ops, but
    with no XLA kernel)."""
    logits, num_classes = _float_logits(logits)
    index = _blank_index(blank, num_classes)
    labels = tf.convert_to_tensor(labels, tf.int32)
    label_lengths = tf.convert_to_tensor(label_lengths, tf.int32)
    n = tf.shape(labels)[1]
    flat = tf.reshape(labels, [-1, tf.shape(labels)[2]])
    flat_lengths = tf.reshape(label_lengths, [-1])
    steps = tf.repeat(tf.cast(logit_lengths, tf.int32), n, axis=0)
    inside = tf.range(tf.shape(flat)[1])[None, :] < flat_lengths[:, None]
    repeats = inside[:, 1:] & (flat[:, 1:] == flat[:, :-1])
    fits = flat_lengths + tf.reduce_sum(tf.cast(repeats, tf.int32), axis=1) <= steps
    # The kernel refuses empty labellings: theirs is the all-blank path.
    frames = tf.sequence_mask(logit_lengths, tf.shape(logits)[1])
    all_blank = tf.reduce_sum(tf.where(frames, tf.nn.log_softmax(logits)[..., index], 0.0), axis=1)
    # It fails the whole batch on a labelling that cannot fit, unless told to
    # skip those (they are -inf here); the empty ones get a one-label stand-in.
    moved = tf.where(flat > index, flat - 1, flat)  # ids with the blank last
    stand_in = tf.pad(tf.where(inside, moved, 0), [[0, 0], [0, 1]])
    sparse = tf.RaggedTensor.from_tensor(stand_in, lengths=tf.maximum(flat_lengths, 1)).to_sparse()
    loss = tf.compat.v1.nn.ctc_loss(
        sparse, tf.repeat(_blank_last(logits, index), n, axis=0), steps,
        ignore_longer_outputs_than_inputs=True, time_major=False)
    scores = tf.where(flat_lengths == 0, tf.repeat(all_blank, n, axis=0),
                      tf.where(fits, -loss, -float("inf")))
    return tf.reshape(scores, tf.shape(label_lengths))


def ctc_ensemble_beam_search(scored, beam_width, blank=BLANK):
    """Beam search for several CTC models of one label set at once (seeds or
    variants of one recipe), combined per labelling rather than per frame:
    their frame posteriors need not line up (each model places its label
    spikes where it likes), so averaging them blurs the spikes, whereas the
    probability of a whole labelling is comparable between models. Each model's
    ``beam_width``-best labellings are pooled and every one is scored by the
    mean over the models of :func:`ctc_log_likelihoods` (a product of
    experts over labellings).

    ``scored``: ``[(logits, logit_lengths), ...]``, one pair per model (the
    models may subsample differently). Returns ``(labels, lengths, scores)``
    as :func:`ctc_beam_search_decode` does, with ``len(scored) *
    beam_width`` paths per example, best first (a labelling several models
    found appears once per model)."""
    paths = [ctc_beam_search_decode(logits, lengths, beam_width, beam_width, blank)[:2]
             for logits, lengths in scored]
    labels = tf.concat(_same_width([labels for labels, _ in paths]), axis=1)
    lengths = tf.concat([lengths for _, lengths in paths], axis=1)
    scores = tf.add_n([ctc_log_likelihoods(labels, lengths, logits, steps, blank)
                       for logits, steps in scored]) / len(scored)
    order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
    return (tf.gather(labels, order, batch_dims=1), tf.gather(lengths, order, batch_dims=1),
            tf.gather(scores, order, batch_dims=1))


def ctc_alignment(logits, logit_lengths, blank=BLANK):
    """Frame spans of the greedy (best-path) decoding: for each emitted label,
    the first and last frame of the run of frames whose argmax it is.

    Returns ``(labels, first, last, lengths)``: int32 ``[batch, max_len]`` each
    (padded with -1) and ``[batch]``; ``labels``/``lengths`` equal
    :func:`ctc_greedy_decode`'s. Frame ``f`` covers ``[f * hop, (f + 1) * hop)``
    of the input for a model emitting one frame per ``hop``. Blank frames
    between labels belong to no label.
    """
    logits, num_classes = _float_logits(logits)
    index = _blank_index(blank, num_classes)
    best = tf.argmax(logits, axis=-1, output_type=tf.int32)  # [B, T]
    steps = tf.shape(best)[1]
    frames = tf.broadcast_to(tf.range(steps)[None, :], tf.shape(best))
    real = frames < tf.cast(logit_lengths, tf.int32)[:, None]
    pad_column = tf.fill([tf.shape(best)[0], 1], PAD)
    before = tf.concat([pad_column, best[:, :-1]], axis=1)
    after = tf.concat([best[:, 1:], pad_column], axis=1)
    after_real = tf.concat([real[:, 1:], tf.zeros_like(real[:, :1])], axis=1)
    emitting = real & (best != index)
    starts = emitting & (best != before)  # the first frame of a run
    ends = emitting & ((best != after) | ~after_real)  # the last real frame of a run

    def packed(values, mask):
        return tf.ragged.boolean_mask(values, mask).to_tensor(default_value=PAD)

    labels = packed(best, starts)
    return (labels, packed(frames, starts), packed(frames, ends),
            tf.reduce_sum(tf.cast(starts, tf.int32), axis=1))
