"""Fine-tuning with new labels, phones and domains (issue 20) on the samples
that ship with the three apps.

For each app: train the quickstart recipe on a "before" set lacking something
the shipped sample has, fine-tune that run with ``lstm-suite finetune`` on
data that has it, and print a table: the fine-tune's metrics.jsonl (epoch 0,
the starting model, against the best epoch) and, from ``lstm-suite
evaluate`` or ``predict`` of both runs, whether the new thing was learned
and the old kept within a tolerance.

- ner: before = the sample with every ORG tag made O (train and valid);
  fine-tune on the full sample. Valid F1 overall and per type: ORG from 0 to
  above 0, PER/LOC/MISC within NER_TOLERANCE.
- phonemes: before = the sample's rows without the digit "two" (the only
  word with UW); fine-tune on all rows. Dev PER; UW heard in the "two"s;
  PER of the dev rows without "two" within PHONEMES_TOLERANCE.
- translation: before = the pairs without a person's name (make_sample.py's
  NAMES); fine-tune on the pairs with one (a new domain), once keeping the
  source's subwords and once learning new ones. BLEU on the names dev, and
  on the no-names dev within TRANSLATION_TOLERANCE (forgetting).

    python benchmarks/finetune_apps.py [--apps ner phonemes translation]
        [--work DIR] [--set KEY=VALUE ...]

--work keeps the data and runs (finished runs there are reused; default: a
temporary folder); --set passes a recipe override to every train and
finetune. About 20 minutes on 2 shared cores.
"""

import argparse
import csv
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"

# Recipe settings of each app's two runs, beyond the data (the quickstart's
# otherwise: learning rates 0.005 ner and translation, 0.004 phonemes).
SETTINGS = {
    "ner": {"source": ["train.epochs=12"],
            "finetune": ["train.epochs=8", "finetune.learning_rate=0.002"]},
    "phonemes": {"source": ["train.epochs=40"],
                 "finetune": ["train.epochs=20", "finetune.learning_rate=0.002"]},
    "translation": {"source": ["train.epochs=10", "data.test_pairs=null"],
                    "finetune": ["train.epochs=5", "finetune.learning_rate=0.002",
                                 "data.test_pairs=null"]},
}
NER_TOLERANCE = 5.0  # F1 points an old entity type may lose
PHONEMES_TOLERANCE = 5.0  # PER points the old phones may lose (one phone of 30: 3.3)
TRANSLATION_TOLERANCE = 5.0  # BLEU points the no-names dev may lose


def cli(*arguments, capture=False):
    done = subprocess.run([sys.executable, "-m", "lstm_core.cli", *arguments], check=True,
                          capture_output=capture, text=True)
    return done.stdout


