"""Training shared by every app: Keras ``fit`` plus the callbacks that make a
run directory (:mod:`lstm_core.runs`) something a person can trust, stop and
resume. :func:`train` reads as its steps: check the run, build the assets,
data and model, claim the run directory, fit, score the test sets."""

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from lstm_core import distribute, runs, transfer
from lstm_core.errors import UserError
from lstm_core.recipes import RecipeError, read_config
from lstm_core.runs import Assets, precision_policy
from lstm_core.schema import recorded_config, training_changes, with_data_files

# -- optimizer and schedule ------------------------------------------------------


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


@contextlib.contextmanager
def averaged_weights(model):
    """Inside the block the model holds the optimizer's moving averages of its
    weights (``train.ema``), outside it its training weights again (kept as
    NumPy copies: exact, unlike an in-place a+b-b swap)."""
    optimizer = model.optimizer
    if not getattr(optimizer, "use_ema", False) and not getattr(
            getattr(optimizer, "inner_optimizer", None), "use_ema", False):
        yield
        return
    variables = model.trainable_variables
    saved = [keras.ops.convert_to_numpy(v) for v in variables]
    optimizer.finalize_variable_values(variables)  # Keras's own end-of-fit step
    try:
        yield
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)


def _scalar(value):
    """A Python number from a tensor or (possibly distributed) variable."""
    return keras.ops.convert_to_numpy(value).item()


def current_learning_rate(optimizer):
    return float(_scalar(optimizer.learning_rate))


# -- callbacks -------------------------------------------------------------------


class WeightNoise(keras.callbacks.Callback):
    """Gaussian weight noise (Graves et al. 2013, ``train.weight_noise``):
    each step computes its gradients at the weights plus fresh noise, drawn
    once per batch, and the noise is taken out again after the update, so
    the update lands on the clean weights. It comes before every callback
    that reads the weights at a step's end (checkpoints, dev scores)."""

    def __init__(self, stddev, seed):
        super().__init__()
        self.stddev, self.generator = stddev, keras.random.SeedGenerator(seed)
        self.noise = []

    def on_train_batch_begin(self, batch, logs=None):
        variables = self.model.trainable_variables
        self.noise = [keras.random.normal(v.shape, stddev=self.stddev, dtype=v.dtype,
                                          seed=self.generator) for v in variables]
        for variable, noise in zip(variables, self.noise):
            variable.assign_add(noise)

    def on_train_batch_end(self, batch, logs=None):
        for variable, noise in zip(self.model.trainable_variables, self.noise):
            variable.assign_sub(noise)
        self.noise = []


