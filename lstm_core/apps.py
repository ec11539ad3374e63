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


METRIC_MODES = ("max", "min")


class App:
    """What an application gives the core.

    ``assets`` is what the app builds from the training data: a
    JSON-serializable dict (vocabularies, tag lists, feature settings) and,
    when it needs them, files (a subword model, normalisation statistics).
    The trainer keeps both in the run directory (``assets.json``,
    ``assets/``) and hands them back on resume, evaluation, prediction and
    export as a :class:`lstm_core.runs.Assets` (the dict, plus
    ``assets.file(name)``), so a run never re-reads training data just to
    rebuild a vocabulary; the export copies the files into the SavedModel.
    """

    #: Name used in recipes (``app: ner``).
    name: str = ""
    #: Recipe schemas (see :mod:`lstm_core.recipes`) of the ``data`` and
    #: ``model`` sections; the core owns ``train`` and ``export``.
    data_schema: dict = {}
    model_schema: dict = {}
    #: Schema of the ``decode`` section: settings of decoding (beam width,
    #: length penalty, maximum output length) that ``evaluate``, ``predict``
    #: and ``export`` may change with ``--set decode.KEY=VALUE`` after
    #: training, since they are not part of the trained model.
    decode_schema: dict = {}
    #: Name of the dev metric that picks the best checkpoint, and whether
    #: higher (``"max"``) or lower (``"min"``: error rates, losses) is better.
    #: Without a metric the dev loss picks it (see also :meth:`dev_metric`).
    metric: str = ""
    metric_mode: str = "max"
    #: Modules a serving process imports before loading the export, because
    #: its graph uses ops they register (``["tensorflow_text"]`` for
    #: SentencePiece ops). Never this suite's: an export needs TensorFlow
    #: and these only, which the export check enforces.
    serving_imports: tuple = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.metric_mode not in METRIC_MODES:
            raise TypeError(f"{cls.__name__}.metric_mode must be one of {', '.join(METRIC_MODES)}, "
                            f"got {cls.metric_mode!r}")

    def dev_metric(self, config: dict) -> str:
        """The dev metric that picks the best checkpoint of a run of
        ``config``: :attr:`metric`, unless the app lets a recipe choose ""
        instead, to score dev by its loss (no decoding: cheaper for an app
        whose metric needs a search, such as translation's BLEU). The
        recipe key that chooses is the app's."""
        return self.metric

    def build_assets(self, config: dict, data_root, folder) -> dict:
        """The JSON assets of a new run; files the app needs (a subword
        model, say) it writes into ``folder``, a new empty directory that
        becomes the run's ``assets/``."""
        raise NotImplementedError

    def finetune_assets(self, config: dict, data_root, folder, previous) -> dict:
        """The assets of a run that fine-tunes from a run whose assets are
        ``previous`` (a :class:`lstm_core.runs.Assets`): by default
        ``previous`` itself, so the vocabularies stay as they were. An app
        whose users bring new words, labels or phones returns new assets as
        :meth:`build_assets` does (files in ``folder``); the weights of
        entries both have are carried over by :meth:`vocabularies`."""
        return previous

    def vocabularies(self, assets: dict) -> dict:
        """``{name: entries}``: each vocabulary whose size shapes a weight,
        its entries (hashable: words, tags, subword pieces) in the order the
        model numbers them, reserved ids (padding, unknown) included under
        names no real entry can have."""
        return {}

    def vocabulary_axes(self, model) -> list:
        """``[(variable, axes)]``: the weights of ``model`` that have a row
        (column, ...) per vocabulary entry, with per axis the vocabulary's
        name or None, e.g. ``(embedding.embeddings, ("words", None))``."""
        return []

    def build_data(self, config: dict, data_root, assets: dict):
        """Return ``(train_dataset, dev_dataset)``: batched ``tf.data``
        pipelines of ``(inputs, targets)`` ready for ``model.fit``."""
        raise NotImplementedError

    def build_model(self, config: dict, assets: dict):
        """Return an uncompiled ``keras.Model``. A model whose loss is not a
        plain Keras loss (CRF, CTC) implements it in its own ``compute_loss``
        or ``train_step``; the trainer compiles it with ``loss=None`` then.
        Such a loss returns this replica's share of the batch's loss: under a
        strategy Keras sums the replicas' gradients
        (:func:`lstm_core.distribute.replica_loss` makes the share)."""
        raise NotImplementedError

    def initialize(self, model, config: dict, assets: dict) -> None:
        """Set weights of a model about to train from scratch (pretrained
        vectors, say), or about to fine-tune with new vocabulary entries (then
        the entries it shares with the starting run are overwritten with
        that run's). Not called when the weights come from a checkpoint, so
        using a run never needs the files this reads."""

    def loss(self, config: dict):
        """A Keras loss for ``model.compile``, or None when the model
        computes its own."""
        return None

    def evaluate(self, model, config: dict, data_root, assets: dict,
                 path=None, final=False, figure=None) -> dict:
        """Score ``model`` on the dev split (or on ``path``: a file, folder or
        manifest the app reads). ``final`` is False for the dev score of each
        training epoch, which should be cheap (greedy decoding, say), and
        True for a final or test score (``lstm-suite evaluate``, the test
        sets at the end of training), which decodes fully (beam search).
        Returns flat ``{name: value}``: floats (including :attr:`metric`)
        are shown with the progress and picked up by early stopping and
        plateaus; integers are counts, recorded in ``metrics.jsonl`` only.
        May carry a printable ``"report"`` string.

        ``figure``, when not None, is a path ending in ``.png`` where the app
        may draw what this evaluation saw, for a person to look at: a few
        examples with the model's view of them (features, posteriors,
        attention) and its output against the reference. An app that draws
        nothing ignores it. Draw on a ``matplotlib.figure.Figure`` (never
        pyplot: no global state, no GUI backend) and ``savefig(figure)``;
        keep it under a second, as every epoch's dev pass draws. The core
        names the file and writes it atomically (:func:`lstm_core.runs.evaluate`):
        ``figures/dev-epoch-003.png`` of the run directory for epoch 3's
        dev pass (on the chief only), ``figures/test-<name>.png`` for the
        test sets, ``figures/evaluate-<data>.png`` for ``lstm-suite evaluate``."""
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
        """A ``tf.Module`` whose ``serving_default`` is the export contract:
        a ``tf.function`` with an ``input_signature`` (named ``TensorSpec``s:
        raw strings or waveforms in) that returns a dict of named tensors.

        The export saves what that function's graph reads: the model's
        variables, the lookup tables and ``tf.saved_model.Asset``s reachable
        from the module. An asset file is read at serving time through a
        tracked ``tf.saved_model.Asset(assets.file(name))`` (with
        ``tf.io.read_file``, or a table's ``TextFileInitializer``), so the
        export reads its own copy, wherever it moves. Ops from other
        libraries need :attr:`serving_imports`."""
        raise NotImplementedError

    def serving_example(self, assets: dict) -> dict:
        """Keyword arguments for ``serving_default`` used to check an export
        in a fresh process (for example ``{"sentences": [...]}``): lists or
        numpy arrays of any dtype (str or bytes for tf.string)."""
        raise NotImplementedError


#: The attribute of a model that holds :func:`model_cache`'s objects.
MODEL_CACHE = "_lstm_suite_cache"


def model_cache(model, key, make):
    """The object ``make()`` builds for ``model``, built once per model and
    ``key`` (an app's serving module: a new one would trace its graph again
    at every dev evaluation). Kept on the model, so it lives as long as the
    model and no longer: a table on the app (even a WeakKeyDictionary) would
    keep every model alive, as a serving module refers to its model.
    ``object.__setattr__`` skips Keras's and TensorFlow's attribute tracking,
    which would make the object part of the model's state (its checkpoints,
    SavedModels)."""
    cache = vars(model).get(MODEL_CACHE)
    if cache is None:
        cache = {}
        object.__setattr__(model, MODEL_CACHE, cache)
    if key not in cache:
        cache[key] = make()
    return cache[key]


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
