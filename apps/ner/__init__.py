"""Named-entity recognition: a BiLSTM-CRF tagger over CoNLL data, registered
with the core as the ``ner`` app (see ``apps/ner/app.py``)."""