class DevMonitor(keras.callbacks.Callback):
    """First callback after any weight noise: stops on a NaN loss before
    anything can save the broken weights, and scores dev once per epoch: the
    app's scores go into ``logs`` as ``dev_<name>`` for the callbacks after
    it (early stopping, plateau, recorder, TensorBoard, progress bar), its counts
    (integers) into :attr:`counts` for ``metrics.jsonl`` only, its figure
    into ``figures/dev-epoch-EEE.png``. Without a dev metric (the app has
    none, or its :meth:`~lstm_core.apps.App.dev_metric` for this recipe is
    "") dev is scored by its loss (``dev_loss``). On a cluster the chief
    scores (and draws), and every worker takes its metric."""

    def __init__(self, app, config, data_root, assets, run_dir, dev_data, strategy):
        super().__init__()
        self.app, self.config, self.data_root, self.assets = app, config, data_root, assets
        self.metric = app.dev_metric(config)
        self.run_dir, self.dev_data, self.strategy = run_dir, dev_data, strategy
        self.step_offset = 0
        self.report = None
        self.counts = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = [float(v) for k, v in (logs or {}).items() if "loss" in k and not np.isfinite(v).all()]
        if bad:
            found = runs.checkpoints(self.run_dir)
            kept = (f"the last good checkpoint is kept in {found[-1]}" if found
                    else "no checkpoint had been written yet")
            raise UserError(f"loss became {'NaN' if math.isnan(bad[0]) else 'infinite'} at epoch "
                            f"{self.epoch + 1} step {self.step_offset + batch + 1}; {kept} (lower "
                            "train.optimizer.learning_rate or set train.clip_norm, in a new --run-dir)")

    def on_epoch_end(self, epoch, logs=None):
        with averaged_weights(self.model):
            scores = self.score(epoch)
        self.report = scores.pop("report", None)
        self.counts = {f"dev_{k}": v for k, v in scores.items() if isinstance(v, int)}
        logs.update({f"dev_{k}": float(v) for k, v in scores.items() if isinstance(v, float)})

    def score(self, epoch):
        if not self.metric:  # every worker takes part in a distributed evaluate
            return {"loss": float(self.model.evaluate(self.dev_data, verbose=0, return_dict=True)["loss"])}
        scores = {}
        if distribute.is_chief(self.strategy):
            scores = distribute.alone(self.strategy, runs.evaluate, self.app, self.model,
                                      self.config, self.data_root, self.assets, self.run_dir,
                                      f"dev-epoch-{epoch + 1:03d}")
        if distribute.several_workers(self.strategy):
            # The callbacks after this one decide (stop, lower the rate, keep
            # the best) by it: identically on every worker.
            scores[self.metric] = distribute.from_chief(
                self.strategy, float(scores.get(self.metric, math.nan)))
        return scores


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
        # The rate the next epoch trains with (after any plateau), shown by
        # the progress bar that comes after this callback.
        logs["learning_rate"] = current_learning_rate(self.model.optimizer)
        record = {"epoch": epoch + 1, "step": _scalar(self.model.optimizer.iterations),
                  **{k: float(v) for k, v in logs.items() if np.ndim(v) == 0}, **self.dev.counts,
                  "seconds": round(time.time() - self.started, 3)}
        self.records.append(record)
        value = logs.get(self.monitor)
        best = self.state["best"]
        improved = value is not None and (best is None or (value > best if self.mode == "max"
                                                            else value < best))
        if improved:
            self.state.update(best=float(value), best_epoch=epoch + 1)
        append_record(self.run_dir, record)
        plot_curves(self.records, self.run_dir / "plots", self.monitor)
        self.state["callbacks"] = {
            name: {key: getattr(cb, key) for key in ("wait", "best", "best_epoch", "cooldown_counter")
                   if hasattr(cb, key)} for name, cb in self.stateful.items()}
        self.save_checkpoint(epoch + 1, 0, best=improved)

    def save_checkpoint(self, epoch, step, best=False):
        """``epoch`` whole epochs plus ``step`` steps are done. Written into a
        temporary directory renamed into place; only the last
        :data:`runs.KEEP_CHECKPOINTS` are kept. The ``best`` model and its
        report go into the checkpoint too, then are published: the checkpoint
        that records a new best always holds it, so a resume can publish it
        again (:func:`runs.publish_best`)."""
        self.state.update(epoch=epoch, step=step, global_step=_scalar(self.model.optimizer.iterations))
        checkpoint = runs.checkpoint_path(self.run_dir, epoch, step)
        checkpoint.parent.mkdir(exist_ok=True)
        with runs.atomic_path(checkpoint) as tmp:
            tmp.mkdir()
            self.model.save_weights(tmp / "state.weights.h5")
            (tmp / "state.json").write_text(json.dumps(self.state, indent=1))
            if best:
                with averaged_weights(self.model):
                    self.model.save(tmp / "best.keras")
                if self.dev.report:
                    (tmp / "report.txt").write_text(self.dev.report.rstrip() + "\n", encoding="utf-8")
        if best:
            runs.publish_best(checkpoint, self.run_dir)
        runs.prune_checkpoints(self.run_dir)


def plot_curves(records, folder, monitor):
    """loss.png (train and dev loss) and <monitor>.png against the epoch,
    drawn without pyplot so no global backend is touched."""
    from matplotlib.figure import Figure

    folder.mkdir(exist_ok=True)
    epochs = [r["epoch"] for r in records]
    for name, keys in (("loss", ("loss", "dev_loss")), (monitor, (monitor,))):
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
        with runs.atomic_path(folder / f"{name}.png") as tmp:
            figure.savefig(tmp)


# -- the steps of a run ------------------------------------------------------------


def check_resumable(app, config, run_dir, data_root):
    """The recorded config of the run in ``run_dir`` (None for a new run);
    a changed recipe is refused, decode settings and ``train.epochs`` aside."""
    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        return None
    recorded = recorded_config(app, path)
    changes = training_changes(app, recorded, config, data_root)
    if changes:
        raise UserError(f"{run_dir} holds a run of a different recipe; changed: "
                        f"{'; '.join(changes)} (use another --run-dir to start a new run)")
    return recorded


def finished(run_dir, recorded, epochs, quiet):
    """The result of a run that is complete at ``epochs``, else None. A run
    that trained all its epochs trains on when given more; one that early
    stopping ended stays ended."""
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    result = runs.read_json(path)
    done, planned = result["epochs"], recorded["train"]["epochs"]
    if epochs > done >= planned:
        return None
    if not quiet:
        length = (f"early stopping ended it after {done} of {planned} epochs" if done < planned
                  else f"{done} epochs")
        print(f"{run_dir} is already complete ({length}); nothing to do")
    return result


