"""Training shared by every app: Keras ``fit`` plus the callbacks that make a
run directory something a person can trust, stop and resume.

A run directory holds::

    recipe.yaml        the config, every default filled in (a resume must match
                       it); data paths as written, relative to the data root
    assets.json        the app's vocabularies etc., built once
    checkpoints/       ckpt-EEEE-SSSSSSS/{state.weights.h5,state.json}, the last 2
                       (and best.keras, report.txt when the epoch was the best)
    best.keras         the best model on dev by the app's metric
    report.txt         the app's printable dev report of that model
    metrics.jsonl      one JSON line per epoch
    plots/             loss.png and dev_<metric>.png
    logs/              TensorBoard
    result.json        written when the run is complete

Every file is written into a temporary name next to its target and renamed
into place (:func:`atomic_path`), so a run killed at any moment leaves either
the old or the new version of each file, never half of one.
"""

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lstm_core.apps import get_app
from lstm_core.errors import UserError
from lstm_core.recipes import Field, RecipeError, diff_configs, dump_config, read_config
from lstm_core.recipes import data_root as choose_data_root
from lstm_core.recipes import resolve_data_files

OPTIONAL_FLOAT = (float, type(None))
OPTIONAL_INT = (int, type(None))
KEEP_CHECKPOINTS = 2

TRAIN_SCHEMA = {
    "epochs": Field(int, 10, min=1, doc="passes over the training data"),
    "batch_size": Field(int, 32, min=1, doc="examples per batch (global, across replicas)"),
    "seed": Field(int, 1, min=0, max=2**32 - 1,
                  doc="seeds Python, NumPy and TensorFlow, and the data shuffling"),
    "optimizer": {
        "name": Field(str, "adam", choices=["adam", "adamw", "sgd"], doc="the Keras optimizer"),
        "learning_rate": Field(float, 0.001, min=0, doc="peak learning rate (schedules start here)"),
        "momentum": Field(float, 0.0, min=0, max=1, doc="sgd: momentum"),
        "nesterov": Field(bool, False, doc="sgd: Nesterov momentum"),
        "weight_decay": Field(float, 0.004, min=0, doc="adamw: decoupled weight decay"),
        "beta_1": Field(float, 0.9, min=0, max=1, doc="adam/adamw: first-moment decay"),
        "beta_2": Field(float, 0.999, min=0, max=1, doc="adam/adamw: second-moment decay"),
        "epsilon": Field(float, 1e-7, min=0, doc="adam/adamw: numerical stability term"),
    },
    "schedule": {
        "name": Field(str, "constant", choices=["constant", "exponential", "step", "cosine"],
                      doc="how the learning rate changes with the step"),
        "decay_steps": Field(int, 1000, min=1,
                             doc="exponential: steps per decay_rate factor; cosine: steps to decay over"),
        "decay_rate": Field(float, 0.96, min=0, doc="exponential: factor per decay_steps"),
        "boundaries": Field(list, [], items=int, min=1, doc="step: steps at which the rate changes"),
        "values": Field(list, [], items=float, min=0,
                        doc="step: the rates, one more than boundaries "
                            "(empty: learning_rate times factor at each boundary)"),
        "step_size": Field(int, 0, min=0,
                           doc="step without boundaries: multiply by factor every step_size steps"),
        "factor": Field(float, 0.1, min=0, doc="step: multiplier at each boundary / step_size"),
        "alpha": Field(float, 0.0, min=0, max=1, doc="cosine: final rate as a fraction of learning_rate"),
        "warmup_steps": Field(int, 0, min=0, doc="linear warmup from 0 over this many steps, then the "
                                                 "schedule (combines with any)"),
    },
    "reduce_on_plateau": {
        "enabled": Field(bool, False, doc="divide the rate when the dev metric stops improving "
                                          "(needs schedule constant without warmup)"),
        "factor": Field(float, 0.5, min=0, max=0.99, doc="multiplier applied on a plateau"),
        "patience": Field(int, 2, min=0, doc="epochs without improvement before reducing"),
        "min_lr": Field(float, 0.0, min=0, doc="the rate never goes below this"),
    },
    "ema": Field(float, 0.0, min=0, max=0.99999,
                 doc="keep an exponential moving average of the weights with this momentum per "
                     "step (Polyak averaging; 0: off); dev scores, best.keras and exports use it"),
    "clip_norm": Field(OPTIONAL_FLOAT, None, min=0, doc="global-norm gradient clipping (0 or null: off)"),
    "mixed_precision": Field(str, "float32", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                             doc="Keras dtype policy of the model (loss scaling is automatic for float16)"),
    "strategy": Field(str, "default", choices=["default", "mirrored", "multi_worker"],
                      doc="tf.distribute strategy; multi_worker reads the cluster from TF_CONFIG"),
    "jit_compile": Field(bool, False, doc="compile the train step with XLA (Keras's auto is off on CPU)"),
    "early_stopping": {
        "patience": Field(int, 0, min=0, doc="epochs without a better dev metric before stopping (0: off)"),
        "min_delta": Field(float, 0.0, min=0, doc="smallest change that counts as better"),
    },
    "checkpoint_every_steps": Field(int, 0, min=0, doc="also checkpoint every N steps (0: at epoch end only)"),
    "log_every_steps": Field(int, 0, min=0, doc="TensorBoard scalars every N steps (0: per epoch)"),
    "max_steps_per_epoch": Field(OPTIONAL_INT, None, min=1, doc="cut epochs short (quick runs)"),
}


