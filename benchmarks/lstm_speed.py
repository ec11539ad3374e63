"""Training and inference throughput of LSTM implementations, side by side.

Compares, in one process and alternating between implementations each round
(a shared machine drifts by tens of percent between runs, so only ratios
measured side by side mean anything):

* ``peephole_lstm``: lstm_core.PeepholeLSTM with peepholes and cell clipping
  (fast path, XLA);
* ``keras_lstm``: keras.layers.LSTM, plain tf.function (what Keras gives on a
  CPU: jit_compile="auto" resolves to False there);
* ``naive_rnn``: keras.layers.RNN(PeepholeLSTMCell), the generic loop, the
  same way;
* ``keras_lstm_xla``, ``naive_rnn_xla``: the same two with XLA;
* ``torch_lstm``: torch.nn.LSTM, when torch is installed;
* ``matmul_floor``: not an LSTM but the matrix products of one (with XLA),
  timed alone: the floor for any float32 LSTM built on XLA's kernels.

Training = forward + backward + SGD update of a return_sequences layer with a
mean-square loss. Prints one table of sequences/s and the ratios; ``--json``
also writes the figures to a file.

    python benchmarks/lstm_speed.py [--rounds 5] [--steps 5] [--quick]
"""

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from lstm_core import PeepholeLSTM, PeepholeLSTMCell  # noqa: E402

SHAPES = [  # batch, steps, inputs, units
    (32, 100, 80, 256),
    (64, 50, 300, 512),
]


def keras_runner(layer, jit, batch, steps, inputs):
    """Train and infer functions for a Keras layer, compiled once."""
    x = tf.random.normal((batch, steps, inputs))
    layer.build(x.shape)
    weights = layer.trainable_weights
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(weights)

    @tf.function(jit_compile=jit)
    def train(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x, training=True)))
        optimizer.apply(tape.gradient(loss, weights), weights)
        return loss

    @tf.function(jit_compile=jit)
    def infer(x):
        return layer(x, training=False)

    return (lambda: train(x).numpy()), (lambda: infer(x).numpy())


def torch_runner(batch, steps, inputs, units):
    import torch

    torch.set_num_threads(os.cpu_count())
    lstm = torch.nn.LSTM(inputs, units, batch_first=True)
    optimizer = torch.optim.SGD(lstm.parameters(), lr=1e-3)
    x = torch.randn(batch, steps, inputs)

    def train():
        optimizer.zero_grad()
        loss = lstm(x)[0].square().mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    def infer():
        with torch.no_grad():
            return lstm(x)[0].sum().item()

    return train, infer


def matmul_floor_runner(batch, steps, inputs, units):
    """The matrix products an LSTM training step needs, and nothing else:
    ``x W``; ``h U`` step by step (each step's ``h`` is a slice of the last
    product, so the steps run in order as in an LSTM); ``dz U^T`` step by
    step; the weight gradients ``H^T dZ`` and ``X^T dZ``, applied by SGD as
    in the other runners (so XLA cannot drop any part of a product).
    Inference: the first two."""
    x = tf.random.normal((steps * batch, inputs))
    w = tf.Variable(tf.random.normal((inputs, 4 * units), stddev=0.05))
    u = tf.Variable(tf.random.normal((units, 4 * units), stddev=0.05))

    def forward(x):
        xz = tf.reshape(tf.matmul(x, w), [steps, batch, 4 * units])

        def step(t, h, zs):
            z = tf.matmul(h, u)
            return t + 1, z[:, :units], zs.write(t, z)

        _, _, zs = tf.while_loop(lambda t, *_: t < steps, step, (
            0, tf.zeros([batch, units]), tf.TensorArray(tf.float32, steps)))
        return zs.stack() + xz

    @tf.function(jit_compile=True)
    def train(x):
        dz = forward(x)  # stands in for the gates' gradient

        def step(t, dhs):
            return t - 1, dhs.write(t, tf.matmul(dz[t], u, transpose_b=True))

        _, dhs = tf.while_loop(lambda t, *_: t >= 0, step, (
            steps - 1, tf.TensorArray(tf.float32, steps)))
        dz = tf.reshape(dz, [-1, 4 * units])
        u.assign_sub(1e-3 * tf.matmul(tf.reshape(dhs.stack(), [-1, units]), dz, transpose_a=True))
        w.assign_sub(1e-3 * tf.matmul(x, dz, transpose_a=True))
        return dz[0, 0]

    infer = tf.function(forward, jit_compile=True)
    return (lambda: train(x).numpy()), (lambda: infer(x).numpy())


