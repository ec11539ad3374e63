"""A tiny app for the core's tests: is the sum of a random sequence positive?

Exercises the whole App interface on generated data (a few dozen sequences,
an LSTM of 8 units) so that trainer, export and CLI tests run in seconds.
Registered in tests through the ``toy_app`` fixture, never in pyproject.
"""

import json
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from lstm_core import apps
from lstm_core.apps import App
from lstm_core.data import make_dataset
from lstm_core.recipes import Field

LABELS = ["negative", "positive"]


def sequences(seed, count, max_length):
    """``count`` random sequences of 2..max_length values and their labels."""
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=rng.integers(2, max_length + 1)).astype("float32") for _ in range(count)]
    return xs, [int(x.sum() > 0) for x in xs]


def pad(xs):
    """Zero-padded ``[batch, time, 1]`` (zeros are masked)."""
    out = np.zeros((len(xs), max(len(x) for x in xs), 1), "float32")
    for row, x in enumerate(xs):
        out[row, :len(x), 0] = x
    return out


class ToyServing(tf.Module):
    """Reads its label names from an asset file at serving time, as an app
    reads a subword model: the export must carry the file along."""

    def __init__(self, model, labels_file):
        super().__init__()
        self.model = model
        self.labels_file = tf.saved_model.Asset(str(labels_file))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="values")])
    def serving_default(self, values):
        labels = tf.strings.split(tf.strings.strip(tf.io.read_file(self.labels_file)), "\n")
        probabilities = tf.cast(self.model(values[..., None], training=False), tf.float32)
        return {"probabilities": probabilities,
                "labels": tf.gather(labels, tf.argmax(probabilities, -1))}


