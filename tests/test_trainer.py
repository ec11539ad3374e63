"""The trainer on the toy app: the run directory, resuming after a kill,
NaN handling, early stopping, optimizers and schedules, precision and XLA."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from lstm_core import apps, runs, trainer
from lstm_core.errors import UserError
from lstm_core.recipes import RecipeError, read_config
from tests.toy_app import (  # noqa: F401
    ScriptedToyApp, ToyApp, _EntryPoint, pad, scripted_toy_app, sequences, toy_app, toy_config,
    trained_run, write_recipe)

ROOT = Path(__file__).resolve().parents[1]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def is_png(path, size):
    """Whether ``path`` is a whole PNG image of ``size`` (width, height) pixels."""
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (width, height) == size


def checkpoint_names(run):
    return [p.name for p in runs.checkpoints(run)]


def steps_per_epoch(app, config, root, folder):
    return int(app.build_data(config, root, app.build_assets(config, root, folder))[0].cardinality())


def test_a_run_writes_its_directory(trained_run, toy_app, tmp_path, capsys):
    run = trained_run
    for name in ("recipe.yaml", "assets.json", "best.keras", "report.txt", "result.json",
                 "plots/loss.png", "plots/dev_accuracy.png"):
        assert (run / name).is_file(), name
    # each epoch's dev pass drew the toy's figure: a bar per dev sequence
    drawn = sorted(p.name for p in (run / "figures").glob("dev-epoch-*"))
    assert drawn == ["dev-epoch-001.png", "dev-epoch-002.png"]
    for name in drawn:
        assert is_png(run / "figures" / name, size=(300, 200))
    assert any((run / "logs").rglob("events.out.tfevents*"))
    assert checkpoint_names(run) == ["ckpt-0001-0000000", "ckpt-0002-0000000"]
    assert not list(run.rglob(".tmp-*"))
    lines = records(run)
    assert [r["epoch"] for r in lines] == [1, 2]
    for record in lines:
        assert {"epoch", "step", "loss", "dev_accuracy", "learning_rate", "seconds"} <= set(record)
    result = json.loads((run / "result.json").read_text())
    assert result["best"]["dev_accuracy"] == max(r["dev_accuracy"] for r in lines)
    assert "accuracy" in (run / "report.txt").read_text()

    # load_run gives the best model, as best.keras holds it
    app, config, assets, model = runs.load_run(run)
    assert config == read_config(run / "recipe.yaml") and assets == {"labels": ["negative", "positive"]}
    x = pad([np.array([0.5, -1.0, 2.0]), np.array([-1.0, 0.2])])
    np.testing.assert_allclose(model(x), keras.saving.load_model(run / "best.keras")(x), atol=1e-6)

    # a finished run is reported complete; a changed recipe is refused
    app, config, root = toy_config(tmp_path)
    assert trainer.train(app, config, run, root) == result
    assert "already complete" in capsys.readouterr().out
    _, changed, _ = toy_config(tmp_path, "train.seed=2")
    with pytest.raises(UserError, match=r"different recipe; changed: train\.seed: 1 -> 2 \("):
        trainer.train(app, changed, run, root, quiet=True)


CHILD = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from lstm_core import apps
from tests import toy_app
apps._entry_points = lambda: {{"toy": toy_app._EntryPoint()}}
from lstm_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    recipe = write_recipe(tmp_path)
    run = tmp_path / "run"
    command = [sys.executable, "-c", CHILD, "train", str(recipe), "--run-dir", str(run), "--quiet",
               "--set", "train.epochs=3", "--set", "data.size=160"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("ckpt-0001-*")) and child.poll() is None:
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (run / "result.json").exists(), "the run finished before it could be killed"
    first_epoch = records(run)[0]

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    lines = records(run)
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert lines[0] == first_epoch  # epoch 1 was not trained again
    assert json.loads((run / "result.json").read_text())["epochs"] == 3


def test_a_finished_run_given_more_epochs_trains_on_as_one_longer_run(tmp_path, toy_app, capsys):
    app, two, root = toy_config(tmp_path, "train.reduce_on_plateau.enabled=true")
    _, three, _ = toy_config(tmp_path, "train.reduce_on_plateau.enabled=true", "train.epochs=3")
    trainer.train(app, two, tmp_path / "run", root, quiet=True)
    first = records(tmp_path / "run")
    result = trainer.train(app, three, tmp_path / "run", root)
    assert "resuming" in capsys.readouterr().out
    lines = records(tmp_path / "run")
    assert [r["epoch"] for r in lines] == [1, 2, 3] and lines[:2] == first and result["epochs"] == 3
    assert read_config(tmp_path / "run" / "recipe.yaml")["train"]["epochs"] == 3
    assert json.loads((tmp_path / "run" / "result.json").read_text()) == result
    # as a run of 3 epochs from the start: the step count and the learning
    # rate carry on (only the data order differs, as after any resume: a
    # process's first epoch shuffles as the first run's did)
    trainer.train(app, three, tmp_path / "straight", root, quiet=True)
    straight = records(tmp_path / "straight")
    assert [(r["step"], r["learning_rate"]) for r in lines] == [
        (r["step"], r["learning_rate"]) for r in straight]
    assert lines[2]["loss"] == pytest.approx(straight[2]["loss"], rel=0.01)
    # and the recorded recipe is the one it is now at: 3 again is complete
    assert trainer.train(app, three, tmp_path / "run", root) == result
    assert "already complete (3 epochs)" in capsys.readouterr().out


def test_a_run_early_stopping_ended_stays_ended_when_given_more_epochs(tmp_path, toy_app, capsys):
    flat = ["train.optimizer.name=sgd", "train.optimizer.learning_rate=1e-9",
            "train.early_stopping.patience=1"]
    app, config, root = toy_config(tmp_path, "train.epochs=4", *flat)
    result = trainer.train(app, config, tmp_path / "run", root, quiet=True)
    assert result["epochs"] == 2
    _, more, _ = toy_config(tmp_path, "train.epochs=8", *flat)
    assert trainer.train(app, more, tmp_path / "run", root) == result
    assert "already complete (early stopping ended it after 2 of 4 epochs)" in capsys.readouterr().out
    assert read_config(tmp_path / "run" / "recipe.yaml")["train"]["epochs"] == 4


def test_an_interrupted_epoch_resumes_at_its_last_step(tmp_path, toy_app, monkeypatch):
    app, config, root = toy_config(tmp_path, "train.epochs=3", "train.checkpoint_every_steps=2")
    run = tmp_path / "run"
    save = trainer.Recorder.save_checkpoint

    def save_then_interrupt(self, epoch, step, best=False):
        save(self, epoch, step, best)
        if (epoch, step) == (1, 2):
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Recorder, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(app, config, run, root, quiet=True)
    assert checkpoint_names(run)[-1] == "ckpt-0001-0000002"
    monkeypatch.setattr(trainer.Recorder, "save_checkpoint", save)

    saved = []
    monkeypatch.setattr(trainer.Recorder, "save_checkpoint",
                        lambda self, epoch, step, best=False:
                        saved.append((epoch, step)) or save(self, epoch, step, best))
    result = trainer.train(app, config, run, root, quiet=True)
    assert [r["epoch"] for r in records(run)] == [1, 2, 3]
    # every step done exactly once: none lost, none repeated
    steps = steps_per_epoch(app, config, root, tmp_path)
    assert result["last"]["step"] == 3 * steps
    # An epoch's last step gets the epoch-end checkpoint only: one taken
    # mid-epoch there would resume into an empty epoch.
    assert saved == [(1, step) for step in range(4, steps, 2)] + [(2, 0)] + \
        [(2, step) for step in range(2, steps, 2)] + [(3, 0)]


def test_an_epoch_killed_before_its_first_checkpoint_is_not_recorded_twice(tmp_path, toy_app,
                                                                            monkeypatch):
    app, config, root = toy_config(tmp_path, "train.epochs=2")
    run = tmp_path / "run"

    def interrupt(self, epoch, step, best=False):  # killed after metrics.jsonl got epoch 1's line
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer.Recorder, "save_checkpoint", interrupt)
        with pytest.raises(KeyboardInterrupt):
            trainer.train(app, config, run, root, quiet=True)
    assert [r["epoch"] for r in records(run)] == [1] and not checkpoint_names(run)
    trainer.train(app, config, run, root, quiet=True)
    assert [r["epoch"] for r in records(run)] == [1, 2]


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path, toy_app, monkeypatch):
    app, config, root = toy_config(tmp_path, "train.epochs=2")
    run = tmp_path / "run"
    append = trainer.append_record

    def append_half(run_dir, record):  # killed while writing epoch 2's line
        if record["epoch"] == 2:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record)[:20])
            raise KeyboardInterrupt
        append(run_dir, record)

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "append_record", append_half)
        with pytest.raises(KeyboardInterrupt):
            trainer.train(app, config, run, root, quiet=True)
    assert not (run / "metrics.jsonl").read_text().endswith("\n")
    trainer.train(app, config, run, root, quiet=True)
    assert [r["epoch"] for r in records(run)] == [1, 2]


def test_a_best_model_checkpointed_but_not_yet_published_is_published_on_resume(tmp_path, toy_app,
                                                                                 monkeypatch):
    app, config, root = toy_config(tmp_path, "train.epochs=1")
    run = tmp_path / "run"
    def killed(checkpoint, run_dir):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(runs, "publish_best", killed)
        with pytest.raises(KeyboardInterrupt):
            trainer.train(app, config, run, root, quiet=True)
    checkpoint = run / "checkpoints" / "ckpt-0001-0000000"
    assert (checkpoint / "best.keras").is_file() and not (run / "best.keras").exists()
    trainer.train(app, config, run, root, quiet=True)  # nothing left to train: publishes, scores
    assert (run / "best.keras").read_bytes() == (checkpoint / "best.keras").read_bytes()
    assert (run / "report.txt").read_text().startswith((checkpoint / "report.txt").read_text())


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, toy_app):
    app, config, root = toy_config(tmp_path, "data.nan_from_batch=2", "train.checkpoint_every_steps=1")
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"loss became NaN at epoch 1 step 3; the last good "
                                        r"checkpoint is kept in .*ckpt-0000-0000002"):
        trainer.train(app, config, run, root, quiet=True)
    assert checkpoint_names(run) == ["ckpt-0000-0000001", "ckpt-0000-0000002"]
    model = app.build_model(config, {"labels": ["a", "b"]})
    model.load_weights(run / "checkpoints" / "ckpt-0000-0000002" / "state.weights.h5")
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert not (run / "best.keras").exists() and not (run / "result.json").exists()


def test_early_stopping_plateau_and_test_sets(tmp_path, toy_app):
    # a rate too small to change anything: dev accuracy stays flat
    (tmp_path / "test.jsonl").write_text('{"values": [1.0, 2.0], "label": 1}\n')
    app, config, root = toy_config(
        tmp_path, "train.epochs=6", "train.optimizer.name=sgd", "train.optimizer.learning_rate=1e-9",
        "train.early_stopping.patience=2", "train.reduce_on_plateau.enabled=true",
        "train.reduce_on_plateau.patience=1", "train.reduce_on_plateau.factor=0.5",
        "data.extra_file=test.jsonl")
    result = trainer.train(app, config, tmp_path / "run", root, quiet=True)
    lines = records(tmp_path / "run")
    assert [r["epoch"] for r in lines] == [1, 2, 3] and result["epochs"] == 3
    assert lines[1]["learning_rate"] == pytest.approx(0.5e-9)
    # the app's test sets are scored once, at the end, with the best model
    assert set(result["test"]["test"]) == {"accuracy"}
    assert "== test: " in (tmp_path / "run" / "report.txt").read_text()
    assert sorted(os.listdir(tmp_path / "run" / "figures")) == [
        "dev-epoch-001.png", "dev-epoch-002.png", "dev-epoch-003.png", "test-test.png"]


def test_only_the_chief_scores_dev_and_draws(tmp_path, toy_app):
    class Refusing(ToyApp):
        def evaluate(self, *args, **kwargs):
            raise AssertionError("a worker that is not the chief evaluated")

    app, config, root = toy_config(tmp_path)
    worker = SimpleNamespace(extended=SimpleNamespace(should_checkpoint=False))  # not the chief
    run = tmp_path / "worker"
    run.mkdir()
    assert trainer.DevMonitor(Refusing(), config, root, None, run, None, worker).score(0) == {}
    assert not list(run.iterdir())
    chief = SimpleNamespace(extended=SimpleNamespace(should_checkpoint=True))
    model = app.build_model(config, {"labels": ["negative", "positive"]})
    monitor = trainer.DevMonitor(app, config, root, None, run, None, chief)
    monitor.set_model(model)
    assert set(monitor.score(4)) == {"accuracy", "report"}
    assert os.listdir(run) == ["figures"] and os.listdir(run / "figures") == ["dev-epoch-005.png"]


def train_config(tmp_path, *overrides):
    return toy_config(tmp_path, *overrides)[1]["train"]


@pytest.mark.parametrize("name, cls, option", [
    ("adam", keras.optimizers.Adam, ("beta_1", 0.8)),
    ("adamw", keras.optimizers.AdamW, ("weight_decay", 0.01)),
    ("sgd", keras.optimizers.SGD, ("momentum", 0.9)),
])
def test_optimizers(tmp_path, toy_app, name, cls, option):
    train = train_config(tmp_path, f"train.optimizer.name={name}", f"train.optimizer.{option[0]}={option[1]}",
                         "train.clip_norm=1.0")
    optimizer = trainer.make_optimizer(train)
    assert type(optimizer) is cls
    assert getattr(optimizer, option[0]) == pytest.approx(option[1])
    assert optimizer.global_clipnorm == 1.0


LR = 0.1


@pytest.mark.parametrize("overrides, expected", [
    ([], {0: LR, 1000: LR}),
    (["name=exponential", "decay_steps=10", "decay_rate=0.5"], {0: LR, 10: LR / 2, 20: LR / 4}),
    (["name=step", "boundaries=[5, 10]"], {4: LR, 6: LR / 10, 11: LR / 100}),
    (["name=step", "boundaries=[5]", "values=[0.3, 0.2]"], {4: 0.3, 6: 0.2}),
    (["name=step", "step_size=5", "factor=0.5"], {4: LR, 5: LR / 2, 10: LR / 4}),
    (["name=cosine", "decay_steps=10"], {0: LR, 5: LR / 2, 10: 0.0}),
    (["warmup_steps=4"], {0: LR / 4, 1: LR / 2, 3: LR, 100: LR}),
    (["name=exponential", "decay_steps=10", "decay_rate=0.5", "warmup_steps=4"],
     {0: LR / 4, 3: LR, 14: LR / 2}),
])
def test_schedules(tmp_path, toy_app, overrides, expected):
    train = train_config(tmp_path, f"train.optimizer.learning_rate={LR}",
                         *[f"train.schedule.{o}" for o in overrides])
    rate = trainer.make_schedule(train)
    for step, value in expected.items():
        assert float(rate(step) if callable(rate) else rate) == pytest.approx(value, rel=1e-5), step


@pytest.mark.parametrize("overrides, message", [
    (["train.schedule.name=step"], "needs boundaries (with optional values) or step_size"),
    (["train.schedule.name=step", "train.schedule.boundaries=[5]", "train.schedule.values=[1.0]"],
     "need 2 rates"),
    (["train.schedule.name=step", "train.schedule.boundaries=[5,5]"], "must increase, got [5, 5]"),
    (["train.schedule.name=step", "train.schedule.step_size=5", "train.schedule.values=[1.0]"],
     "boundaries (with optional values)"),
    (["train.reduce_on_plateau.factor=1.0"], "reduce_on_plateau.factor"),
    (["train.seed=-1"], "train.seed"),
    (["train.schedule.warmup_steps=3", "train.reduce_on_plateau.enabled=true"], "reduce_on_plateau"),
])
def test_schedule_mistakes_are_recipe_errors(tmp_path, toy_app, overrides, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        trainer.make_schedule(train_config(tmp_path, *overrides))


def test_warmup_schedule_serializes(tmp_path, toy_app):
    rate = trainer.make_schedule(train_config(tmp_path, "train.schedule.name=exponential",
                                              "train.schedule.warmup_steps=4"))
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(rate))
    assert float(again(7)) == pytest.approx(float(rate(7)))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """Losses of a one-epoch float32 toy run without XLA or a strategy."""
    folder = tmp_path_factory.mktemp("baseline")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(apps, "_entry_points", lambda: {"toy": _EntryPoint()})
        app, config, root = toy_config(folder, "train.epochs=1", "data.size=32", "data.max_length=3")
        return trainer.train(app, config, folder / "run", root, quiet=True)


@pytest.mark.parametrize("overrides, tolerance", [
    (["train.mixed_precision=mixed_float16"], 1e-2),
    (["train.mixed_precision=mixed_bfloat16"], 5e-2),
    (["train.jit_compile=true"], 1e-4),
    (["train.strategy=mirrored"], 5e-3),  # averages the epoch loss over replicas its own way
], ids=["mixed_float16", "mixed_bfloat16", "jit_compile", "mirrored"])
def test_precision_xla_and_strategy_train_as_the_plain_run_does(tmp_path, toy_app, baseline,
                                                                 overrides, tolerance):
    app, config, root = toy_config(tmp_path, "train.epochs=1", "data.size=32", "data.max_length=3",
                                   *overrides)
    run = tmp_path / "run"
    result = trainer.train(app, config, run, root, quiet=True)
    # Same seed, same data: the same training up to the variant's rounding.
    assert result["last"]["loss"] == pytest.approx(baseline["last"]["loss"], abs=tolerance)
    assert result["last"]["dev_accuracy"] == pytest.approx(baseline["last"]["dev_accuracy"], abs=0.07)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    policy = config["train"]["mixed_precision"]
    for model in (keras.saving.load_model(run / "best.keras", compile=False), runs.load_run(run).model):
        hidden = [layer for layer in model.layers[:-1] if layer.weights]
        assert hidden and all(layer.dtype_policy.name == policy for layer in hidden)
        assert model.layers[-1].dtype_policy.name == "float32"  # the softmax, as the app asks
        assert all(w.dtype == "float32" for w in model.weights)  # variables stay float32
    # evaluate (load_run) scores as the dev pass of training did: same policy
    loaded = runs.load_run(run)
    scores = app.evaluate(loaded.model, config, root, loaded.assets)
    assert scores["accuracy"] == pytest.approx(result["last"]["dev_accuracy"])


def test_finetuning_starts_from_the_other_runs_weights_and_vocabulary(trained_run, toy_app, tmp_path):
    app, config, root = toy_config(tmp_path, "train.epochs=1", "train.optimizer.learning_rate=0.0")
    run = tmp_path / "tuned"
    trainer.train(app, config, run, root, quiet=True, init_from=trained_run)
    assert (run / "assets.json").read_text() == (trained_run / "assets.json").read_text()
    assert runs.load_assets(run).same_as(runs.load_assets(trained_run))  # asset files too
    source, tuned = (keras.saving.load_model(r / "best.keras") for r in (trained_run, run))
    for a, b in zip(source.get_weights(), tuned.get_weights()):
        np.testing.assert_array_equal(a, b)  # learning rate 0: still the source's weights
    with pytest.raises(UserError, match="no such run directory"):
        trainer.train(app, config, tmp_path / "other", root, quiet=True, init_from=tmp_path / "nope")


def test_weight_averaging_scores_and_keeps_the_average_but_trains_on(tmp_path, toy_app):
    app, config, root = toy_config(tmp_path, "train.epochs=1", "train.ema=0.9")
    run = tmp_path / "run"
    trainer.train(app, config, run, root, quiet=True)
    best = keras.saving.load_model(run / "best.keras", compile=False)
    # the checkpoint holds the training weights and, in the optimizer, their average
    model = app.build_model(config, json.loads((run / "assets.json").read_text()))
    model.compile(optimizer=trainer.make_optimizer(config["train"]), loss=app.loss(config))
    model.optimizer.build(model.trainable_variables)
    model.load_weights(run / "checkpoints" / "ckpt-0001-0000000" / "state.weights.h5")
    training = [w.copy() for w in model.get_weights()]
    assert any(not np.allclose(a, b) for a, b in zip(training, best.get_weights()))
    with trainer.averaged_weights(model):
        for a, b in zip(model.get_weights(), best.get_weights()):
            np.testing.assert_array_equal(a, b)
        dev = app.evaluate(model, config, root, None)["accuracy"]
    for a, b in zip(model.get_weights(), training):
        np.testing.assert_array_equal(a, b)
    assert records(run)[0]["dev_accuracy"] == pytest.approx(dev)


def test_weight_noise_takes_the_gradient_at_noisy_weights_and_updates_the_clean_ones():
    # Linear regression, one batch, plain SGD: the update must be
    # w0 - lr * dL/dw at (w0 + noise), the gradient worked out by hand.
    x = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0]], "float32")
    y = np.array([[1.0], [0.0], [2.0]], "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    w0 = model.get_weights()[0].copy()
    seen = []

    class Probe(keras.callbacks.Callback):  # runs after the noise is added, before the step
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(self.model.get_weights()[0].copy())

    model.fit(x, y, batch_size=3, epochs=1, verbose=0, callbacks=[trainer.WeightNoise(0.5, 7), Probe()])
    noisy = seen[0]
    assert np.abs(noisy - w0).max() > 0.05  # noise of standard deviation 0.5 was added
    gradient = 2 * x.T @ (x @ noisy - y) / len(x)
    np.testing.assert_allclose(model.get_weights()[0], w0 - 0.1 * gradient, atol=1e-6)


def test_weight_noise_changes_training_but_never_the_weights_it_keeps(tmp_path, toy_app):
    runs_ = {}
    for noise in (0.0, 0.3):
        app, config, root = toy_config(tmp_path, "train.epochs=1", "train.optimizer.learning_rate=0.0",
                                       f"train.weight_noise={noise}")
        run = tmp_path / f"noise-{noise}"
        runs_[noise] = (trainer.train(app, config, run, root, quiet=True),
                        keras.saving.load_model(run / "best.keras").get_weights())
    (plain, plain_weights), (noisy, noisy_weights) = runs_[0.0], runs_[0.3]
    assert noisy["last"]["loss"] != pytest.approx(plain["last"]["loss"], rel=1e-3)
    for a, b in zip(plain_weights, noisy_weights):  # learning rate 0: the noise is all taken out
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert noisy["last"]["dev_accuracy"] == plain["last"]["dev_accuracy"]  # scored without noise


def test_a_lower_is_better_metric_picks_the_lowest_and_drives_stopping_and_plateaus(
        tmp_path, scripted_toy_app):
    # dev error by epoch: best at 2, then 3 epochs without improvement
    app, config, root = toy_config(
        tmp_path, "data.script=[0.5, 0.3, 0.4, 0.45, 0.6, 0.1]", "train.epochs=6",
        "train.early_stopping.patience=3", "train.reduce_on_plateau.enabled=true",
        "train.reduce_on_plateau.patience=1", "train.optimizer.learning_rate=0.01")
    run = tmp_path / "run"
    result = trainer.train(app, config, run, root, quiet=True)
    lines = records(run)
    assert [r["dev_error"] for r in lines] == [0.5, 0.3, 0.4, 0.45, 0.6]  # stopped after epoch 5
    assert result["monitor"] == "dev_error" and result["best_epoch"] == 2
    assert result["best"]["dev_error"] == 0.3
    rates = [r["learning_rate"] for r in lines]  # halved after each epoch without a new lowest
    assert rates == pytest.approx([0.01, 0.01, 0.005, 0.0025, 0.00125])
    # best.keras is epoch 2's model: the same weights as epoch 2's checkpoint
    saved = json.loads((run / "checkpoints" / "ckpt-0005-0000000" / "state.json").read_text())
    assert saved["best"] == 0.3 and saved["best_epoch"] == 2


def test_a_recipe_may_have_dev_scored_by_its_loss_instead_of_the_metric(tmp_path, toy_app):
    # App.dev_metric: the toy lets data.dev_score choose; loss needs no evaluate()
    app, config, root = toy_config(tmp_path, "data.dev_score=loss", "train.epochs=2")
    run = tmp_path / "run"
    result = trainer.train(app, config, run, root, quiet=True)
    lines = records(run)
    assert result["monitor"] == "dev_loss" and all("dev_accuracy" not in r for r in lines)
    losses = [r["dev_loss"] for r in lines]
    assert result["best"]["dev_loss"] == min(losses) and result["best_epoch"] == 1 + losses.index(min(losses))
    assert not (run / "figures").exists()  # the app's evaluate never ran
    # the loss is the model's on the dev data: the best model evaluates to it
    model = runs.load_run(run).model
    model.compile(loss=app.loss(config))
    dev = app.build_data(config, root, None)[1]
    assert model.evaluate(dev, verbose=0) == pytest.approx(min(losses), rel=1e-5)


def test_an_app_must_say_whether_higher_or_lower_is_better():
    with pytest.raises(TypeError, match="metric_mode must be one of max, min"):
        type("Backwards", (ScriptedToyApp,), {"metric_mode": "lower"})


def test_decode_settings_change_after_training_without_calling_it_another_recipe(
        trained_run, toy_app, tmp_path, capsys):
    from lstm_core.cli import main

    app, config, root = toy_config(tmp_path, "decode.threshold=1.0")
    result = trainer.train(app, config, trained_run, root)  # same run: a decode setting differs
    assert result["complete"] and "already complete" in capsys.readouterr().out
    loaded = runs.load_run(trained_run, overrides=["decode.threshold=1.0"])
    assert loaded.config["decode"] == {"threshold": 1.0}
    _, ys = sequences(config["train"]["seed"] + 1000, config["data"]["dev_size"],
                      config["data"]["max_length"])
    # threshold 1.0: nothing is positive, so accuracy is the share of negatives
    scores = ToyApp().evaluate(loaded.model, loaded.config, root, loaded.assets, final=True)
    assert scores["accuracy"] == pytest.approx(1 - np.mean(ys))
    assert main(["evaluate", str(trained_run), "--set", "decode.threshold=1.0"]) == 0
    assert f"accuracy: {1 - np.mean(ys):.4f}" in capsys.readouterr().out
    for bad, message in ((["model.units=3"], "only decode.* settings can change after training"),
                         (["decode.treshold=1"], "did you mean decode.threshold?"),
                         (["decode.threshold=2"], "decode.threshold: 2.0 is out of range")):
        assert main(["evaluate", str(trained_run), "--set", *bad]) == 2
        assert message in capsys.readouterr().err
