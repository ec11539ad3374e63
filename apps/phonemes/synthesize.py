"""Synthetic training speech from espeak-ng: each word of a CMUdict-format
lexicon spoken by many voices, as a manifest with the lexicon's phonemes
(``data.extra_train_manifest`` adds it to a recipe's training data).

    python -m apps.phonemes.synthesize OUT [--lexicon FILE] [--voices en-us en-gb ...]
                                           [--variants 12] [--takes 2] [--seed 0]

writes ``OUT/audio/*.wav`` and ``OUT/manifest.tsv`` (path, speaker, text,
phonemes). Each take draws its speaking rate and pitch at random; a voice is
an espeak-ng language voice with one of its variants (``en-us+Andy``). With
few real speakers, a model lacks voices more than words: see FSDD in
recipes/phonemes/README.md. Needs the ``espeak-ng`` program (Debian and
Ubuntu: ``apt install espeak-ng``).
"""

import argparse
import random
import shutil
import subprocess
import sys
from pathlib import Path

from apps.phonemes import lexicon as lexicons
from apps.phonemes.tfds_source import DIGITS_LEXICON
from lstm_core.errors import UserError

ESPEAK = "espeak-ng"
#: espeak-ng's English voices that need no MBROLA database.
VOICES = ("en-us", "en-us-nyc", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
          "en-gb-x-rp", "en-029")
RATES = (120, 200)   # words per minute (espeak-ng's default is 175)
PITCHES = (20, 80)   # espeak-ng's 0-99 scale (default 50)


def _espeak(*arguments):
    """espeak-ng's standard output for ``arguments``; a clear error if it fails."""
    if shutil.which(ESPEAK) is None:
        raise UserError(f"{ESPEAK} not found: install it (Debian, Ubuntu: apt install espeak-ng)")
    done = subprocess.run([ESPEAK, *arguments], capture_output=True, text=True)
    if done.returncode:
        raise UserError(f"{ESPEAK} {' '.join(arguments)}: {done.stderr.strip()}")
    return done.stdout


def variants():
    """The names of espeak-ng's voice variants (its ``--voices=variant`` list)."""
    listing = _espeak("--voices=variant").split()
    return sorted(token.removeprefix("!v/") for token in listing if token.startswith("!v/"))


def synthesize(out, lexicon, voices=VOICES, variant_count=12, takes=2, seed=0):
    """Speak every word of ``lexicon`` (word -> phonemes) ``takes`` times in
    ``variant_count`` random variants of each of ``voices`` into ``out``;
    returns the number of utterances. ``out/manifest.tsv`` is written last,
    through a temporary file: a killed run leaves no manifest, and an
    existing one is never overwritten."""
    out = Path(out)
    manifest = out / "manifest.tsv"
    if manifest.exists():
        raise UserError(f"{manifest} exists: choose another folder (nothing was overwritten)")
    rng = random.Random(seed)
    choices = variants()
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for voice in voices:
        for variant in rng.sample(choices, min(variant_count, len(choices))):
            speaker = f"{voice}+{variant}"
            for word, phonemes in lexicon.items():
                word = word.lower()
                for take in range(takes):
                    path = f"audio/{word}_{voice}_{variant}_{take}.wav"
                    _espeak("-v", speaker, "-s", str(rng.randint(*RATES)),
                            "-p", str(rng.randint(*PITCHES)), "-w", str(out / path), word)
                    rows.append("\t".join((path, speaker, word, " ".join(phonemes))))
    partial = manifest.with_name(manifest.name + ".partial")
    partial.write_text("path\tspeaker\ttext\tphonemes\n" + "\n".join(rows) + "\n",
                       encoding="utf-8")
    partial.rename(manifest)
    return len(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m apps.phonemes.synthesize", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for audio/ and manifest.tsv")
    parser.add_argument("--lexicon", default=str(DIGITS_LEXICON),
                        help="CMUdict-format lexicon of the words to speak (default: the ten "
                             "digits, apps/phonemes/digits.dict)")
    parser.add_argument("--voices", nargs="+", default=list(VOICES),
                        help="espeak-ng language voices (default: its English ones)")
    parser.add_argument("--variants", type=int, default=12, help="random variants per voice")
    parser.add_argument("--takes", type=int, default=2, help="takes of each word per variant")
    parser.add_argument("--seed", type=int, default=0, help="seeds variants, rates and pitches")
    args = parser.parse_args(argv)
    try:
        lexicon = lexicons.read_lexicon(args.lexicon)
        count = synthesize(args.out, lexicon, args.voices, args.variants, args.takes, args.seed)
    except (UserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{count} utterances in {Path(args.out) / 'manifest.tsv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