def draw(probabilities, path):
    """A bar per sequence: its probability of being positive."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 2))
    figure.subplots().bar(range(len(probabilities)), probabilities)
    figure.savefig(path)


class ToyApp(App):
    name = "toy"
    metric = "accuracy"
    data_schema = {
        "size": Field(int, 48, min=1, doc="training sequences"),
        "dev_size": Field(int, 16, min=1, doc="dev sequences"),
        "max_length": Field(int, 6, min=2, doc="longest sequence"),
        "nan_from_batch": Field((int, type(None)), None, doc="training batches from this index "
                                                             "on are NaN (to test NaN handling)"),
        "extra_file": Field((str, type(None)), None, data_file=True,
                            doc="a JSON-lines test set scored at the end, if given"),
        "dev_score": Field(str, "accuracy", choices=["accuracy", "loss"],
                           doc="what picks the best epoch: the metric, or the dev loss"),
        "labels": Field(list, LABELS, items=str,
                        doc="the output classes, by name (a fine-tune may reorder, add or drop "
                            "some); the data's are negative and positive"),
    }
    model_schema = {"units": Field(int, 8, min=1, doc="LSTM units")}
    decode_schema = {"threshold": Field(float, 0.5, min=0, max=1,
                                        doc="probability above which a sequence is positive")}
    # Stands in for tensorflow_text and the like: a module the export check
    # must import (one TensorFlow itself never imports).
    serving_imports = ("wave",)

    def dev_metric(self, config):
        return "" if config["data"]["dev_score"] == "loss" else self.metric

    def build_assets(self, config, data_root, folder):
        labels = config["data"]["labels"]
        (Path(folder) / "labels.txt").write_text("".join(label + "\n" for label in labels))
        return {"labels": labels}

    def finetune_assets(self, config, data_root, folder, previous):
        return self.build_assets(config, data_root, folder)

    def vocabularies(self, assets):
        return {"labels": assets["labels"]}

    def vocabulary_axes(self, model):
        output = model.get_layer("output")
        return [(output.kernel, (None, "labels")), (output.bias, ("labels",))]

    def build_data(self, config, data_root, assets):
        data, seed, batch = config["data"], config["train"]["seed"], config["train"]["batch_size"]
        labels = (assets or {"labels": LABELS})["labels"]  # unit tests pass None
        split = {}
        for name, count, offset in (("train", data["size"], 0), ("dev", data["dev_size"], 1000)):
            xs, ys = sequences(seed + offset, count, data["max_length"])
            ids = [labels.index(LABELS[y]) for y in ys]  # in the model's order of labels
            split[name] = make_dataset([(x[:, None], y) for x, y in zip(xs, ids)], batch_size=batch,
                                       length=lambda x, y: tf.shape(x)[0], shuffle=name == "train",
                                       seed=seed, num_buckets=2)
        train = split["train"]
        if data["nan_from_batch"] is not None:
            start = data["nan_from_batch"]
            train = train.enumerate().map(
                lambda i, xy: (tf.where(i >= start, xy[0] * np.nan, xy[0]), xy[1]))
        return train, split["dev"]

    def build_model(self, config, assets):
        inputs = keras.Input((None, 1), name="values")
        h = keras.layers.Masking(0.0)(inputs)
        h = keras.layers.Dense(4, activation="tanh", name="project")(h)
        h = keras.layers.LSTM(config["model"]["units"], name="lstm")(h)
        outputs = keras.layers.Dense(len(assets["labels"]), activation="softmax", dtype="float32",
                                     name="output")(h)
        return keras.Model(inputs, outputs)

    def loss(self, config):
        return "sparse_categorical_crossentropy"

    def read(self, path):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        return [np.asarray(r["values"], "float32") for r in rows], [r.get("label") for r in rows]

    def evaluate(self, model, config, data_root, assets, path=None, final=False, figure=None):
        if path is None:
            xs, ys = sequences(config["train"]["seed"] + 1000, config["data"]["dev_size"],
                               config["data"]["max_length"])
        else:
            xs, ys = self.read(path)
        positive = (assets or {"labels": LABELS})["labels"].index("positive")  # unit tests pass None
        probabilities = np.asarray(model(pad(xs), training=False))[:, positive]
        predicted = probabilities > config["decode"]["threshold"]
        accuracy = float(np.mean(predicted == np.asarray(ys)))
        if figure is not None:
            draw(probabilities, figure)
        return {"accuracy": accuracy, "report": f"accuracy {accuracy:.3f} on {len(xs)} sequences"}

    def test_sets(self, config):
        extra = config["data"]["extra_file"]
        return {"test": extra} if extra else {}

    def predict(self, model, config, assets, input_path, output_path=None):
        xs, _ = self.read(input_path)
        module = self.serving_module(model, config, assets)  # kept: tf.function holds it weakly
        labels = module.serving_default(pad(xs)[..., 0])["labels"]
        text = "".join(label.decode() + "\n" for label in labels.numpy())
        if output_path is None:
            print(text, end="")
        else:
            Path(output_path).write_text(text)

    def serving_module(self, model, config, assets):
        return ToyServing(model, assets.file("labels.txt"))

    def serving_example(self, assets):
        return {"values": [[0.5, -1.0, 2.0], [-1.0, -0.5, 0.0]]}


class ScriptedToyApp(ToyApp):
    """The toy with a lower-is-better dev metric, ``error``, whose value at
    each training epoch is scripted (``data.script``), to follow best-model,
    early-stopping and plateau decisions exactly."""

    metric = "error"
    metric_mode = "min"
    data_schema = {**ToyApp.data_schema,
                   "script": Field(list, [], items=float, doc="dev error of each epoch")}

    def __init__(self):
        self.epochs_scored = 0

    def evaluate(self, model, config, data_root, assets, path=None, final=False, figure=None):
        scores = super().evaluate(model, config, data_root, assets, path, final, figure)
        if final:
            return {**scores, "error": 1 - scores["accuracy"]}
        self.epochs_scored += 1
        return {**scores, "error": config["data"]["script"][self.epochs_scored - 1]}


class _EntryPoint:
    def __init__(self, app_class=ToyApp):
        self.app_class = app_class

    def load(self):
        return self.app_class


@pytest.fixture
def toy_app(monkeypatch):
    """Make ``app: toy`` resolvable, as an installed app would be."""
    monkeypatch.setattr(apps, "_entry_points", lambda: {"toy": _EntryPoint()})
    return ToyApp()


@pytest.fixture
def scripted_toy_app(monkeypatch):
    """``app: toy`` as :class:`ScriptedToyApp`."""
    monkeypatch.setattr(apps, "_entry_points", lambda: {"toy": _EntryPoint(ScriptedToyApp)})
    return ScriptedToyApp()


RECIPE = """\
# Toy: is a random sequence's sum positive? (tests only)
app: toy
data:
  size: 48
  dev_size: 16
model:
  units: 8
train:
  epochs: 2
  batch_size: 16
  optimizer:
    learning_rate: 0.01
"""


def write_recipe(folder, text=RECIPE, name="toy.yaml"):
    """A recipe file in ``folder``; ``text`` may be indented (dedented here)."""
    path = Path(folder) / name
    path.write_text(textwrap.dedent(text))
    return path


def toy_config(folder, *overrides):
    """The validated config of the toy recipe with ``--set``-style overrides."""
    from lstm_core.cli import load_config

    app, config, root, _ = load_config(write_recipe(folder), overrides, str(folder))
    return app, config, root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 2-epoch toy run (trained once per test module; read only)."""
    from lstm_core.trainer import train

    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(apps, "_entry_points", lambda: {"toy": _EntryPoint()})
        app, config, root = toy_config(folder)
        train(app, config, folder / "run", root, quiet=True)
    return folder / "run"
