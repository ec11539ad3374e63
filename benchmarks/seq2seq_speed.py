"""Speed of the attentional decoder with and without XLA, side by side.

Teacher forcing (forward + backward + SGD update of an AttentionDecoder over
embedded targets, with dropout) with and without input feeding, and batched
beam search with the decoder cell, each as a plain ``tf.function`` and with
``jit_compile=True``. Implementations alternate each round (the shared
machine drifts between runs, so only ratios measured side by side mean
anything); prints the median target tokens/s (training) and sentences/s
(beam search), per second of wall-clock and of CPU time.

    python benchmarks/seq2seq_speed.py [--rounds 5] [--steps 5] [--batch 32]
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from lstm_core.beam_search import beam_search, relative_max_lengths, tile_beams  # noqa: E402
from lstm_core.decoder import AttentionDecoder, AttentionDecoderCell  # noqa: E402

SOURCE, TARGET, FEATURES, UNITS, LAYERS, VOCAB, BEAM = 20, 20, 64, 128, 2, 1000, 5
CELL = dict(units=UNITS, num_layers=LAYERS, attention="general", dropout=0.2,
            cell_options=dict(cell_clip=3.0))


def training_runner(batch, input_feeding, jit):
    decoder = AttentionDecoder(AttentionDecoderCell(**CELL, input_feeding=input_feeding))
    targets = tf.random.normal((batch, TARGET, FEATURES))
    memory = tf.random.normal((batch, SOURCE, 2 * UNITS))
    decoder.build(targets.shape, memory.shape)
    project = keras.layers.Dense(VOCAB)
    project.build((None, UNITS))
    labels = tf.random.uniform((batch, TARGET), 0, VOCAB, tf.int32)
    weights = decoder.trainable_weights + project.trainable_weights
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(weights)

    @tf.function(jit_compile=jit)
    def train(targets, memory):
        with tf.GradientTape() as tape:
            outputs, _ = decoder(targets, memory, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, project(outputs)))
        optimizer.apply(tape.gradient(loss, weights), weights)
        return loss

    return lambda: train(targets, memory).numpy(), batch * TARGET


def beam_runner(batch, jit):
    cell = AttentionDecoderCell(**CELL)
    cell.build((None, FEATURES), (None, None, 2 * UNITS))
    embed, project = keras.layers.Embedding(VOCAB, FEATURES), keras.layers.Dense(VOCAB)
    embed.build((None,))
    project.build((None, UNITS))
    memory = tf.random.normal((batch, SOURCE, 2 * UNITS))
    lengths = tf.fill([batch], SOURCE)

    @tf.function(jit_compile=jit)
    def decode(memory, lengths):
        mask = tf.sequence_mask(lengths, tf.shape(memory)[1])
        prepared = cell.prepare_memory(tile_beams(memory, BEAM), tile_beams(mask, BEAM))

        def step(ids, state):
            outputs, _, state = cell(embed(ids), state, prepared)
            return tf.nn.log_softmax(project(outputs)), state

        return beam_search(step, tile_beams(cell.get_initial_state(batch), BEAM), start_id=1,
                           end_id=2, max_lengths=relative_max_lengths(lengths, 1.0, 5),
                           beam_width=BEAM, length_penalty=0.6, max_length=SOURCE + 5).ids

    # Random weights rarely produce the end id: every search runs all steps.
    return lambda: decode(memory, lengths).numpy(), batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="calls timed per round")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    runners = {}
    for jit in (False, True):
        suffix = "xla" if jit else "graph"
        runners[f"train input feeding, {suffix} (tokens/s)"] = training_runner(args.batch, True, jit)
        runners[f"train no feeding, {suffix} (tokens/s)"] = training_runner(args.batch, False, jit)
        runners[f"beam {BEAM}, {suffix} (sentences/s)"] = beam_runner(args.batch, jit)
    # Wall-clock rates, and rates per second of this process's CPU time: on
    # a machine shared with other jobs the second is the steadier figure.
    rates = {(name, clock): [] for name in runners for clock in ("wall", "cpu")}
    for run, _ in runners.values():  # compile and warm up
        run(), run()
    for _ in range(args.rounds):
        for name, (run, items) in runners.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                run()
            rates[(name, "wall")].append(args.steps * items / (time.perf_counter() - wall))
            rates[(name, "cpu")].append(args.steps * items / (time.process_time() - cpu))
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}; batch "
          f"{args.batch}, source/target {SOURCE}/{TARGET}, {LAYERS}x{UNITS} peephole LSTM, "
          f"vocabulary {VOCAB}; median of {args.rounds} rounds x {args.steps} calls")
    print(f"{'':<44}{'per s':>10}{'per CPU s':>12}")
    for name in runners:
        print(f"{name:<44}{statistics.median(rates[(name, 'wall')]):>10.0f}"
              f"{statistics.median(rates[(name, 'cpu')]):>12.0f}")


if __name__ == "__main__":
    main()