# -- files ---------------------------------------------------------------------


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path`` (same name ending, for writers
    that go by the suffix); on success rename it onto ``path`` in one step,
    on failure remove it. Works for files and directories (a directory
    target must be absent or empty)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_json(path, value):
    _write_text(path, json.dumps(value, indent=1) + "\n")


def _read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _checkpoints(run_dir):
    """Complete checkpoints of a run, oldest first (names sort by progress)."""
    folder = Path(run_dir) / "checkpoints"
    return sorted(p for p in folder.glob("ckpt-*") if (p / "state.json").is_file()) if folder.is_dir() else []


def _model_file(run_dir):
    """The weights a finished or interrupted run is used with: best.keras,
    else the last checkpoint."""
    run_dir = Path(run_dir)
    if (run_dir / "best.keras").is_file():
        return run_dir / "best.keras"
    checkpoints = _checkpoints(run_dir)
    if checkpoints:
        return checkpoints[-1] / "state.weights.h5"
    raise UserError(f"{run_dir} holds no trained model yet (no best.keras, no checkpoint)")


# -- optimizer, schedule, strategy, precision ------------------------------------


@keras.saving.register_keras_serializable(package="lstm_core")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup over ``warmup_steps``, then ``schedule`` from its start:
    wraps any schedule (or a constant rate)."""

    def __init__(self, schedule, warmup_steps):
        self.schedule = schedule
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        after = keras.ops.maximum(step - self.warmup_steps, 0.0)
        rate = self.schedule(after) if callable(self.schedule) else self.schedule
        return rate * keras.ops.minimum(1.0, (step + 1.0) / self.warmup_steps)

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        schedule = config["schedule"]
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        return cls(schedule, config["warmup_steps"])


def make_schedule(train):
    """The learning rate (a float or a Keras schedule) of a ``train`` config."""
    s, lr = train["schedule"], train["optimizer"]["learning_rate"]
    schedules = keras.optimizers.schedules
    if s["name"] == "exponential":
        rate = schedules.ExponentialDecay(lr, s["decay_steps"], s["decay_rate"])
    elif s["name"] == "cosine":
        rate = schedules.CosineDecay(lr, s["decay_steps"], alpha=s["alpha"])
    elif s["name"] == "step" and s["boundaries"]:
        if any(b >= a for b, a in zip(s["boundaries"], s["boundaries"][1:])):
            raise RecipeError(f"train.schedule.boundaries: must increase, got {s['boundaries']}")
        values = s["values"] or [lr * s["factor"] ** i for i in range(len(s["boundaries"]) + 1)]
        if len(values) != len(s["boundaries"]) + 1:
            raise RecipeError(f"train.schedule.values: need {len(s['boundaries']) + 1} rates for "
                              f"{len(s['boundaries'])} boundaries, got {len(values)}")
        rate = schedules.PiecewiseConstantDecay(s["boundaries"], values)
    elif s["name"] == "step":
        if not s["step_size"] or s["values"]:
            raise RecipeError("train.schedule: the step schedule needs boundaries (with optional "
                              "values) or step_size (with factor)")
        rate = schedules.ExponentialDecay(lr, s["step_size"], s["factor"], staircase=True)
    else:
        rate = lr
    if train["reduce_on_plateau"]["enabled"] and (s["name"] != "constant" or s["warmup_steps"]):
        raise RecipeError("train.reduce_on_plateau needs train.schedule.name constant and no "
                          "warmup_steps: a plateau can only change a fixed learning rate")
    return Warmup(rate, s["warmup_steps"]) if s["warmup_steps"] else rate


def make_optimizer(train):
    o = train["optimizer"]
    common = dict(learning_rate=make_schedule(train), global_clipnorm=train["clip_norm"] or None,
                  use_ema=train["ema"] > 0, ema_momentum=train["ema"] or 0.99)
    if o["name"] == "sgd":
        return keras.optimizers.SGD(momentum=o["momentum"], nesterov=o["nesterov"], **common)
    adam = dict(beta_1=o["beta_1"], beta_2=o["beta_2"], epsilon=o["epsilon"], **common)
    if o["name"] == "adamw":
        return keras.optimizers.AdamW(weight_decay=o["weight_decay"], **adam)
    return keras.optimizers.Adam(**adam)


def make_strategy(name):
    """Created first thing: MultiWorkerMirroredStrategy must exist before the
    TensorFlow runtime starts other work."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("train.strategy multi_worker needs TF_CONFIG (the cluster and this "
                            "worker's task) in the environment")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _worker_dir(strategy, run_dir):
    """Where this worker writes: the run dir for the chief, a private
    sub-directory for other workers (they must not race the chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type, task_id = getattr(resolver, "task_type", None), getattr(resolver, "task_id", 0)
    chief = task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict())
    return run_dir if chief else run_dir / "workers" / f"{task_type}-{task_id}"


@contextlib.contextmanager
def precision_policy(name):
    """The Keras dtype policy for building the model, restored afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def averaged_weights(model):
    """Inside the block the model holds the optimizer's moving averages of its
    weights (``train.ema``), outside it its training weights again. Swapped
    through NumPy copies: Keras's in-place swap (a+b-b) is not exact."""
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    pairs = [(v, a) for v, a in zip(optimizer._trainable_variables, averages or []) if a is not None]

    def swap():
        for variable, average in pairs:
            value = keras.ops.convert_to_numpy(variable)
            variable.assign(average)
            average.assign(value)

    swap()
    try:
        yield
    finally:
        swap()