def train_and_finetune(app, work, source_data, finetune_data=(), name="finetuned", extra=()):
    """Train ``app``'s quickstart on the before set (``source_data``: its data
    settings), fine-tune that run on the after set (default: the quickstart's
    own, the full sample); returns the two run directories and the
    fine-tune's metrics.jsonl records. Finished runs in ``work`` are reused."""
    recipe, runs = str(RECIPES / app / "quickstart.yaml"), work / "runs"
    source, tuned = runs / f"{app}-source", runs / f"{app}-{name}"
    sets = lambda values: [a for v in values for a in ("--set", v)]
    common = ["--data-dir", str(work / "data"), "--quiet"]
    if not (source / "result.json").exists():
        cli("train", recipe, "--run-dir", str(source), *common,
            *sets([*source_data, *SETTINGS[app]["source"], *extra]))
    if not (tuned / "result.json").exists():
        cli("finetune", recipe, "--from", str(source), "--run-dir", str(tuned), *common,
            *sets([*finetune_data, *SETTINGS[app]["finetune"], *extra]))
    records = [json.loads(line) for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    return source, tuned, records


def best(records, key, lower=False):
    chosen = [r for r in records[1:] if r.get(key) is not None]
    return (min if lower else max)(chosen, key=lambda r: r[key])


def settings_line(app, source, tuned, extra):
    """The runs' settings and the learning rates of their first epochs."""
    rates = [json.loads(run.joinpath("metrics.jsonl").read_text().splitlines()[index])
             ["learning_rate"] for run, index in ((source, 0), (tuned, 1))]
    return (f"source: {' '.join(SETTINGS[app]['source'] + extra)}, learning rate {rates[0]:.4g}; "
            f"finetune: {' '.join(SETTINGS[app]['finetune'] + extra)}, learning rate "
            f"{rates[1]:.4g}")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


# -- ner ------------------------------------------------------------------------

def conll_without_org(path, out):
    lines = [re.sub(r" [BIES]-ORG$", " O", line) for line in path.read_text().splitlines()]
    out.write_text("\n".join(lines) + "\n")


def ner_report(run, data):
    """Per type (and overall): F1 from ``lstm-suite evaluate RUN --data FILE``."""
    out = cli("evaluate", str(run), "--data", str(data), capture=True)
    scores = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 6 and re.fullmatch(r"[\d.]+", fields[3]):
            scores[fields[0]] = float(fields[3])
    return scores


def ner(work, extra):
    sample, data = REPO / "apps" / "ner" / "sample", work / "data" / "ner"
    data.mkdir(parents=True, exist_ok=True)
    for name in ("train", "valid"):
        conll_without_org(sample / f"{name}.txt", data / f"{name}-no-org.txt")
    source, tuned, records = train_and_finetune(
        "ner", work, ["data.train_file=ner/train-no-org.txt", "data.dev_file=ner/valid-no-org.txt"],
        extra=extra)
    top = best(records, "dev_f1")
    before, after = (ner_report(run, sample / "valid.txt") for run in (source, tuned))
    rows = [["F1: epoch 0 / best (fine-tune's metrics.jsonl)", f"{records[0]['dev_f1']:.2f}",
             f"{top['dev_f1']:.2f} (epoch {top['epoch']})", ""]]
    for kind in ("overall", "PER", "LOC", "ORG", "MISC"):
        b, a = before.get(kind, 0.0), after.get(kind, 0.0)
        verdict = ("learned" if b == 0 and a > 0 else "not learned") if kind == "ORG" else (
            "" if kind == "overall" else f"kept (within {NER_TOLERANCE:g})"
            if a >= b - NER_TOLERANCE else f"lost more than {NER_TOLERANCE:g}")
        rows.append([f"{kind} F1 (evaluate)", f"{b:.2f}", f"{a:.2f}", verdict])
    changes = json.loads((tuned / "vocabularies.json").read_text())
    header = ["NER, the sample's valid.txt", "source (no ORG)", "fine-tuned (full sample)", ""]
    return (table(header, rows)
            + "\n\nvocabularies: " + "; ".join(f"{k} {v['kept']} kept, {v['added']} added"
                                               for k, v in changes.items() if k != "from")
            + f"\n{settings_line('ner', source, tuned, extra)}")


# -- phonemes -------------------------------------------------------------------

def write_manifest(path, rows, folder):
    """Manifest rows with absolute audio paths (the sample's own folder)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t",
                                quoting=csv.QUOTE_NONE, lineterminator="\n")
        writer.writeheader()
        writer.writerows([{**row, "path": str(folder / row["path"])} for row in rows])


def phonemes(work, extra):
    from lstm_core.edit_distance import error_rate

    sample, data = REPO / "apps" / "phonemes" / "sample", work / "data" / "phonemes"
    data.mkdir(parents=True, exist_ok=True)
    with open(sample / "manifest.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    with_uw = {row["word"] for row in rows if "UW" in row["phonemes"].split()}
    assert with_uw == {"two"}, with_uw  # UW is the phone only "two" has
    write_manifest(data / "no-two.tsv", [r for r in rows if r["word"] != "two"], sample)
    # What predict transcribes: the 10 dev rows and the 5 train "two"s.
    scored = [r for r in rows if r["split"] == "dev" or r["word"] == "two"]
    write_manifest(data / "scored.tsv", scored, sample)
    source, tuned, records = train_and_finetune(
        "phonemes", work, ["data.train_manifest=phonemes/no-two.tsv"], extra=extra)
    top = best(records, "dev_per", lower=True)

    def transcribe(run):
        """``lstm-suite predict`` (beam 8) of the scored rows, in their order."""
        out = cli("predict", str(run), str(data / "scored.tsv"), capture=True)
        phones = dict(line.split("\t") for line in out.splitlines())
        return [phones[str(sample / row["path"])].split() for row in scored]

    def per(hypotheses, keep):
        chosen = [i for i, row in enumerate(scored) if keep(row)]
        return error_rate([scored[i]["phonemes"].split() for i in chosen],
                          [hypotheses[i] for i in chosen]).rate

    def uw(hypotheses, split):
        found = [h for row, h in zip(scored, hypotheses)
                 if row["word"] == "two" and row["split"] == split]
        return f"{sum('UW' in h for h in found)} of {len(found)}", found

    before, after = transcribe(source), transcribe(tuned)
    dev = lambda row: row["split"] == "dev"
    old = lambda row: row["split"] == "dev" and row["word"] != "two"
    old_before, old_after = per(before, old), per(after, old)
    (dev_before, [heard_before]), (dev_after, [heard_after]) = uw(before, "dev"), uw(after, "dev")
    rows = [["dev PER, 10 utterances: epoch 0 / best (metrics.jsonl, greedy)",
             f"{records[0]['dev_per']:.2f}", f"{top['dev_per']:.2f} (epoch {top['epoch']})", ""],
            ["dev PER, 10 utterances (predict, beam 8)", f"{per(before, dev):.2f}",
             f"{per(after, dev):.2f}", ""],
            ["PER of the 9 dev rows without \"two\" (old phones)", f"{old_before:.2f}",
             f"{old_after:.2f}", f"kept (within {PHONEMES_TOLERANCE:g})"
             if old_after <= old_before + PHONEMES_TOLERANCE else
             f"lost more than {PHONEMES_TOLERANCE:g}"],
            ["UW in the dev \"two\" (T UW)", f"{dev_before}: {' '.join(heard_before)}",
             f"{dev_after}: {' '.join(heard_after)}", "learned" if "UW" in heard_after else
             "not learned"],
            ["UW in the 5 train \"two\" (unseen by the source)", uw(before, "train")[0],
             uw(after, "train")[0], ""]]
    changes = json.loads((tuned / "vocabularies.json").read_text())["phones"]
    return (table(["phonemes", "source (no \"two\")", "fine-tuned (all rows)", ""], rows)
            + f"\n\nphones (the CTC blank included): {changes['kept']} kept, added {' '.join(changes['added_first'])}, "
            f"{changes['dropped']} dropped\n{settings_line('phonemes', source, tuned, extra)}")


# -- translation ----------------------------------------------------------------

def translation(work, extra):
    sample, data = REPO / "apps" / "translation" / "sample", work / "data" / "translation"
    data.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.spec_from_file_location("make_sample", sample / "make_sample.py")
    make_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sample)
    names, sizes = set(make_sample.NAMES), {}
    for split in ("train", "dev"):
        lines = (sample / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        named = [line for line in lines if names & set(re.findall(r"\w+", line.split("\t")[0]))]
        plain = [line for line in lines if line not in set(named)]
        (data / f"{split}-names.tsv").write_text("".join(named), encoding="utf-8")
        (data / f"{split}-no-names.tsv").write_text("".join(plain), encoding="utf-8")
        sizes[split] = f"{len(plain)} / {len(named)}"
    columns, rows = ["translation, dev BLEU (greedy)", "source (no names)"], [[], []]
    for subwords in ("keep", "new"):
        source, tuned, records = train_and_finetune(
            "translation", work,
            ["data.train_pairs=translation/train-no-names.tsv",
             "data.dev_pairs=translation/dev-no-names.tsv"],
            ["data.train_pairs=translation/train-names.tsv",
             "data.dev_pairs=translation/dev-names.tsv", f"data.subwords.finetune={subwords}"],
            f"finetuned-{subwords}-subwords", extra)
        top = best(records, "dev_bleu")
        # The no-names dev (the source's own dev set): forgetting.
        out = cli("evaluate", str(tuned), "--data", str(data / "dev-no-names.tsv"),
                  "--set", "decode.beam_width=1", capture=True)
        plain_after = float(re.search(r"^bleu: ([\d.]+)", out, re.MULTILINE).group(1))
        plain_before = json.loads((source / "result.json").read_text())["best"]["dev_bleu"]
        verdict = (f"kept (within {TRANSLATION_TOLERANCE:g})"
                   if plain_after >= plain_before - TRANSLATION_TOLERANCE
                   else f"lost more than {TRANSLATION_TOLERANCE:g}")
        columns.append(f"fine-tuned (names only), subwords {subwords}")
        rows[0].append(f"{records[0]['dev_bleu']:.2f} -> {top['dev_bleu']:.2f} "
                       f"(epoch {top['epoch']})")
        if subwords == "keep":  # the same subwords: epoch 0 is the source model itself
            names_before = records[0]["dev_bleu"]
        rows[1].append(f"{plain_after:.2f}: {verdict}")
    rows = [["names dev: epoch 0 -> best (fine-tune's metrics.jsonl)", f"{names_before:.2f}",
             *rows[0]],
            ["no-names dev: forgetting (source: its best epoch; fine-tuned: evaluate)",
             f"{plain_before:.2f}", *rows[1]]]
    return (table(columns, rows)
            + f"\n\npairs without / with names: train {sizes['train']}, dev {sizes['dev']}\n"
            + settings_line("translation", source, tuned, extra))


APPS = {"ner": ner, "phonemes": phonemes, "translation": translation}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", nargs="+", default=list(APPS), choices=list(APPS))
    parser.add_argument("--work", help="folder for the data and runs (default: a temporary one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every train and finetune (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.work or temporary)
        for app in args.apps:
            start = time.perf_counter()
            result = APPS[app](work, args.set)
            print(f"\n## {app} ({(time.perf_counter() - start) / 60:.1f} min)\n\n{result}\n",
                  flush=True)


if __name__ == "__main__":
    main()
