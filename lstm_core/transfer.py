"""Fine-tuning from another run whose vocabularies differ from the new one's.

A model's weights are tied to its vocabularies where an axis has one entry
per word, tag, phone or subword: an embedding's rows, an output layer's
columns, a CRF's transitions. The app names those axes
(:meth:`lstm_core.apps.App.vocabulary_axes`) and the entries of each
vocabulary (:meth:`~lstm_core.apps.App.vocabularies`). The starting run's
weights are then carried over entry by entry: rows of entries both runs
have are copied, rows of new entries keep the new model's initial values,
rows of dropped entries are left behind. Every other weight is copied as is.
"""

import difflib
import re

import keras
import numpy as np

from lstm_core import runs
from lstm_core.errors import UserError
from lstm_core.recipes import RecipeError

#: How many added or dropped entries a report lists by name.
SHOWN = 20


def carry_over(app, config, model, init_from, assets) -> dict:
    """Load the weights of the run (or model file) ``init_from`` into
    ``model``, built for ``assets``; returns what was kept, added and
    dropped of each vocabulary."""
    weights, source_assets = runs.init_source(init_from)
    old, new = app.vocabularies(source_assets), app.vocabularies(assets)
    if old == new:
        runs.load_weights(model, weights)
        return {}
    source = app.build_model(config, source_assets)
    runs.load_weights(source, weights)
    app.initialize(model, config, assets)  # new rows from pretrained vectors, where the app has them
    axes = {id(variable): names for variable, names in app.vocabulary_axes(model)}
    if len(source.weights) != len(model.weights):
        raise UserError(f"--from {init_from}: its model has {len(source.weights)} weights and this "
                        f"recipe's {len(model.weights)}; fine-tune with the same model settings")
    rows = {name: positions(old[name], new[name]) for name in new}
    for before, after in zip(source.weights, model.weights):
        value = keras.ops.convert_to_numpy(before)
        names = axes.get(id(after))
        if names:
            value = remap(value, keras.ops.convert_to_numpy(after), [rows.get(n) for n in names])
        elif value.shape != tuple(after.shape):
            raise UserError(f"--from {init_from}: its weight {before.path} has shape {value.shape}, "
                            f"this model's {tuple(after.shape)}; fine-tune with the same model settings")
        after.assign(value)
    return report(old, new)


def positions(old, new) -> np.ndarray:
    """For each entry of ``new``, its index in ``old`` (-1: a new entry)."""
    index = {entry: i for i, entry in enumerate(old)}
    return np.asarray([index.get(entry, -1) for entry in new], "int64")


def remap(old, fresh, rows):
    """``fresh`` with the entries it shares with ``old`` copied from it;
    ``rows[axis]`` maps the axis's new entries to old ones (None: the axis
    is not a vocabulary's and keeps its size)."""
    new_index, old_index = [], []
    for axis, mapping in enumerate(rows):
        if mapping is None:
            if old.shape[axis] != fresh.shape[axis]:
                raise UserError(f"cannot carry a weight of shape {old.shape} over to "
                                f"{fresh.shape}: axis {axis} is no vocabulary's")
            new_index.append(np.arange(fresh.shape[axis]))
            old_index.append(np.arange(old.shape[axis]))
        else:
            new_index.append(np.flatnonzero(mapping >= 0))
            old_index.append(mapping[mapping >= 0])
    value = fresh.copy()
    value[np.ix_(*new_index)] = old[np.ix_(*old_index)]
    return value


def report(old, new) -> dict:
    """Per vocabulary: counts of kept, added and dropped entries, and the
    first few added and dropped by name."""
    out = {}
    for name in new:
        before, after = set(old.get(name, ())), set(new[name])
        added = [entry for entry in new[name] if entry not in before]
        dropped = [entry for entry in old.get(name, ()) if entry not in after]
        out[name] = {"kept": len(after & before), "added": len(added), "dropped": len(dropped),
                     "added_first": [str(e) for e in added[:SHOWN]],
                     "dropped_first": [str(e) for e in dropped[:SHOWN]]}
    return out


def describe(changes) -> str:
    """One line per vocabulary, for the log."""
    lines = []
    for name, c in changes.items():
        line = f"{name}: {c['kept']} kept, {c['added']} added, {c['dropped']} dropped"
        for kind in ("added", "dropped"):
            if c[f"{kind}_first"]:
                more = " ..." if c[kind] > len(c[f"{kind}_first"]) else ""
                line += f"; {kind} {' '.join(c[f'{kind}_first'][:8])}{more}"
        lines.append(line)
    return "\n".join(lines)


def freeze(model, names):
    """Make the layers named, or whose names start with, each of ``names``
    untrainable (``finetune.freeze``)."""
    layers = list(model._flatten_layers(include_self=False, recursive=True))
    for name in names:
        found = [layer for layer in layers if layer.name.startswith(name)]
        if not found:
            raise RecipeError(f"finetune.freeze: the model has no layer named or starting with "
                              f"{name!r}{suggestion(name, [layer.name for layer in layers])}")
        for layer in found:
            layer.trainable = False


def suggestion(name, known):
    """"; did you mean X" for the closest of ``known`` (their Keras
    numbering, as in ``lstm_3``, aside), else the list of them."""
    stems = sorted({re.sub(r"_\d+$", "", k) for k in known})
    guess = difflib.get_close_matches(name, stems, n=1)
    return f"; did you mean {guess[0]}?" if guess else f" (its layers: {', '.join(sorted(known))})"