def _scalar(value):
    """A Python number from a tensor or (possibly distributed) variable."""
    return keras.ops.convert_to_numpy(value).item()


def current_learning_rate(optimizer):
    return float(_scalar(optimizer.learning_rate))


# -- callbacks -------------------------------------------------------------------


class DevMonitor(keras.callbacks.Callback):
    """First callback of the list: stops on a NaN loss before anything can
    save the broken weights, and puts the app's dev scores into ``logs`` as
    ``dev_<name>`` for the callbacks after it (early stopping, plateau,
    recorder, TensorBoard, progress bar)."""

    def __init__(self, app, config, data_root, assets, run_dir):
        super().__init__()
        self.app, self.config, self.data_root, self.assets = app, config, data_root, assets
        self.run_dir = run_dir
        self.step_offset = 0
        self.report = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = [float(v) for k, v in (logs or {}).items() if "loss" in k and not np.isfinite(v).all()]
        if bad:
            checkpoints = _checkpoints(self.run_dir)
            kept = (f"the last good checkpoint is kept in {checkpoints[-1]}" if checkpoints
                    else "no checkpoint had been written yet")
            raise UserError(f"loss became {'NaN' if math.isnan(bad[0]) else 'infinite'} at epoch "
                            f"{self.epoch + 1} step {self.step_offset + batch + 1}; {kept} (lower "
                            "train.optimizer.learning_rate or set train.clip_norm, in a new --run-dir)")

    def on_epoch_end(self, epoch, logs=None):
        with averaged_weights(self.model):
            scores = dict(self.app.evaluate(self.model, self.config, self.data_root, self.assets))
        self.report = scores.pop("report", None)
        logs.update({f"dev_{name}": float(value) for name, value in scores.items()})


