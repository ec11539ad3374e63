"""``lstm-suite``: train, fine-tune, evaluate, predict and export from recipes.

Heavy modules (the trainer, TensorFlow work) are imported inside the
commands, so ``--help`` stays quick and a bad recipe fails before any of it.
"""

import argparse
import difflib
import importlib.util
import os
import shutil
import sys
import textwrap
import traceback
from pathlib import Path

import lstm_core
from lstm_core.errors import UserError

EPILOG = ("Data paths in recipes are relative to the data root: --data-dir, else "
          "$LSTM_SUITE_DATA, else ./data. Errors print one line; --debug shows the traceback, "
          "--verbose TensorFlow's own log lines.")
# The recipes/ folder of the source tree, installed under this name (pyproject.toml).
BUNDLED_RECIPES = "lstm_suite_recipes"


def load_config(recipe_path, overrides=(), data_dir=None):
    """Recipe file -> ``(app, config, data_root, recipe)``: the config
    validated and defaults filled; its data paths stay as written (relative
    to the data root, so the run directory records no machine paths) but
    are checked to exist under the root."""
    from lstm_core.apps import available_apps, get_app
    from lstm_core.recipes import RecipeError, data_root, load_recipe, resolve_data_files, validate
    from lstm_core.schema import recipe_schema

    recipe = load_recipe(find_recipe(recipe_path), overrides)
    name = recipe.raw.get("app")
    if not isinstance(name, str) or not name:
        known = ", ".join(available_apps()) or "none installed"
        raise RecipeError(f"app: required key naming the application ({recipe.locate('app')}); "
                          f"installed apps: {known}")
    try:
        app = get_app(name)
    except UserError as error:
        raise RecipeError(f"app: {error} ({recipe.locate('app')})") from None
    schema = recipe_schema(app)
    config = validate(recipe, schema)
    root = data_root(data_dir)
    resolve_data_files(config, schema, recipe, root)  # names missing files before anything heavy
    return app, config, root[0], recipe


# -- commands --------------------------------------------------------------------


def command_train(args):
    from lstm_core.runs import check_init_source
    from lstm_core.trainer import train

    init_from = getattr(args, "source", None)
    if init_from is not None and not Path(init_from).exists():
        raise UserError(f"--from {init_from}: no such run directory or model file")
    app, config, root, recipe = load_config(args.recipe, args.set, args.data_dir)
    if init_from is not None:
        check_init_source(init_from, app.name)
    default = recipe.name if init_from is None else f"{recipe.name}-finetuned"
    run_dir = Path(args.run_dir or Path("runs") / default)
    source = init_from and Path(init_from).resolve()
    if source and run_dir.resolve() == (source if source.is_dir() else source.parent):
        raise UserError(f"--run-dir {run_dir} is where --from {init_from} lives; fine-tune "
                        f"into another run directory")
    train(app, config, run_dir, root, quiet=args.quiet, init_from=init_from)


def command_evaluate(args):
    from lstm_core.recipes import data_root
    from lstm_core.runs import evaluate, load_run

    if args.data and not Path(args.data).exists():
        raise UserError(f"--data {args.data}: no such file or directory")
    app, config, assets, model = load_run(args.run_dir, args.data_dir, args.set)
    figure = f"evaluate-{Path(args.data).stem if args.data else 'dev'}"
    scores = evaluate(app, model, config, data_root(args.data_dir)[0], assets, args.run_dir, figure,
                      args.data, final=True)
    report = scores.pop("report", None)
    if report:
        print(report.rstrip())
    for name, value in scores.items():
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")


def command_predict(args):
    from lstm_core.runs import load_run

    if not Path(args.input).exists():
        raise UserError(f"{args.input}: input file not found")
    if args.output and Path(args.output).exists() and not args.force:
        raise UserError(f"{args.output} exists; won't overwrite it (use --force)")
    app, config, assets, model = load_run(args.run_dir, overrides=args.set)
    app.predict(model, config, assets, args.input, args.output)


def command_export(args):
    from lstm_core.export import export_run

    out = export_run(args.run_dirs, args.out_dir, check=False if args.no_check else None,
                     overrides=args.set)
    print(f"exported {out}")


