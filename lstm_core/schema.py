"""The schema of a whole recipe, in one place: the core's sections
(``train``, ``export``), the app's (``data``, ``model``, ``decode``), and the
rules that say which of them may change once a run exists.

Pure Python, like :mod:`lstm_core.recipes`: ``--help`` and recipe errors
need no TensorFlow.
"""

import difflib

from lstm_core.recipes import (
    Field, Recipe, RecipeError, diff_configs, read_config, resolve_data_files, validate,
    with_overrides)

OPTIONAL_FLOAT = (float, type(None))
OPTIONAL_INT = (int, type(None))

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
    "weight_noise": Field(float, 0.0, min=0,
                          doc="standard deviation of Gaussian noise added to every trainable weight "
                              "for each training step (Graves et al. 2013; 0: off): gradients are "
                              "taken at the noisy weights, the update applies to the clean ones"),
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

EXPORT_SCHEMA = {
    "check": Field(bool, True, doc="after exporting, load the SavedModel in a fresh process with "
                                   "only TensorFlow (and the app's serving imports), and in a TF1 "
                                   "session as TensorFlow Serving does, and compare its outputs on "
                                   "the app's example"),
}

FINETUNE_SCHEMA = {
    "learning_rate": Field(OPTIONAL_FLOAT, None, min=0,
                           doc="peak learning rate of a fine-tuning run (lstm-suite finetune); "
                               "null: a tenth of train.optimizer.learning_rate"),
    "freeze": Field(list, [], items=str,
                    doc="layers kept as the starting run left them: names or name prefixes "
                        "(e.g. [encoder])"),
}

#: The section that may change after training (``--set decode.KEY=VALUE`` on
#: evaluate, predict and export; ignored by the resume check).
DECODE = "decode"


def recipe_schema(app):
    """The whole schema of a recipe for ``app``: its sections plus the core's."""
    return {"app": Field(str, doc="the application the recipe is for"), "data": app.data_schema,
            "model": app.model_schema, DECODE: app.decode_schema, "train": TRAIN_SCHEMA,
            "finetune": FINETUNE_SCHEMA, "export": EXPORT_SCHEMA}


def with_data_files(app, config, data_root):
    """``config`` with its data paths resolved against ``data_root`` (a path
    or the ``(root, how)`` pair of :func:`lstm_core.recipes.data_root`); a
    missing file stays as it is, for whatever reads it to name."""
    return resolve_data_files(config, recipe_schema(app), None, data_root, strict=False)


def recorded_config(app, path):
    """The config a run recorded at ``path``, checked against ``app``'s
    schema as it is now: keys added since the run was made get their
    defaults (which keep the behaviour of the time); a key the app no longer
    knows is a recipe error naming it and the file."""
    return validate(Recipe(path, read_config(path)), recipe_schema(app))


def training_changes(app, recorded, config, data_root):
    """What differs between a run's recorded config and ``config``, data
    paths compared resolved (a path recorded relative to the root, or
    resolved as earlier versions wrote it, names the same file). Left out:
    decode settings, which may change at any time, and ``train.epochs``,
    which a resumed run may raise to train on (as Keras's
    ``fit(initial_epoch=...)`` does)."""
    def compared(c):
        c = {key: value for key, value in with_data_files(app, c, data_root).items() if key != DECODE}
        return {**c, "train": {k: v for k, v in c["train"].items() if k != "epochs"}}

    return diff_configs(compared(recorded), compared(config))


def apply_decode_overrides(app, config, overrides):
    """A recorded run's ``config`` with ``--set decode.KEY=VALUE``
    ``overrides`` validated and applied; any other key is refused, since it
    would describe another model than the trained one."""
    others = [text for text in overrides if not text.strip().startswith(f"{DECODE}.")]
    if others:
        raise RecipeError(f"--set {others[0]}: only {DECODE}.* settings can change after training "
                          f"(the rest describes the trained model); {DECODE} keys: "
                          f"{', '.join(app.decode_schema) or 'none for this app'}")
    if not overrides:
        return config
    recorded = Recipe("recipe.yaml", {DECODE: config.get(DECODE) or {}})
    decode = validate(with_overrides(recorded, overrides), {DECODE: app.decode_schema})[DECODE]
    return {**config, DECODE: decode}


def rnn_names():
    """The registered recurrent layers a recipe may name (asked when a
    recipe is validated, so layers registered by then count)."""
    from lstm_core.layers import RNN_LAYERS

    return sorted(RNN_LAYERS)


def encoder_schema(units=128, num_layers=1, cell_options=None):
    """The schema of a stack of recurrent layers (an ``RNNStack``), the
    ``encoder`` section every app's model has, with the app's defaults."""
    return {
        "cell": Field(str, "peephole_lstm", choices=rnn_names, doc="registered recurrent layer"),
        "units": Field(int, units, min=1, doc="units per direction"),
        "num_layers": Field(int, num_layers, min=1, doc="stacked recurrent layers"),
        "bidirectional": Field(bool, True, doc="run each layer both ways, outputs concatenated"),
        "dropout": Field(float, 0.0, min=0, max=0.99, doc="between layers"),
        "residual": Field(bool, False,
                          doc="add each layer's input to its output where their sizes match"),
        "cell_options": Field(dict, dict(cell_options or {}),
                              doc="extra layer arguments: cell_clip, num_proj, proj_clip, ..."),
    }


def check_rnn_options(section, cell, options):
    """Refuse ``cell_options`` the registered recurrent layer ``cell`` does
    not take, as a recipe error naming them (a misspelt ``cell_clip`` is the
    user's to fix, not a crash inside the layer)."""
    from lstm_core.layers import rnn_arguments

    accepted = rnn_arguments(cell)
    unknown = sorted(set(options) - accepted)
    if unknown:
        guess = difflib.get_close_matches(unknown[0], sorted(accepted), n=1)
        hint = f"did you mean {guess[0]}?" if guess else f"it takes {', '.join(sorted(accepted))}"
        raise RecipeError(f"{section}.cell_options: {cell} takes no {', '.join(unknown)}; {hint}")