class Recorder(keras.callbacks.Callback):
    """Writes the run directory: best model, metrics.jsonl, plots and
    checkpoints (last, as the commit point of an epoch). Restores the state
    of the stateful Keras callbacks (early stopping, plateau) at the start of
    each ``fit`` so a resumed run keeps counting where it stopped."""

    def __init__(self, run_dir, monitor, mode, state, records, stateful, dev, every_steps):
        super().__init__()
        self.run_dir, self.monitor, self.mode = run_dir, monitor, mode
        self.state, self.records, self.stateful, self.dev = state, records, stateful, dev
        self.every_steps = every_steps

    def on_train_begin(self, logs=None):
        for name, callback in self.stateful.items():
            for key, value in self.state["callbacks"].get(name, {}).items():
                setattr(callback, key, value)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.started = epoch, time.time()

    def on_train_batch_end(self, batch, logs=None):
        step = self.dev.step_offset + batch + 1
        # None at an epoch's last step: the epoch-end checkpoint follows, and
        # a resume from a mid-epoch one there would start an empty epoch.
        last = batch + 1 == self.params.get("steps")
        if self.every_steps and step % self.every_steps == 0 and not last:
            self.save_checkpoint(self.epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        record = {"epoch": epoch + 1, "step": _scalar(self.model.optimizer.iterations),
                  **{k: float(v) for k, v in logs.items() if np.ndim(v) == 0},
                  "learning_rate": current_learning_rate(self.model.optimizer),
                  "seconds": round(time.time() - self.started, 3)}
        self.records.append(record)
        value = logs.get(self.monitor)
        best = self.state["best"]
        improved = value is not None and (best is None or (value > best if self.mode == "max"
                                                            else value < best))
        if improved:
            self.state.update(best=float(value), best_epoch=epoch + 1)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        plot_curves(self.records, self.run_dir / "plots", self.monitor)
        self.state["callbacks"] = {
            name: {key: getattr(cb, key) for key in ("wait", "best", "best_epoch", "cooldown_counter")
                   if hasattr(cb, key)} for name, cb in self.stateful.items()}
        self.save_checkpoint(epoch + 1, 0, best=improved)

    def save_checkpoint(self, epoch, step, best=False):
        """``epoch`` whole epochs plus ``step`` steps are done. Written into a
        temporary directory renamed into place; only the last
        :data:`KEEP_CHECKPOINTS` are kept. The ``best`` model and its report
        go into the checkpoint too, then are published: the checkpoint that
        records a new best always holds it, so a resume can publish it again
        (:func:`publish_best`)."""
        folder = self.run_dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        self.state.update(epoch=epoch, step=step, global_step=_scalar(self.model.optimizer.iterations))
        checkpoint = folder / f"ckpt-{epoch:04d}-{step:07d}"
        with atomic_path(checkpoint) as tmp:
            tmp.mkdir()
            self.model.save_weights(tmp / "state.weights.h5")
            (tmp / "state.json").write_text(json.dumps(self.state, indent=1))
            if best:
                with averaged_weights(self.model):
                    self.model.save(tmp / "best.keras")
                if self.dev.report:
                    (tmp / "report.txt").write_text(self.dev.report.rstrip() + "\n", encoding="utf-8")
        if best:
            publish_best(checkpoint, self.run_dir)
        for old in _checkpoints(self.run_dir)[:-KEEP_CHECKPOINTS]:
            _remove(old)


def publish_best(checkpoint, run_dir):
    """Copy the best model (and report) a checkpoint holds into the run
    directory, each file atomically."""
    for name in ("best.keras", "report.txt"):
        if (checkpoint / name).is_file():
            with atomic_path(run_dir / name) as tmp:
                shutil.copyfile(checkpoint / name, tmp)


def plot_curves(records, folder, monitor):
    """loss.png (train and validation loss) and <monitor>.png against the
    epoch, drawn without pyplot so no global backend is touched."""
    from matplotlib.figure import Figure

    folder.mkdir(exist_ok=True)
    epochs = [r["epoch"] for r in records]
    for name, keys in (("loss", ("loss", "val_loss")), (monitor, (monitor,))):
        figure = Figure(figsize=(6, 4))
        axes = figure.subplots()
        for key in keys:
            points = [(e, r[key]) for e, r in zip(epochs, records) if key in r]
            if points:
                axes.plot(*zip(*points), marker="o", label=key)
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend()
        with atomic_path(folder / f"{name}.png") as tmp:
            figure.savefig(tmp)


# -- runs ------------------------------------------------------------------------


def _init_source(init_from):
    """(weights file, assets.json) of a run directory or a model file to
    fine-tune from; the assets make token ids match the weights."""
    path = Path(init_from)
    if not path.exists():
        raise UserError(f"--from {path}: no such run directory or model file")
    weights = _model_file(path) if path.is_dir() else path
    assets = (path if path.is_dir() else path.parent) / "assets.json"
    if not assets.is_file():
        raise UserError(f"--from {path}: no assets.json next to it, so its vocabulary is unknown")
    return weights, assets


def _load_weights(model, path):
    try:
        model.load_weights(str(path))
    except (ValueError, KeyError) as error:
        raise UserError(f"cannot load weights from {path} into this model ({error}); "
                        "was it trained with the same model settings?") from None


def _resume_state(run_dir, quiet):
    """The last checkpoint's state and the metrics records up to it (lines
    written after it, by an epoch that is redone now, are dropped)."""
    checkpoints = _checkpoints(run_dir)
    last = checkpoints[-1] if checkpoints else None
    state = (_read_json(last / "state.json") if last else
             {"epoch": 0, "step": 0, "best": None, "best_epoch": None, "callbacks": {}})
    path = run_dir / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    records = [r for r in map(json.loads, filter(None, lines)) if r["epoch"] <= state["epoch"]]
    if lines:
        _write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    if last and not quiet:
        print(f"resuming {run_dir} from {last.name}: {state['epoch']} epochs and {state['step']} "
              f"steps done")
    return last, state, records


def _result(records, state, monitor):
    best = next((r for r in records if r["epoch"] == state.get("best_epoch")), None)
    return {"complete": True, "epochs": records[-1]["epoch"] if records else 0,
            "monitor": monitor, "best_epoch": state.get("best_epoch"), "best": best,
            "last": records[-1] if records else None}


def train(app, config, run_dir, data_root, *, quiet=False, init_from=None):
    """Train ``app``'s model as ``config`` says, in ``run_dir``; resume it if
    it holds a checkpoint. Returns (and writes to result.json) the best and
    last epochs' metrics."""
    run_dir = Path(run_dir)
    t = config["train"]
    make_schedule(t)  # its checks span several keys: fail before anything heavy
    recorded = run_dir / "recipe.yaml"
    fresh = not recorded.is_file()
    written, config = config, _with_data_files(app, config, data_root)
    if not fresh:
        # Compared resolved: a data path recorded relative to the root, or
        # resolved (as earlier versions wrote it), names the same file.
        differences = diff_configs(_with_data_files(app, read_config(recorded), data_root), config)
        if differences:
            raise UserError(f"{run_dir} holds a run of a different recipe; changed: "
                            f"{'; '.join(differences)} (use another --run-dir to start a new run)")
    if (run_dir / "result.json").is_file():
        result = _read_json(run_dir / "result.json")
        if not quiet:
            print(f"{run_dir} is already complete ({result['epochs']} epochs); nothing to do")
        return result

    strategy = make_strategy(t["strategy"])
    run_dir = _worker_dir(strategy, run_dir)
    for stale in [*run_dir.glob(".tmp-*"), *(run_dir / "checkpoints").glob(".tmp-*")]:
        _remove(stale)  # left by a killed process
    keras.utils.set_random_seed(t["seed"])
    monitor = f"dev_{app.metric}" if app.metric else "val_loss"
    mode = app.metric_mode if app.metric else "min"
    checkpoint, state, records = _resume_state(run_dir, quiet)

    assets_path = run_dir / "assets.json"
    have_assets = not fresh and assets_path.is_file()
    if have_assets:
        assets = _read_json(assets_path)
    else:
        assets = (_read_json(_init_source(init_from)[1]) if init_from
                  else app.build_assets(config, data_root))
    train_data, dev_data = app.build_data(config, data_root, assets)
    if t["max_steps_per_epoch"]:
        train_data = train_data.take(t["max_steps_per_epoch"])

    with precision_policy(t["mixed_precision"]), strategy.scope():
        try:
            model = app.build_model(config, assets)
        except (TypeError, ValueError) as error:  # e.g. a misspelt model.encoder.cell_options key
            raise RecipeError(f"model: the recipe's model cannot be built: {error}") from error
        if checkpoint is None:  # else the checkpoint's weights are loaded below
            if init_from:
                _load_weights(model, _init_source(init_from)[0])
            else:
                app.initialize(model, config, assets)
        model.compile(optimizer=make_optimizer(t), loss=app.loss(config), jit_compile=t["jit_compile"])
        # Only a recipe that built claims the run directory: a mistake found
        # above leaves nothing behind (not even the directory).
        run_dir.mkdir(parents=True, exist_ok=True)
        if not have_assets:
            _write_json(assets_path, assets)
        if fresh:
            dump_config(written, run_dir / "recipe.yaml")
        if checkpoint is not None:
            model.optimizer.build(model.trainable_variables)
            _load_weights(model, checkpoint / "state.weights.h5")
            publish_best(checkpoint, run_dir)  # in case the run was killed before it did

        dev = DevMonitor(app, config, data_root, assets, run_dir)
        stateful = {}
        if t["early_stopping"]["patience"]:
            stateful["early_stopping"] = keras.callbacks.EarlyStopping(
                monitor, patience=t["early_stopping"]["patience"],
                min_delta=t["early_stopping"]["min_delta"], mode=mode)
        if t["reduce_on_plateau"]["enabled"]:
            p = t["reduce_on_plateau"]
            stateful["reduce_on_plateau"] = keras.callbacks.ReduceLROnPlateau(
                monitor, factor=p["factor"], patience=p["patience"], min_lr=p["min_lr"], mode=mode)
        recorder = Recorder(run_dir, monitor, mode, state, records, stateful, dev,
                            t["checkpoint_every_steps"])
        callbacks = [dev, *stateful.values(), recorder,
                     keras.callbacks.TensorBoard(run_dir / "logs", write_graph=False,
                                                 update_freq=t["log_every_steps"] or "epoch")]
        if not quiet:
            callbacks.append(keras.callbacks.ProgbarLogger())  # last: shows the dev scores

        def fit(data, start, end):
            # With train.ema, fit() ends by copying the averages into the
            # model; a resumed partial epoch then trains on from them.
            model.fit(data, epochs=end, initial_epoch=start, validation_data=dev_data, shuffle=False,
                      callbacks=callbacks, verbose=0 if quiet else 1)  # the data shuffles itself

        epoch = state["epoch"]
        if state["step"] and epoch < t["epochs"]:  # finish the interrupted epoch first
            dev.step_offset = state["step"]
            fit(train_data.skip(state["step"]), epoch, epoch + 1)
            dev.step_offset, epoch = 0, epoch + 1
        if epoch < t["epochs"] and not model.stop_training:
            fit(train_data, epoch, t["epochs"])

    result = _result(records, state, monitor)
    result["test"] = score_test_sets(app, model, config, data_root, assets, run_dir)
    _write_json(run_dir / "result.json", result)
    if not quiet and result["best"]:
        print(f"best {monitor} {result['best'][monitor]:.4f} at epoch {result['best_epoch']}; "
              f"run dir {run_dir}")
    return result


def score_test_sets(app, model, config, data_root, assets, run_dir):
    """Scores of the best model on the app's test sets, their reports added
    to report.txt: held-out numbers are measured once, at the end."""
    sets = app.test_sets(config)
    if not sets:
        return {}
    _load_weights(model, _model_file(run_dir))
    scores, reports = {}, []
    for name, path in sets.items():
        scores[name] = dict(app.evaluate(model, config, data_root, assets, path=path))
        report = scores[name].pop("report", None)
        if report:
            reports.append(f"== {name}: {path}\n{report.rstrip()}\n")
    if reports:
        report_file = run_dir / "report.txt"
        dev = report_file.read_text(encoding="utf-8") if report_file.is_file() else ""
        _write_text(report_file, "\n".join([dev, *reports]).lstrip("\n"))
    return scores


def recipe_schema(app):
    """The whole schema of a recipe for ``app``: its sections plus the core's."""
    from lstm_core.export import EXPORT_SCHEMA  # export imports this module

    return {"app": Field(str, doc="the application the recipe is for"), "data": app.data_schema,
            "model": app.model_schema, "train": TRAIN_SCHEMA, "export": EXPORT_SCHEMA}


def _with_data_files(app, config, data_root):
    """``config`` with its data paths resolved against ``data_root``."""
    return resolve_data_files(config, recipe_schema(app), None, data_root, strict=False)


def load_run(run_dir, data_dir=None):
    """``(app, config, assets, model)`` of a run, the model built by the app
    and given the weights of best.keras (else of the last checkpoint); the
    recorded data paths resolved against the data root of ``data_dir``
    (else ``$LSTM_SUITE_DATA``, else ./data), wherever the data is now."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no recipe.yaml)")
    config = read_config(run_dir / "recipe.yaml")
    app = get_app(config["app"])
    config = _with_data_files(app, config, choose_data_root(data_dir))
    assets = _read_json(run_dir / "assets.json")
    model = app.build_model(config, assets)
    _load_weights(model, _model_file(run_dir))
    return app, config, assets, model