def record_epochs(run_dir, recorded, epochs):
    """Give a resumed run a new number of epochs: its recorded recipe says
    it, and its result (of the old length) goes until the run ends again."""
    if recorded and recorded["train"]["epochs"] != epochs:
        runs.remove(run_dir / "result.json")
        raw = read_config(run_dir / "recipe.yaml")
        runs.write_config({**raw, "train": {**raw.get("train", {}), "epochs": epochs}},
                          run_dir / "recipe.yaml")


def resume_state(run_dir, quiet):
    """The last checkpoint's state and the metrics records up to it (lines
    written after it, by an epoch that is redone now, are dropped)."""
    found = runs.checkpoints(run_dir)
    last = found[-1] if found else None
    state = (runs.read_json(last / "state.json") if last else
             {"epoch": 0, "step": 0, "best": None, "best_epoch": None, "callbacks": {}})
    path = run_dir / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    records = [r for r in map(parse_record, lines) if r and r["epoch"] <= state["epoch"]]
    if lines:
        runs.write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    if last and not quiet:
        print(f"resuming {run_dir} from {last.name}: {state['epoch']} epochs and {state['step']} "
              f"steps done")
    return last, state, records


def parse_record(line):
    """A ``metrics.jsonl`` line's record; None for an empty line or the
    partial last line of a process killed while appending it."""
    try:
        return json.loads(line) if line else None
    except json.JSONDecodeError:
        return None


def build_assets(app, config, data_root, run_dir, init_from, staging):
    """The run's assets: its own when it has them, else those of the run it
    fine-tunes from, else new ones built by the app (its files written into
    ``staging``, moved into the run directory when the run claims it)."""
    if (run_dir / "assets.json").is_file():
        return runs.load_assets(run_dir)
    if init_from:
        previous = runs.init_source(init_from)[1]
        made = app.finetune_assets(config, data_root, staging, previous)
        return made if made is previous else Assets(made, staging)
    return Assets(app.build_assets(config, data_root, staging), staging)


def build_model(app, config, assets, checkpoint, init_from, strategy, element_spec):
    """The compiled model with its starting weights (a checkpoint's are
    loaded later, once the optimizer exists to take its state), and when it
    fine-tunes, what changed in its vocabularies (see :mod:`lstm_core.transfer`)."""
    t = finetune_train(config) if init_from else config["train"]
    model = app.build_model(config, assets)
    changes = {}
    if init_from:
        transfer.freeze(model, config["finetune"]["freeze"])
        if checkpoint is None:
            changes = transfer.carry_over(app, config, model, init_from, assets)
    elif checkpoint is None:
        app.initialize(model, config, assets)
    model.compile(optimizer=make_optimizer(t), loss=app.loss(config), jit_compile=t["jit_compile"])
    distribute.fit_on_workers(model, strategy, element_spec)
    return model, changes


def finetune_train(config):
    """The ``train`` section as a fine-tuning run uses it: with the
    learning rate of ``finetune.learning_rate`` (by default a tenth of the
    recipe's), as a trained model needs smaller steps than a new one."""
    t = copy.deepcopy(config["train"])
    rate = config["finetune"]["learning_rate"]
    t["optimizer"]["learning_rate"] = t["optimizer"]["learning_rate"] / 10 if rate is None else rate
    return t


def score_start(dev, model, records, run_dir):
    """Epoch 0 of a fine-tuning run: the starting model's dev scores, so
    ``metrics.jsonl`` shows every fine-tune before and after."""
    dev.set_model(model)
    scores = dev.score(-1)
    scores.pop("report", None)
    record = {"epoch": 0, "step": 0, **{f"dev_{k}": v for k, v in scores.items()
                                        if isinstance(v, (int, float))}}
    records.append(record)
    append_record(run_dir, record)


