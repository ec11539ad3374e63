"""Recipe loading, merging, overrides, validation, data paths and records."""

import os
import textwrap
from pathlib import Path

import pytest

from lstm_core.errors import UserError
from lstm_core.runs import write_config
from lstm_core.recipes import (
    REQUIRED,
    Field,
    RecipeError,
    data_root,
    diff_configs,
    get_dotted,
    load_recipe,
    read_config,
    resolve_data_files,
    set_dotted,
    validate,
)

REGISTRY = {}  # stands in for a registry that is filled after the schema is defined

SCHEMA = {
    "app": Field(str, choices=lambda: sorted(REGISTRY)),
    "data": {
        "train_file": Field(str, data_file=True),
        "test_file": Field((str, type(None)), None, data_file=True, optional_file=True),
        "lowercase": Field(bool, False),
    },
    "model": {
        "encoder": {
            "cell": Field(str, "lstm", choices=["gru", "lstm", "peephole_lstm"]),
            "units": Field(int, 200, min=1),
            "cell_options": Field(dict, {}),
        },
        "dropout": Field(float, 0.5, min=0, max=0.99),
        "layers": Field(list, [1]),
    },
    "train": {
        "epochs": Field(int, 10, min=1),
        "optimizer": {
            "name": Field(str, "adam", choices=["adam", "adamw", "sgd"]),
            "learning_rate": Field(float, 1e-3, min=0),
        },
        "max_steps": Field((int, type(None)), None, min=1),
        "note": Field(str, "x"),
    },
    "export": {"check": Field(bool, True)},
}


@pytest.fixture(autouse=True)
def _registry():
    REGISTRY["ner"] = object()
    yield
    REGISTRY.clear()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def recipe(tmp_path, text, name="r.yaml", overrides=()):
    return load_recipe(write(tmp_path / name, text), overrides)


def errors(recipe_obj, schema=SCHEMA) -> str:
    with pytest.raises(RecipeError) as info:
        validate(recipe_obj, schema)
    return str(info.value)


GOOD = """
app: ner
data:
  train_file: train.txt
"""


# -- loading and merging ------------------------------------------------------


def test_extends_chain_deep_merges_and_is_relative_to_each_file(tmp_path):
    write(tmp_path / "common" / "root.yaml", """
        app: ner
        model:
          encoder: {cell: gru, units: 10, cell_options: {cell_clip: 5.0}}
          dropout: 0.1
        train: {epochs: 3}
    """)
    write(tmp_path / "ner" / "base.yaml", """
        extends: ../common/root.yaml
        model:
          encoder:
            units: 20
        data:
          train_file: a.txt
    """)
    child = write(tmp_path / "ner" / "child.yaml", """
        # a comment
        extends: base.yaml
        model:
          encoder:
            cell_options: {use_bias: false}
        train: 7
    """)
    r = load_recipe(child)
    assert r.name == "child" and r.path == child
    assert "extends" not in r.raw
    assert r.raw["model"] == {
        "encoder": {"cell": "gru", "units": 20, "cell_options": {"cell_clip": 5.0, "use_bias": False}},
        "dropout": 0.1,
    }
    assert r.raw["train"] == 7  # a non-mapping replaces the parent's mapping
    assert r.raw["data"] == {"train_file": "a.txt"}
    root = os.path.normpath(tmp_path / "common" / "root.yaml")
    assert r.locate("model.encoder.cell") == f"{root}:3"
    assert r.locate("model.encoder.units") == f"{tmp_path / 'ner' / 'base.yaml'}:4"
    assert r.locate("model.encoder.cell_options.use_bias") == f"{child}:5"
    assert r.locate("model.encoder.cell_options.cell_clip") == f"{root}:3"
    assert r.locate("train") == f"{child}:6"
    assert r.locate("train.epochs") == str(child)  # replaced: no longer known
    assert r.locate("nowhere.at.all") == str(child)