def bundled_recipe_dirs():
    """Folders of the bundled recipes: ``recipes/`` beside the package in a
    source checkout, and the installed package ``lstm_suite_recipes`` (the
    same folder in an editable install)."""
    checkout = Path(lstm_core.__file__).resolve().parents[1]
    dirs = [checkout / "recipes"] if (checkout / "pyproject.toml").is_file() else []
    # find_spec, not importlib.resources: the package is a namespace (no
    # __init__.py), which resources cannot read in an editable install.
    spec = importlib.util.find_spec(BUNDLED_RECIPES)
    dirs += [Path(d) for d in (spec.submodule_search_locations or [])] if spec else []
    return list(dict.fromkeys(d.resolve() for d in dirs if d.is_dir()))


def bundled_recipes():
    """``{name: path}`` of the bundled recipes, named by their path under
    the recipes folder without ``.yaml``: ``ner/quickstart``."""
    found = {}
    for root in bundled_recipe_dirs():
        for path in sorted(root.glob("**/*.yaml")):
            found.setdefault(path.relative_to(root).with_suffix("").as_posix(), path)
    return found


def find_recipe(argument):
    """The recipe file ``argument`` names: an existing file, else a bundled
    recipe by name (``ner/quickstart``, ``ner/quickstart.yaml``, or
    ``recipes/ner/quickstart.yaml`` as the README writes it)."""
    path = Path(argument)
    if path.is_file():
        return path
    bundled = bundled_recipes()
    name = path.as_posix().removesuffix(".yaml")
    for candidate in (name, name.removeprefix("recipes/")):
        if candidate in bundled:
            return bundled[candidate]
    close = difflib.get_close_matches(name.removeprefix("recipes/"), bundled, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    names = ", ".join(bundled) or "none installed"
    raise UserError(f"{argument}: no such recipe file, nor a bundled recipe of that name{hint} "
                    f"(bundled: {names})")


def recipe_files():
    """``(shown, path)`` of the bundled recipes (shown by name) and of those
    under ``./recipes`` (shown as paths), each file once."""
    listed = {path.resolve(): name for name, path in bundled_recipes().items()}
    for path in sorted(Path("recipes").glob("**/*.yaml")):
        listed.setdefault(path.resolve(), path.as_posix())
    return [(shown, path) for path, shown in listed.items()]


def command_recipes(args):
    files = recipe_files()
    width = max((len(shown) for shown, _ in files), default=0)
    for shown, path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        first = next((line.lstrip("#").strip() for line in lines if line.startswith("#")), "")
        print(f"{shown:{width}}  {first}".rstrip())


# -- parser ----------------------------------------------------------------------


def schema_help(schema, prefix=""):
    """One line per recipe key: name, default, allowed values, doc."""
    from lstm_core.recipes import REQUIRED

    lines = []
    for key, field in schema.items():
        if isinstance(field, dict):
            lines += schema_help(field, f"{prefix}{key}.")
            continue
        choices = field.choices() if callable(field.choices) else field.choices
        default = "required" if field.default is REQUIRED else f"default {field.default!r}"
        allowed = f"; one of {', '.join(map(str, choices))}" if choices else ""
        lines.append(f"  {prefix}{key} ({default}{allowed}) {field.doc}".rstrip())
    return lines


def keys_help():
    """The epilog of ``train``/``finetune``: every recipe key of the core and
    of each installed app."""
    from lstm_core.apps import available_apps, get_app
    from lstm_core.schema import EXPORT_SCHEMA, FINETUNE_SCHEMA, TRAIN_SCHEMA

    lines = ["recipe keys (set with --set KEY=VALUE or in the YAML):",
             *schema_help(TRAIN_SCHEMA, "train."), *schema_help(FINETUNE_SCHEMA, "finetune."),
             *schema_help(EXPORT_SCHEMA, "export.")]
    for name in available_apps():
        app = get_app(name)
        lines += ["", f"app: {name}", *schema_help(app.data_schema, "data."),
                  *schema_help(app.model_schema, "model."),
                  *schema_help(app.decode_schema, "decode.")]
    # Wrapped to the terminal as argparse wraps the rest of the help (a raw
    # epilog is not), a long doc continuing under its key; 80 columns at least.
    width = max(shutil.get_terminal_size().columns - 2, 78)
    keys = [textwrap.fill(line, width, subsequent_indent=" " * 6, break_long_words=False,
                          break_on_hyphens=False) for line in lines]
    return "\n".join(keys + ["", textwrap.fill(EPILOG, width)])


class Parser(argparse.ArgumentParser):
    """An argument parser whose epilog may be computed when help is shown
    (listing the recipe keys imports TensorFlow and the apps)."""

    def __init__(self, *args, epilog_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epilog_fn = epilog_fn

    def format_help(self):
        if self.epilog_fn:
            self.epilog = self.epilog_fn()
        return super().format_help()


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of errors")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show TensorFlow's own log lines (start-up, devices)")
    parser = Parser(prog="lstm-suite", description=__doc__.split("\n")[0], epilog=EPILOG,
                    parents=[common])
    parser.add_argument("--version", action="version", version=f"lstm-suite {lstm_core.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, run, help, **kwargs):
        sub = commands.add_parser(name, help=help, description=help, parents=[common],
                                  formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        sub.set_defaults(run=run)
        return sub

    for name, help in (("train", "train a model from a recipe (an existing run dir is resumed)"),
                       ("finetune", "train from a recipe, starting from another run's weights")):
        sub = command(name, command_train, help, epilog_fn=keys_help)
        sub.add_argument("recipe", help="recipe YAML file, or the name of a bundled recipe "
                                        "(e.g. ner/quickstart; see `lstm-suite recipes`)")
        if name == "finetune":
            sub.add_argument("--from", dest="source", required=True, metavar="RUN_DIR_OR_MODEL",
                             help="run directory or .keras model whose weights and vocabulary start the run")
        sub.add_argument("--run-dir", help="run directory (default runs/<recipe name>"
                         + (")" if name == "train" else "-finetuned)"))
        sub.add_argument("--data-dir", help="data root for the recipe's data paths")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a recipe value, e.g. train.epochs=3 (repeatable)")
        sub.add_argument("--quiet", action="store_true", help="no progress output")

    decode_help = ("change a decoding setting of the trained model, e.g. decode.beam_width=8 "
                   "(repeatable; only decode.* keys)")
    sub = command("evaluate", command_evaluate, "score a trained run on its dev set or other data "
                  "(a full decode, as for a test set); what the app draws of it goes to "
                  "RUN_DIR/figures/evaluate-<data name>.png", epilog=EPILOG)
    sub.add_argument("run_dir")
    sub.add_argument("--data", metavar="PATH",
                     help="file, folder or manifest to score instead of the recipe's dev set")
    sub.add_argument("--data-dir", help="data root for the recipe's data paths")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=decode_help)

    sub = command("predict", command_predict, "run a trained model on an input file")
    sub.add_argument("run_dir")
    sub.add_argument("input", help="input file (the app says which formats)")
    sub.add_argument("--output", metavar="FILE", help="output file (default: standard output)")
    sub.add_argument("--force", action="store_true", help="overwrite an existing --output file")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=decode_help)

    sub = command("export", command_export, "write a SavedModel for serving with plain TensorFlow")
    sub.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                     help="a run; several runs of one recipe (other seeds or variants) "
                          "export as one ensemble that averages their models")
    sub.add_argument("out_dir", metavar="OUT_DIR", help="new (or empty) directory for the SavedModel")
    sub.add_argument("--no-check", action="store_true",
                     help="skip loading the export in a fresh process to compare outputs")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=decode_help)

    command("recipes", command_recipes,
            "list the bundled recipes (train one by name: lstm-suite train ner/quickstart) "
            "and those under ./recipes")
    return parser


