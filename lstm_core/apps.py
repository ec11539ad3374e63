"""The small interface through which the core drives an application.

The core never imports an app by name. An app is a subclass of :class:`App`
advertised in the ``lstm_suite.apps`` entry-point group of its distribution
(see ``pyproject.toml``); a recipe's ``app:`` key picks it by that name.
"""

from __future__ import annotations

import functools
from importlib import metadata

from lstm_core.errors import UserError

ENTRY_POINT_GROUP = "lstm_suite.apps"


class App:
    """What an application gives the core.

    ``assets`` is a JSON-serializable dict the app builds from the training
    data (vocabularies, tag lists, feature settings). The trainer saves it in
    the run directory as ``assets.json`` and hands it back on resume,
    evaluation, prediction and export, so a run never re-reads training data
    just to rebuild a vocabulary.
    """

    #: Name used in recipes (``app: ner``).
    name: str = ""
    #: Recipe schemas (see :mod:`lstm_core.recipes`) of the ``data`` and
    #: ``model`` sections; the core owns ``train`` and ``export``.
    data_schema: dict = {}
    model_schema: dict = {}
    #: Name of the dev metric that picks the best checkpoint (higher is
    #: better unless ``metric_mode == "min"``).
    metric: str = ""
    metric_mode: str = "max"

    def build_assets(self, config: dict, data_root) -> dict:
        raise NotImplementedError

    def build_data(self, config: dict, data_root, assets: dict):
        """Return ``(train_dataset, dev_dataset)``: batched ``tf.data``
        pipelines of ``(inputs, targets)`` ready for ``model.fit``."""
        raise NotImplementedError

    def build_model(self, config: dict, assets: dict):
        """Return an uncompiled ``keras.Model``. A model whose loss is not a
        plain Keras loss (CRF, CTC) implements it in its own ``compute_loss``
        or ``train_step``; the trainer compiles it with ``loss=None`` then."""
        raise NotImplementedError

    def initialize(self, model, config: dict, assets: dict) -> None:
        """Set weights of a model about to train from scratch (pretrained
        vectors, say). Not called when the weights come from a checkpoint or
        another run, so using a run never needs the files this reads."""

    def loss(self, config: dict):
        """A Keras loss for ``model.compile``, or None when the model
        computes its own."""
        return None

    def evaluate(self, model, config: dict, data_root, assets: dict,
                 path=None) -> dict:
        """Score ``model`` on the dev split (or on the file ``path``).
        Returns flat ``{metric_name: float}`` including :attr:`metric`, and
        may carry a printable ``"report"`` string."""
        raise NotImplementedError

    def test_sets(self, config: dict) -> dict:
        """``{name: path}`` of further sets to score at the end of training
        (a test file the recipe names and that exists)."""
        return {}

    def predict(self, model, config: dict, assets: dict, input_path,
                output_path=None) -> None:
        raise NotImplementedError

    def ensemble(self, models: list):
        """One model that averages ``models`` (runs of one recipe and data
        with other seeds or variants), for ``lstm-suite export`` of several runs."""
        raise UserError(f"app {self.name!r} cannot export an ensemble of runs")

    def serving_module(self, model, config: dict, assets: dict):
        """A ``tf.Module`` whose ``serving_default`` is the export contract."""
        raise NotImplementedError

    def serving_example(self, assets: dict) -> dict:
        """Keyword arguments for ``serving_default`` used to check an export
        in a fresh process (for example ``{"sentences": [...]}``)."""
        raise NotImplementedError


@functools.cache
def _entry_points() -> dict:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_apps() -> list[str]:
    return sorted(_entry_points())


def get_app(name: str) -> App:
    """Instantiate the app registered under ``name``."""
    points = _entry_points()
    if name not in points:
        known = ", ".join(available_apps()) or "none installed"
        raise UserError(f"unknown app {name!r}; installed apps: {known}")
    return points[name].load()()