def test_null_drops_an_inherited_key(tmp_path):
    write(tmp_path / "base.yaml", """
        model: {encoder: {cell: peephole_lstm, cell_options: {cell_clip: 5.0, num_proj: 8}}}
        data: {test_file: t.txt}
    """)
    child = write(tmp_path / "child.yaml", """
        extends: base.yaml
        model: {encoder: {cell: lstm, cell_options: {cell_clip: null}}}
        data: {test_file: null, dev_file: null}
    """)
    r = load_recipe(child, ["model.encoder.cell_options.num_proj=null"])
    assert r.raw["model"]["encoder"] == {"cell": "lstm", "cell_options": {}}
    assert r.raw["data"] == {"dev_file": None}  # nothing inherited to drop: null stays


def test_extends_cycle_names_the_files(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\napp: ner\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "a.yaml")
    message = str(info.value)
    assert "cycle" in message and "a.yaml -> " in message and "b.yaml" in message


def test_extends_missing_parent_names_the_referring_line(tmp_path):
    r = write(tmp_path / "r.yaml", "app: ner\nextends: nope.yaml\n")
    with pytest.raises(RecipeError, match=r"recipe file not found: .*nope\.yaml \(extends at .*r\.yaml:2\)"):
        load_recipe(r)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found: .*missing.yaml"):
        load_recipe(tmp_path / "missing.yaml")
    assert issubclass(RecipeError, UserError)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.yaml", "app: ner\ndata:\n  train_file: [a, b\nmodel: {}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert f"{path}:4: invalid YAML" in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_top_level_must_be_a_mapping(tmp_path, text):
    with pytest.raises(RecipeError, match="must be a mapping"):
        recipe(tmp_path, text)


def test_recipes_cannot_construct_python_objects(tmp_path):
    with pytest.raises(RecipeError, match="invalid YAML"):
        recipe(tmp_path, "app: !!python/object/apply:os.system ['echo hi']\n")


def test_exponent_floats_in_files_are_floats(tmp_path):
    r = recipe(tmp_path, GOOD + "train:\n  optimizer: {learning_rate: 5e-4}\n")
    assert r.raw["train"]["optimizer"]["learning_rate"] == 5e-4


# -- overrides ----------------------------------------------------------------


def test_set_overrides_parse_values_as_yaml(tmp_path):
    r = recipe(tmp_path, GOOD, overrides=[
        "train.epochs=3",
        "train.optimizer.learning_rate=1e-3",
        "data.lowercase=true",
        "model.layers=[1, 2]",
        "train.optimizer.name=adamw",
        "train.note=a=b",
    ])
    t = r.raw["train"]
    assert t["epochs"] == 3 and type(t["epochs"]) is int
    assert t["optimizer"]["learning_rate"] == 0.001 and type(t["optimizer"]["learning_rate"]) is float
    assert r.raw["data"]["lowercase"] is True
    assert r.raw["model"]["layers"] == [1, 2]
    assert t["optimizer"]["name"] == "adamw"
    assert t["note"] == "a=b"
    assert r.raw["data"]["train_file"] == "train.txt"  # untouched siblings survive
    assert r.locate("train.epochs") == "--set train.epochs=3"
    assert r.locate("data.train_file") == f"{tmp_path / 'r.yaml'}:3"
    config = validate(r, SCHEMA)
    assert config["train"]["epochs"] == 3 and config["model"]["layers"] == [1, 2]


def test_set_new_key_is_validated_as_unknown(tmp_path):
    r = recipe(tmp_path, GOOD, overrides=["model.encoder.unitz=3"])
    assert errors(r) == (
        "model.encoder.unitz: unknown key (--set model.encoder.unitz=3); did you mean model.encoder.units?"
    )


def test_set_without_equals_names_the_override(tmp_path):
    with pytest.raises(RecipeError, match="--set train.epochs: expected KEY=VALUE"):
        recipe(tmp_path, GOOD, overrides=["train.epochs"])
    with pytest.raises(RecipeError, match=r"^--set model.layers=\[1, 2: invalid YAML"):
        recipe(tmp_path, GOOD, overrides=["model.layers=[1, 2"])


# -- validation ---------------------------------------------------------------


def test_defaults_filled_in_a_new_dict(tmp_path):
    r = recipe(tmp_path, GOOD + "model:\n  dropout: 0\n  encoder: {cell_options: {anything: [1]}}\nexport:\n")
    raw_before = repr(r.raw)
    config = validate(r, SCHEMA)
    assert config == {
        "app": "ner",
        "data": {"train_file": "train.txt", "test_file": None, "lowercase": False},
        "model": {
            "encoder": {"cell": "lstm", "units": 200, "cell_options": {"anything": [1]}},
            "dropout": 0.0,
            "layers": [1],
        },
        "train": {
            "epochs": 10,
            "optimizer": {"name": "adam", "learning_rate": 0.001},
            "max_steps": None,
            "note": "x",
        },
        "export": {"check": True},
    }
    assert type(config["model"]["dropout"]) is float  # an int is accepted where a float is expected
    assert repr(r.raw) == raw_before
    config["model"]["layers"].append(2)
    assert SCHEMA["model"]["layers"].default == [1]  # defaults are copied, not shared


def test_unknown_key_suggests_full_path_and_gives_file_line(tmp_path):
    r = recipe(tmp_path, GOOD + "model:\n  encoder:\n    unitz: 3\n")
    assert errors(r) == (
        f"model.encoder.unitz: unknown key ({tmp_path / 'r.yaml'}:6); did you mean model.encoder.units?"
    )


def test_unknown_key_in_the_wrong_section_and_without_a_close_match(tmp_path):
    r = recipe(tmp_path, GOOD + "trian: {}\ntrain:\n  units: 3\n  zzzzzz: 1\n")
    lines = errors(r).splitlines()
    assert lines[0] == f"trian: unknown key ({tmp_path / 'r.yaml'}:4); did you mean train?"
    assert lines[1] == f"train.units: unknown key ({tmp_path / 'r.yaml'}:6); did you mean model.encoder.units?"
    assert lines[2].startswith(f"train.zzzzzz: unknown key ({tmp_path / 'r.yaml'}:7); valid keys in train: epochs,")
    assert "did you mean" not in lines[2]


def test_dotted_key_in_a_file_is_explained(tmp_path):
    r = recipe(tmp_path, GOOD + "train.epochs: 3\n")
    assert errors(r) == (
        f"train.epochs: unknown key ({tmp_path / 'r.yaml'}:4); "
        "in a recipe file write nested mappings (train: epochs: ...)"
    )


def test_wrong_type(tmp_path):
    r = recipe(tmp_path, GOOD + "train:\n  epochs: ten\n")
    assert errors(r) == f"train.epochs: expected int, got str 'ten' ({tmp_path / 'r.yaml'}:5)"


@pytest.mark.parametrize("text, expected", [
    ("train: {epochs: true}", "train.epochs: expected int, got bool True"),
    ("model: {dropout: false}", "model.dropout: expected float, got bool False"),
    ("train: {max_steps: 2.5}", "train.max_steps: expected int or null, got float 2.5"),
    ("model: {encoder: 3}", "model.encoder: expected a mapping, got int 3"),
    ("model: {encoder: {cell_options: [1]}}", "model.encoder.cell_options: expected mapping, got list [1]"),
    ("data: {lowercase: null}", "data.lowercase: expected bool, got null"),
])
def test_more_wrong_types(tmp_path, text, expected):
    assert errors(recipe(tmp_path, GOOD + text)).startswith(expected)


def test_null_is_fine_where_the_default_is_none(tmp_path):
    config = validate(recipe(tmp_path, GOOD + "train: {max_steps: null}"), SCHEMA)
    assert config["train"]["max_steps"] is None


def test_choices(tmp_path):
    r = recipe(tmp_path, GOOD + "train:\n  optimizer:\n    name: adamm\n")
    assert errors(r) == (
        f"train.optimizer.name: 'adamm' is not allowed ({tmp_path / 'r.yaml'}:6); allowed: adam, adamw, sgd"
    )


def test_callable_choices_are_looked_up_at_validation_time(tmp_path):
    r = recipe(tmp_path, GOOD.replace("ner", "asr"))
    assert errors(r) == f"app: 'asr' is not allowed ({tmp_path / 'r.yaml'}:1); allowed: ner"
    REGISTRY["asr"] = object()
    assert validate(r, SCHEMA)["app"] == "asr"


def test_min_and_max(tmp_path):
    r = recipe(tmp_path, GOOD + "train: {epochs: 0}\nmodel: {dropout: 1.5}\n")
    lines = errors(r).splitlines()
    assert f"model.dropout: 1.5 is out of range ({tmp_path / 'r.yaml'}:5); must be >= 0 and <= 0.99" in lines
    assert f"train.epochs: 0 is out of range ({tmp_path / 'r.yaml'}:4); must be >= 1" in lines


def test_list_items_are_checked_one_by_one(tmp_path):
    schema = {"steps": Field(list, [], items=int, min=1), "rates": Field(list, [], items=float)}
    where = tmp_path / "r.yaml"
    assert errors(recipe(tmp_path, "steps: [5, x]\n"), schema) == \
        f"steps: item 1: expected int, got str 'x' ({where}:1)"
    assert errors(recipe(tmp_path, "steps: [5, 0]\n"), schema) == \
        f"steps: item 1: 0 is out of range ({where}:1); must be >= 1"
    assert validate(recipe(tmp_path, "steps: [5]\nrates: [1, 0.5]\n"), schema) == \
        {"steps": [5], "rates": [1.0, 0.5]}


def test_missing_required(tmp_path):
    r = recipe(tmp_path, "app: ner\n")
    assert errors(r) == f"data.train_file: required key is missing ({tmp_path / 'r.yaml'})"


def test_all_problems_reported_unknown_keys_first(tmp_path):
    r = recipe(tmp_path, "app: ner\ndata:\n  trian_file: x\ntrain: {epochs: 0}\n")
    lines = errors(r).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("data.trian_file: unknown key") and "did you mean data.train_file?" in lines[0]
    assert lines[1].startswith("train.epochs: 0 is out of range")
    assert lines[2].startswith("data.train_file: required key is missing")


def test_required_field_object():
    assert Field(int).default is REQUIRED
    assert repr(REQUIRED) == "REQUIRED"


# -- data files ---------------------------------------------------------------


FILES = "app: ner\ndata:\n  train_file: {train}\n  test_file: {test}\n"


def files_recipe(tmp_path, train="corpus/train.txt", test="null"):
    r = recipe(tmp_path, FILES.format(train=train, test=test), name="recipes/f.yaml")
    return r, validate(r, SCHEMA)


def test_data_files_relative_to_root_and_absolute(tmp_path):
    root = tmp_path / "root"
    write(root / "corpus" / "train.txt", "x")
    write(root / "corpus" / "test.txt", "x")
    r, config = files_recipe(tmp_path, test="corpus/test.txt")
    assert config["data"]["train_file"] == "corpus/train.txt"  # validate leaves paths as written
    resolved = resolve_data_files(config, SCHEMA, r, (root, "--data-dir"))
    assert resolved["data"]["train_file"] == str(root / "corpus" / "train.txt")
    assert resolved["data"]["test_file"] == str(root / "corpus" / "test.txt")
    assert config["data"]["train_file"] == "corpus/train.txt"  # a copy
    r, config = files_recipe(tmp_path, train=str(root / "corpus" / "train.txt"))
    resolved = resolve_data_files(config, SCHEMA, r, tmp_path / "elsewhere")
    assert resolved["data"]["train_file"] == str(root / "corpus" / "train.txt")
    assert resolved["data"]["test_file"] is None


def test_data_file_in_a_package(tmp_path):
    r, config = files_recipe(tmp_path, train="pkg:lstm_core/errors.py")
    resolved = resolve_data_files(config, SCHEMA, r, tmp_path)
    expected = Path(__file__).resolve().parent.parent / "lstm_core" / "errors.py"
    assert Path(resolved["data"]["train_file"]).samefile(expected)
    assert os.path.isabs(resolved["data"]["train_file"])


def test_data_file_in_a_missing_package(tmp_path):
    r, config = files_recipe(tmp_path, train="pkg:no_such_package_xyz/a.txt")
    with pytest.raises(RecipeError, match="no installed package named 'no_such_package_xyz'"):
        resolve_data_files(config, SCHEMA, r, tmp_path)


def test_missing_data_file_names_path_field_line_and_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    r, config = files_recipe(tmp_path)
    with pytest.raises(RecipeError) as info:
        resolve_data_files(config, SCHEMA, r, (root, "--data-dir"))
    assert str(info.value) == (
        f"data file not found: {root / 'corpus' / 'train.txt'} "
        f"(data.train_file at {tmp_path / 'recipes' / 'f.yaml'}:3; data root {root} from --data-dir)"
    )


def test_missing_data_root_is_pointed_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LSTM_SUITE_DATA", raising=False)
    r, config = files_recipe(tmp_path)
    with pytest.raises(RecipeError, match=r"data root .*data from default \./data, which does not exist\)"):
        resolve_data_files(config, SCHEMA, r, data_root(None))


def test_optional_missing_file_becomes_none(tmp_path):
    write(tmp_path / "corpus" / "train.txt", "x")
    r, config = files_recipe(tmp_path, test="corpus/test.txt")
    resolved = resolve_data_files(config, SCHEMA, r, tmp_path)
    assert resolved["data"]["test_file"] is None
    assert resolved["data"]["train_file"] == str(tmp_path / "corpus" / "train.txt")


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("LSTM_SUITE_DATA", raising=False)
    assert data_root(None) == (Path("data"), "default ./data")
    monkeypatch.setenv("LSTM_SUITE_DATA", str(tmp_path / "env"))
    assert data_root(None) == (tmp_path / "env", "LSTM_SUITE_DATA")
    assert data_root(str(tmp_path / "cli")) == (tmp_path / "cli", "--data-dir")


# -- records ------------------------------------------------------------------


def test_write_and_read_round_trip_atomically(tmp_path):
    config = {"train": {"epochs": 3, "optimizer": {"learning_rate": 1e-5}}, "app": "ner",
              "data": {"train_file": "/x/ü.txt", "test_file": None}, "model": {"layers": [1, 2]}}
    path = tmp_path / "run" / "recipe.yaml"
    write_config(config, path)
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    text = path.read_text(encoding="utf-8")
    assert text.index("train:") < text.index("app:")  # keys keep their order
    assert read_config(path) == config
    config["train"]["epochs"] = 4
    write_config(config, path)
    assert read_config(path)["train"]["epochs"] == 4
    assert list(path.parent.iterdir()) == [path]


def test_read_config_missing(tmp_path):
    with pytest.raises(RecipeError, match="config file not found"):
        read_config(tmp_path / "nope.yaml")


def test_diff_configs():
    old = {"train": {"epochs": 10, "optimizer": {"name": "adam"}}, "model": {"dropout": 0.5, "gone": 1}, "flag": 1}
    new = {"train": {"epochs": 3, "optimizer": {"name": "sgd"}}, "model": {"dropout": 0.5, "units": 3}, "flag": True}
    assert diff_configs(old, new) == [
        "train.epochs: 10 -> 3",
        'train.optimizer.name: "adam" -> "sgd"',
        "model.gone: removed",
        "model.units: added",
        "flag: 1 -> true",
    ]
    assert diff_configs(old, old) == []


def test_dotted_helpers():
    d = {"a": {"b": 1}}
    set_dotted(d, "a.c.d", 2)
    assert d == {"a": {"b": 1, "c": {"d": 2}}}
    assert get_dotted(d, "a.c.d") == 2
    assert get_dotted(d, "a.x", None) is None
    with pytest.raises(KeyError):
        get_dotted(d, "a.b.c")
    with pytest.raises(RecipeError, match="a.b is not a mapping"):
        set_dotted(d, "a.b.c", 3)


def test_a_recorded_config_gets_the_defaults_of_keys_added_since_and_refuses_dropped_ones(tmp_path):
    from lstm_core.apps import App
    from lstm_core.schema import recorded_config

    class Later(App):  # the app as it is now: model.depth is new, model.stack is gone
        name = "later"
        data_schema = {"file": Field(str, "train.txt")}
        model_schema = {"units": Field(int, 8), "depth": Field(int, 1)}

    path = tmp_path / "recipe.yaml"
    write_config({"app": "later", "data": {"file": "a.txt"}, "model": {"units": 4}}, path)
    config = recorded_config(Later(), path)
    assert config["model"] == {"units": 4, "depth": 1}
    assert config["data"]["file"] == "a.txt" and config["train"]["epochs"] >= 1

    write_config({"app": "later", "model": {"units": 4, "stack": 3}}, path)
    with pytest.raises(RecipeError, match=r"model\.stack.*recipe\.yaml"):
        recorded_config(Later(), path)