def implementations(batch, steps, inputs, units):
    peephole = dict(use_peepholes=True, cell_clip=3.0)
    runners = {
        "peephole_lstm": keras_runner(
            PeepholeLSTM(units, return_sequences=True, **peephole), True, batch, steps, inputs),
    }
    for suffix, jit in (("", False), ("_xla", True)):
        runners["keras_lstm" + suffix] = keras_runner(
            keras.layers.LSTM(units, return_sequences=True), jit, batch, steps, inputs)
        runners["naive_rnn" + suffix] = keras_runner(
            keras.layers.RNN(PeepholeLSTMCell(units, **peephole), return_sequences=True),
            jit, batch, steps, inputs)
    try:
        runners["torch_lstm"] = torch_runner(batch, steps, inputs, units)
    except ImportError:
        pass
    runners["matmul_floor"] = matmul_floor_runner(batch, steps, inputs, units)
    return runners


def measure(runners, batch, rounds, steps_per_round):
    """Median sequences/s per implementation and mode, alternating each round."""
    times = {(name, mode): [] for name in runners for mode in ("train", "infer")}
    for name, (train, infer) in runners.items():  # compile and warm up
        train(), train(), infer(), infer()
    for _ in range(rounds):
        for name, (train, infer) in runners.items():
            for mode, run in (("train", train), ("infer", infer)):
                start = time.perf_counter()
                for _ in range(steps_per_round):
                    run()
                times[(name, mode)].append(steps_per_round * batch / (time.perf_counter() - start))
    return {key: statistics.median(values) for key, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps timed per round")
    parser.add_argument("--quick", action="store_true", help="first shape only, 2 rounds")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    shapes = SHAPES[:1] if args.quick else SHAPES
    rounds = 2 if args.quick else args.rounds

    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}, "
          f"median of {rounds} alternating rounds x {args.steps} steps, float32, CPU")
    results = []
    for batch, steps, inputs, units in shapes:
        rates = measure(implementations(batch, steps, inputs, units), batch, rounds, args.steps)
        shape = f"B={batch} T={steps} in={inputs} units={units}"
        print(f"\n## {shape}")
        print(f"{'implementation':<16}{'train seq/s':>14}{'infer seq/s':>14}"
              f"{'train ratio':>14}{'infer ratio':>14}")
        ours = {mode: rates[("peephole_lstm", mode)] for mode in ("train", "infer")}
        names = sorted({name for name, _ in rates}, key=list(dict.fromkeys(n for n, _ in rates)).index)
        for name in names:
            train, infer = rates[(name, "train")], rates[(name, "infer")]
            print(f"{name:<16}{train:>14.1f}{infer:>14.1f}"
                  f"{ours['train'] / train:>13.2f}x{ours['infer'] / infer:>13.2f}x")
        print("(ratio = peephole_lstm / implementation: above 1 means ours is faster)")
        budget, floor = (1000 * batch / rate for rate in (
            2 * rates[("naive_rnn", "train")], rates[("matmul_floor", "train")]))
        print(f"2x naive_rnn's training throughput = {budget:.1f} ms per batch; "
              f"the matrix products alone take {floor:.1f} ms")
        results.append({"shape": shape, "rates": {f"{n}/{m}": r for (n, m), r in rates.items()}})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
