# The two set-up commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test bench demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# One pytest worker per core; a test file stays on one worker, so its trained
# fixtures are built once.
test: install
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/pytest -q -n 2 --dist loadfile

# The NER and translation benchmarks need their data: make bench DATA=/path/to/data
# (the recipe-target scripts, phonemes_recipes.py and translation_recipes.py,
# train for hours and run on their own)
DATA ?= $(LSTM_SUITE_DATA)

bench: install
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/lstm_speed.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/phonemes_speed.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/seq2seq_speed.py
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/multi_worker.py --pin
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/ner_conll2003.py --data-dir "$(DATA)"
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python benchmarks/translation_speed.py recipes/translation/multi30k_en_de.yaml --data-dir "$(DATA)"

# Train every app's quickstart on its bundled sample (resumes or reports if
# done), export it as a SavedModel, and use it: the NER quickstart tags a few
# plain-text sentences, the phonemes quickstart transcribes a spoken digit,
# the translation quickstart translates a few English sentences into Tokipo.
demo: install
	$(BIN)/lstm-suite train recipes/ner/quickstart.yaml
	test -d runs/quickstart-export || $(BIN)/lstm-suite export runs/quickstart runs/quickstart-export
	$(BIN)/lstm-suite predict runs/quickstart apps/ner/sample/demo.txt
	$(BIN)/lstm-suite train recipes/phonemes/quickstart.yaml --run-dir runs/phonemes-quickstart
	test -d runs/phonemes-quickstart-export || $(BIN)/lstm-suite export runs/phonemes-quickstart runs/phonemes-quickstart-export
	$(BIN)/lstm-suite predict runs/phonemes-quickstart apps/phonemes/sample/recordings/7_lucas_0.wav
	$(BIN)/lstm-suite train recipes/translation/quickstart.yaml --run-dir runs/translation-quickstart
	test -d runs/translation-quickstart-export || $(BIN)/lstm-suite export runs/translation-quickstart runs/translation-quickstart-export
	$(BIN)/lstm-suite predict runs/translation-quickstart apps/translation/sample/demo.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
