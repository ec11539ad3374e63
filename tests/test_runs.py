"""The run directory's file helpers: atomic writes, assets with files,
checkpoint bookkeeping."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lstm_core import runs
from lstm_core.errors import UserError


def test_an_atomic_write_leaves_the_old_file_when_it_fails(tmp_path):
    target = tmp_path / "state.json"
    runs.write_json(target, {"epoch": 1})
    with pytest.raises(RuntimeError):
        with runs.atomic_path(target) as tmp:
            tmp.write_text('{"epoch": 2, "half')
            raise RuntimeError("killed mid-write")
    assert runs.read_json(target) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary left behind


def test_a_config_round_trips_through_yaml(tmp_path):
    config = {"app": "toy", "data": {"file": "ü.txt", "none": None}, "train": {"lr": 1e-5}}
    runs.write_config(config, tmp_path / "run" / "recipe.yaml")
    from lstm_core.recipes import read_config

    assert read_config(tmp_path / "run" / "recipe.yaml") == config


def test_assets_keep_their_files_through_a_save_and_load(tmp_path):
    staging = tmp_path / "staging"
    (staging / "stats").mkdir(parents=True)
    (staging / "spm.model").write_bytes(b"\x00\x01binary")
    (staging / "stats" / "mean.npy").write_bytes(b"\x93NUMPY")
    run = tmp_path / "run"
    run.mkdir()
    saved = runs.save_assets(run, runs.Assets({"vocab": ["a", "b"]}, staging))
    loaded = runs.load_assets(run)
    assert dict(loaded) == {"vocab": ["a", "b"]} == json.loads((run / "assets.json").read_text())
    assert loaded.file("spm.model").read_bytes() == b"\x00\x01binary"
    assert [p.relative_to(loaded.folder).as_posix() for p in loaded.files()] == [
        "spm.model", "stats/mean.npy"]
    assert saved.same_as(loaded) and loaded.folder == run / "assets"
    (run / "assets" / "spm.model").write_bytes(b"other")
    assert not runs.Assets(loaded, staging).same_as(loaded)  # same JSON, other bytes
    with pytest.raises(UserError, match="asset file 'missing.bin' is missing"):
        loaded.file("missing.bin")


def test_only_the_last_checkpoints_are_kept_and_incomplete_ones_ignored(tmp_path):
    for epoch in range(1, 5):
        folder = runs.checkpoint_path(tmp_path, epoch, 0)
        folder.mkdir(parents=True)
        if epoch != 4:  # the last has no state.json: killed before its commit point
            (folder / "state.json").write_text("{}")
    assert [p.name for p in runs.checkpoints(tmp_path)] == [
        "ckpt-0001-0000000", "ckpt-0002-0000000", "ckpt-0003-0000000"]
    runs.prune_checkpoints(tmp_path)
    assert [p.name for p in runs.checkpoints(tmp_path)] == ["ckpt-0002-0000000", "ckpt-0003-0000000"]
    assert runs.model_file(tmp_path) == tmp_path / "checkpoints" / "ckpt-0003-0000000" / "state.weights.h5"


def test_removing_a_file_another_process_removed_first_is_not_an_error(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    path.write_text("{}")
    real = os.remove

    def raced(target):  # the other process wins between the check and the removal
        real(target)
        real(target)

    monkeypatch.setattr(os, "remove", raced)
    runs.remove(path)
    assert not path.exists()
    runs.remove(path)  # gone already: nothing to do


def test_stale_temporaries_are_removed_from_every_folder_of_a_run(tmp_path):
    """What a run killed mid-write leaves: plots/ included (a kill while a
    plot was drawn left plots/.tmp-PID-loss.png for good)."""
    for name in (".tmp-7-metrics.jsonl", "checkpoints/.tmp-7-ckpt-0001-0000000/state.json",
                 "plots/.tmp-7-loss.png", "plots/loss.png", "metrics.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    runs.remove_stale(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "checkpoints", "metrics.jsonl", "plots", "plots/loss.png"]


@pytest.mark.skipif(os.name != "posix", reason="asks whether a process id runs")
def test_only_a_dead_writer_s_temporary_of_the_same_target_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    names = [f".tmp-{dead}-out", f".tmp-{os.getpid()}-out", f".tmp-{dead}-x-out", f".tmp-{dead}-out2"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_text("half")
    runs.remove_stale_siblings(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])


@pytest.mark.skipif(os.name != "posix", reason="asks whether a process id runs")
def test_a_scratch_folder_first_removes_those_ended_processes_left(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    names = [f"lstm-suite-assets-{dead}-k1", f"lstm-suite-assets-{os.getpid()}-k2",
             f"lstm-suite-check-{dead}-k3", f"lstm-suite-assets-x{dead}-k4", "other"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "shared.model").write_text("staged")
    with runs.scratch_folder("assets") as folder:
        assert Path(folder).parent == tmp_path
        assert Path(folder).name.startswith(f"lstm-suite-assets-{os.getpid()}-")
        assert sorted(os.listdir(tmp_path)) == sorted(names[1:] + [Path(folder).name])
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])


def test_a_run_without_a_model_says_so(tmp_path):
    with pytest.raises(UserError, match="holds no trained model yet"):
        runs.model_file(tmp_path)
    with pytest.raises(UserError, match="is not a run directory"):
        runs.load_run(tmp_path)


class Drawing:
    """An app whose evaluate draws ``text`` as its figure (or nothing for
    None), then fails when ``fail`` is set, as a killed process would."""

    def __init__(self, text, fail=False):
        self.text, self.fail = text, fail

    def evaluate(self, model, config, data_root, assets, path=None, final=False, figure=None):
        if self.text is not None:
            figure.write_text(self.text)
        if self.fail:
            raise KeyboardInterrupt
        return {"score": 1.0, "final": final, "path": path}


def test_an_evaluation_figure_is_written_whole_or_not_at_all(tmp_path):
    scores = runs.evaluate(Drawing("old"), None, {}, None, None, tmp_path, "dev-epoch-001",
                           path="x", final=True)
    assert scores == {"score": 1.0, "final": True, "path": "x"}
    figure = tmp_path / "figures" / "dev-epoch-001.png"
    assert figure.read_text() == "old"
    with pytest.raises(KeyboardInterrupt):
        runs.evaluate(Drawing("half", fail=True), None, {}, None, None, tmp_path, "dev-epoch-001")
    assert figure.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["figures"]  # no temporary left behind
    # an app that draws nothing leaves no figure, nor a figures folder
    other = tmp_path / "other"
    other.mkdir()
    runs.evaluate(Drawing(None), None, {}, None, None, other, "test-test")
    assert not list(other.iterdir())