def quiet_tensorflow():
    """Import TensorFlow without its C++ start-up lines (oneDNN, CUDA stubs,
    CPU features: a user sees our progress and errors, not the runtime's).
    TensorFlow prints those before its logging reads TF_CPP_MIN_LOG_LEVEL, so
    standard error is /dev/null while the import runs, and only then; the
    variable (3: fatal only) keeps later lines such as a failed cuInit out.
    Nothing to do once TensorFlow is loaded (tests calling main())."""
    if "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = next((a for a in argv if not a.startswith("-")), None)  # no main option takes a value
    if "--verbose" not in argv and command not in (None, "recipes"):  # those never load TensorFlow
        quiet_tensorflow()  # before anything imports it: `train --help` does, to list the keys
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, usage errors
        return done.code if isinstance(done.code, int) else 0
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        args.run(args)
        sys.stdout.flush()  # here, so a closed pipe is caught below
    except BrokenPipeError:  # `lstm-suite recipes | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit flush
        return 1
    except (UserError, OSError) as error:  # OSError: a file the user named, unreadable or unwritable
        if getattr(args, "debug", False):  # absent unless given (before or after the command)
            traceback.print_exc()
        message = str(error).replace("\n", "\n  ")
        print(f"lstm-suite: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = " (run the same command again to resume)" if args.command in ("train", "finetune") else ""
        print(f"\nlstm-suite: interrupted{resume}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
