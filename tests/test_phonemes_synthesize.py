"""python -m apps.phonemes.synthesize: the manifest it writes, the espeak-ng
calls it makes, and its errors. espeak-ng itself is replaced by a stand-in
program on PATH (it writes a short tone and logs its arguments), so the test
isolates the tool from the synthesizer and needs no Debian package."""

import json
import sys

import pytest

from apps.phonemes import data as audio_data
from apps.phonemes import synthesize
from lstm_core.errors import UserError

FAKE_ESPEAK = """#!{python}
import json, sys
import numpy as np, soundfile
args = sys.argv[1:]
if args == ["--voices=variant"]:
    print("Pty Language       Age/Gender VoiceName          File                 Other Languages")
    print(" 5  variant         --/M      Adam               !v/adam")
    print(" 5  variant         --/F      Anika              !v/anika")
    print(" 5  variant         --/M      Max                !v/max")
    sys.exit(0)
options = dict(zip(args[:-1:2], args[1:-1:2]))
if options["-v"].startswith("xx"):
    sys.exit("Error: The specified espeak-ng voice does not exist.")
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
soundfile.write(options["-w"], 0.1 * np.sin(np.arange(2205) / 5.0), 22050)
"""


@pytest.fixture
def espeak(tmp_path, monkeypatch):
    """The stand-in espeak-ng on PATH; returns the file its calls are logged to."""
    folder, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    folder.mkdir()
    program = folder / "espeak-ng"
    program.write_text(FAKE_ESPEAK.format(python=sys.executable, log=str(log)))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return log


def test_every_word_in_every_voice_with_the_lexicons_phonemes(tmp_path, espeak):
    lexicon = tmp_path / "words.dict"
    lexicon.write_text("ONE  W AH1 N\nTWO  T UW1\n")
    out = tmp_path / "synth"
    argv = [str(out), "--lexicon", str(lexicon), "--voices", "en-us", "en-gb",
            "--variants", "2", "--takes", "3", "--seed", "5"]
    assert synthesize.main(argv) == 0
    rows = audio_data.read_manifest(out / "manifest.tsv")
    assert len(rows) == 2 * 2 * 2 * 3  # voices x variants x words x takes
    assert {(r.text, " ".join(r.phonemes)) for r in rows} == {("one", "W AH N"), ("two", "T UW")}
    speakers = {r.speaker for r in rows}
    assert len(speakers) == 4 and {s.split("+")[0] for s in speakers} == {"en-us", "en-gb"}
    assert {s.split("+")[1] for s in speakers} <= {"adam", "anika", "max"}
    for row in rows:
        assert row.path.is_file()
        assert len(audio_data.load_audio(row.path, 16000)) == pytest.approx(1600, abs=2)
    calls = [json.loads(line) for line in espeak.read_text().splitlines()]
    assert len(calls) == len(rows)
    rates = [int(call[call.index("-s") + 1]) for call in calls]
    pitches = [int(call[call.index("-p") + 1]) for call in calls]
    assert min(rates) >= 120 and max(rates) <= 200 and len(set(rates)) > 1
    assert min(pitches) >= 20 and max(pitches) <= 80 and len(set(pitches)) > 1
    # the same seed draws the same voices, rates and pitches
    espeak.unlink()
    assert synthesize.main([str(tmp_path / "again"), *argv[1:]]) == 0
    assert [json.loads(line)[:-2] for line in espeak.read_text().splitlines()] == [
        call[:-2] for call in calls]


def test_errors_name_the_problem_and_overwrite_nothing(tmp_path, espeak, monkeypatch, capsys):
    out = tmp_path / "synth"
    assert synthesize.main([str(out), "--voices", "en-us", "--variants", "1", "--takes", "1"]) == 0
    before = (out / "manifest.tsv").read_bytes()
    assert synthesize.main([str(out)]) == 2
    assert "manifest.tsv exists" in capsys.readouterr().err
    assert (out / "manifest.tsv").read_bytes() == before
    assert synthesize.main([str(tmp_path / "bad"), "--voices", "xx-nope"]) == 2
    assert "voice does not exist" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "manifest.tsv").exists()
    assert synthesize.main([str(tmp_path / "none"), "--lexicon", str(tmp_path / "no.dict")]) == 2
    assert "lexicon file not found" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="espeak-ng not found: install it"):
        synthesize.variants()
