"""The export contract of the NER app, also used in-process by evaluate and
predict, so that ``lstm-suite predict`` and the SavedModel tag alike.

``serving_default(sentences)``: ``sentences`` tf.string ``[batch]``, each
sentence's tokens joined by single spaces. Returns ``tags`` tf.string
``[batch, max_tokens]`` padded with ``""`` (BIO tags, whatever scheme the model
was trained in) and ``lengths`` tf.int32 ``[batch]``.
"""

import tensorflow as tf

from apps.ner.features import Featurizer


class NERServing(tf.Module):
    def __init__(self, model, assets):
        super().__init__()
        self.model = model
        self.featurizer = Featurizer(assets["words"], assets["chars"], assets["lowercase"],
                                     assets["max_word_length"])
        self.tag_names = tf.constant(assets["tags"])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serving_default(self, sentences):
        features = self.featurizer(sentences)
        lengths = tf.reduce_sum(tf.cast(features["words"] > 0, tf.int32), axis=1)
        tags = tf.gather(self.tag_names, self.model.decode(features))
        # IOBES -> BIO: S- starts and E- continues an entity.
        tags = tf.strings.regex_replace(tf.strings.regex_replace(tags, "^S-", "B-"), "^E-", "I-")
        # The features hold at least one position even if every sentence is empty.
        max_tokens = tf.reduce_max(tf.concat([lengths, [0]], axis=0))
        valid = tf.sequence_mask(lengths, max_tokens)
        return {"tags": tf.where(valid, tags[:, :max_tokens], ""), "lengths": lengths}

    def tag(self, sentences, batch_size=64):
        """BIO tags for each sentence (a list of tokens)."""
        results = []
        for start in range(0, len(sentences), batch_size):
            chunk = [" ".join(tokens) for tokens in sentences[start:start + batch_size]]
            out = self.serving_default(tf.constant(chunk, tf.string))
            for row, length in zip(out["tags"].numpy(), out["lengths"].numpy()):
                results.append([tag.decode() for tag in row[:length]])
        return results