def append_record(run_dir, record):
    """One epoch's line of ``metrics.jsonl``."""
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def claim_run_dir(run_dir, config, assets, model, checkpoint):
    """Write what a run starts from: only a recipe whose model built gets a
    run directory, so a mistake found earlier leaves nothing behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "assets.json").is_file():
        assets = runs.save_assets(run_dir, assets)
    if not (run_dir / "recipe.yaml").is_file():
        runs.write_config(config, run_dir / "recipe.yaml")
    if checkpoint is not None:
        model.optimizer.build(model.trainable_variables)
        runs.load_weights(model, checkpoint / "state.weights.h5")
        runs.publish_best(checkpoint, run_dir)  # in case the run was killed before it did
    return assets


def make_callbacks(app, config, data_root, assets, run_dir, dev_data, state, records, quiet,
                   strategy):
    """Weight noise and the dev monitor first, the stateful Keras callbacks,
    the recorder, TensorBoard, and the progress bar last (it shows what the
    others add)."""
    t = config["train"]
    metric = app.dev_metric(config)
    monitor = f"dev_{metric or 'loss'}"
    mode = app.metric_mode if metric else "min"
    dev = DevMonitor(app, config, data_root, assets, run_dir, dev_data, strategy)
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
    noise = [WeightNoise(t["weight_noise"], t["seed"])] if t["weight_noise"] else []
    callbacks = [*noise, dev, *stateful.values(), recorder,
                 keras.callbacks.TensorBoard(run_dir / "logs", write_graph=False,
                                             update_freq=t["log_every_steps"] or "epoch")]
    if not quiet:
        callbacks.append(keras.callbacks.ProgbarLogger())
    return callbacks, dev, monitor


def fit(model, train_data, callbacks, dev, state, epochs, quiet):
    """Finish an interrupted epoch first, then the remaining ones. With
    train.ema, fit() ends by copying the averages into the model; a resumed
    partial epoch then trains on from them."""

    def run(data, start, end):  # the data shuffles itself
        model.fit(data, epochs=end, initial_epoch=start, shuffle=False, callbacks=callbacks,
                  verbose=0 if quiet else 1)

    epoch = state["epoch"]
    if state["step"] and epoch < epochs:
        dev.step_offset = state["step"]
        run(train_data.skip(state["step"]), epoch, epoch + 1)
        dev.step_offset, epoch = 0, epoch + 1
    if epoch < epochs and not model.stop_training:
        run(train_data, epoch, epochs)


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
    recorded = check_resumable(app, config, run_dir, data_root)
    result = finished(run_dir, recorded, t["epochs"], quiet)
    if result is not None:
        return result
    record_epochs(run_dir, recorded, t["epochs"])

    strategy = distribute.make_strategy(t["strategy"])
    chief, shared_dir = distribute.is_chief(strategy), run_dir
    quiet, run_dir = quiet or not chief, distribute.worker_dir(strategy, run_dir)
    runs.remove_stale(run_dir)
    keras.utils.set_random_seed(t["seed"])
    checkpoint, state, records = resume_state(run_dir, quiet)
    resolved = with_data_files(app, config, data_root)
    # New asset files are staged until the run directory is claimed; the
    # staging folder lives as long as the pipelines that may read from it.
    with runs.scratch_folder("assets") as staging, \
            precision_policy(t["mixed_precision"]), strategy.scope():
        assets = build_assets(app, resolved, data_root, run_dir, init_from, Path(staging))
        distribute.check_workers_agree(strategy, shared_dir, checkpoint, assets)
        train_data, dev_data = app.build_data(resolved, data_root, assets)
        if t["max_steps_per_epoch"]:
            train_data = train_data.take(t["max_steps_per_epoch"])
        train_data, dev_data = (distribute.split_between_replicas(data, strategy)
                                for data in (train_data, dev_data))
        model, changes = build_model(app, resolved, assets, checkpoint, init_from, strategy,
                                     train_data.element_spec)
        assets = claim_run_dir(run_dir, config, assets, model, checkpoint)
        if changes:
            runs.write_json(run_dir / "vocabularies.json", {"from": str(init_from), **changes})
            if not quiet:
                print(f"fine-tuning from {init_from}:\n{transfer.describe(changes)}")
        callbacks, dev, monitor = make_callbacks(app, resolved, data_root, assets, run_dir,
                                                 dev_data, state, records, quiet, strategy)
        if init_from and not records:
            score_start(dev, model, records, run_dir)
        fit(model, train_data, callbacks, dev, state, t["epochs"], quiet)
        result = _result(records, state, monitor)
        result["test"] = (distribute.alone(strategy, score_test_sets, app, model, resolved,
                                           data_root, assets, run_dir) if chief else {})
    runs.write_json(run_dir / "result.json", result)
    if not quiet and result["best"]:
        print(f"best {monitor} {result['best'][monitor]:.4f} at epoch {result['best_epoch']}; "
              f"run dir {run_dir}")
    return result


def score_test_sets(app, model, config, data_root, assets, run_dir):
    """Scores of the best model on the app's test sets (a full decode, as the
    app does for a final score), their reports added to report.txt and
    their figures drawn as figures/test-<name>.png: held-out numbers are
    measured once, at the end."""
    sets = app.test_sets(config)
    if not sets:
        return {}
    runs.load_weights(model, runs.model_file(run_dir))
    scores, reports = {}, []
    for name, path in sets.items():
        scores[name] = runs.evaluate(app, model, config, data_root, assets, run_dir, f"test-{name}",
                                     path=path, final=True)
        report = scores[name].pop("report", None)
        if report:
            reports.append(f"== {name}: {path}\n{report.rstrip()}\n")
    if reports:
        report_file = run_dir / "report.txt"
        dev = report_file.read_text(encoding="utf-8") if report_file.is_file() else ""
        runs.write_text(report_file, "\n".join([dev, *reports]).lstrip("\n"))
    return scores
