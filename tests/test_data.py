"""lstm_core.data: the streamed pipeline (stream_batches) over tiny files,
and the in-memory make_dataset path it shares its bucketing with."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from lstm_core.data import DropCounter, make_dataset, stream_batches
from lstm_core.errors import UserError

COUNT = 120
BOUNDARIES = [5, 10, 20]
MAX_LENGTH = 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A text file of ``id<TAB>tokens`` lines (1..30 tokens) and its lines
    as Python data, the reference the pipeline is checked against."""
    rng = np.random.default_rng(0)
    lines = {i: [f"w{i}_{k}" for k in range(rng.integers(1, MAX_LENGTH + 1))]
             for i in range(COUNT)}
    path = tmp_path_factory.mktemp("data") / "corpus.tsv"
    path.write_text("".join(f"{i}\t{' '.join(tokens)}\n" for i, tokens in lines.items()))
    return path, lines


def parse(line):
    """``({"id", "tokens"}, targets)``; the targets (token widths) are as
    long as the tokens, like tags."""
    parts = tf.strings.split(line, "\t")
    tokens = tf.strings.split(parts[1], " ")
    return {"id": tf.strings.to_number(parts[0], tf.int64), "tokens": tokens}, \
        tf.strings.length(tokens)


def lines_dataset(path):
    return tf.data.TextLineDataset(str(path)).map(parse)


def stream(path, **kwargs):
    kwargs = {"length": "tokens", "bucket_boundaries": BOUNDARIES, "max_length": MAX_LENGTH,
              "batch_tokens": 64, "shuffle_buffer": 16, "seed": 1, **kwargs}
    return stream_batches(lines_dataset(path), **kwargs)


def epoch(dataset):
    """[(ids, tokens, targets)] per batch, as numpy."""
    return [(x["id"], x["tokens"], y) for x, y in dataset.as_numpy_iterator()]


def ids_of(batches):
    return [int(i) for ids, _, _ in batches for i in ids]


def bucket(n, boundaries=BOUNDARIES):
    return int(np.searchsorted(boundaries, n, side="right"))


def test_every_element_once_per_epoch_with_its_own_content(corpus):
    path, lines = corpus
    dataset = stream(path)
    for _ in range(2):
        batches = epoch(dataset)
        assert sorted(ids_of(batches)) == list(range(COUNT))
        for ids, tokens, targets in batches:
            for row, i in enumerate(ids):
                n = len(lines[i])
                assert [t.decode() for t in tokens[row, :n]] == lines[i]
                assert not tokens[row, n:].any()  # padded with empty strings
                assert targets[row, :n].tolist() == [len(t) for t in lines[i]]
                assert not targets[row, n:].any()


def test_order_is_seeded_and_differs_each_epoch(corpus):
    path, _ = corpus
    first = stream(path, seed=7)
    orders = [ids_of(epoch(first)) for _ in range(2)]
    assert orders[0] != orders[1]
    again = stream(path, seed=7)
    assert [ids_of(epoch(again)) for _ in range(2)] == orders
    assert ids_of(epoch(stream(path, seed=8))) != orders[0]


def test_shuffle_buffer_bounds_how_far_an_element_moves(corpus):
    """One bucket and a one-example batch: output position i can only hold
    an element from the first i + buffer of the file."""
    path, _ = corpus
    order = ids_of(epoch(stream(path, bucket_boundaries=[], batch_tokens=None, batch_size=1,
                                shuffle_buffer=8)))
    assert sorted(order) == list(range(COUNT))
    assert all(i < position + 8 for position, i in enumerate(order))
    assert order != sorted(order)


@pytest.mark.parametrize("budget", [64, 12])
def test_batch_sizes_follow_the_token_budget(corpus, budget):
    path, lines = corpus
    longest = [b - 1 for b in BOUNDARIES] + [MAX_LENGTH]
    expected = [max(1, budget // n) for n in longest]
    partial = [0] * len(longest)
    for ids, tokens, _ in epoch(stream(path, batch_tokens=budget)):
        lengths = [len(lines[i]) for i in ids]
        buckets = {bucket(n) for n in lengths}
        assert len(buckets) == 1
        b = buckets.pop()
        assert len(ids) <= expected[b]
        partial[b] += len(ids) < expected[b]
        assert len(ids) * max(lengths) <= budget or len(ids) == 1
        assert tokens.shape == (len(ids), max(lengths))  # padded to the batch's longest
    assert all(p <= 1 for p in partial)  # only each bucket's last batch is short


def test_fixed_batch_size(corpus):
    path, lines = corpus
    sizes = {}
    for ids, _, _ in epoch(stream(path, batch_tokens=None, batch_size=8)):
        sizes.setdefault(bucket(len(lines[ids[0]])), []).append(len(ids))
    for per_bucket in sizes.values():
        assert all(n == 8 for n in per_bucket[:-1]) and 1 <= per_bucket[-1] <= 8


def test_pad_to_bucket_boundary(corpus):
    path, lines = corpus
    longest = [b - 1 for b in BOUNDARIES] + [MAX_LENGTH]
    shapes = set()
    batches = epoch(stream(path, pad_to_bucket_boundary=True))
    for ids, tokens, targets in batches:
        width = longest[bucket(len(lines[ids[0]]))]
        assert tokens.shape[1] == targets.shape[1] == width
        shapes.add(tokens.shape)
    assert sorted(ids_of(batches)) == list(range(COUNT))
    # one shape per bucket, plus each bucket's last (smaller) batch
    assert len(shapes) <= 2 * len(longest)


def test_pad_to_bucket_boundary_says_when_length_is_too_short(corpus):
    path, _ = corpus
    dataset = stream(path, pad_to_bucket_boundary=True,
                     length=lambda x, y: tf.shape(x["tokens"])[0] // 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="longer than the element length"):
        epoch(dataset)


def test_too_long_examples_dropped_and_counted(corpus):
    path, lines = corpus
    short = sorted(i for i, tokens in lines.items() if len(tokens) <= 12)
    dropped = DropCounter()
    dataset = stream(path, bucket_boundaries=[4, 8], max_length=12, dropped=dropped,
                     pad_to_bucket_boundary=True)
    assert sorted(ids_of(epoch(dataset))) == short
    assert dropped.count == COUNT - len(short) > 0
    epoch(dataset)
    assert dropped.reset() == 2 * (COUNT - len(short))
    assert dropped.count == 0


def test_shards_split_the_stream(corpus):
    path, _ = corpus
    shards = [stream(path, shard=(2, index)) for index in range(2)]
    ids = [ids_of(epoch(s)) for s in shards]
    assert sorted(ids[0]) == list(range(0, COUNT, 2))
    assert sorted(ids[1]) == list(range(1, COUNT, 2))
    policy = shards[0].options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.OFF


def test_a_generator_over_a_file_is_never_materialised(corpus):
    """An endless generator re-reading the file (too large to list): a few
    batches come out after reading a bounded number of lines."""
    path, lines = corpus
    read = []

    def endless():
        for i in itertools.count():
            with open(path) as f:
                for line in f:
                    read.append(i)
                    number, text = line.rstrip("\n").split("\t")
                    yield {"tokens": text.split(" ")}, np.int64(number)

    source = tf.data.Dataset.from_generator(endless, output_signature=(
        {"tokens": tf.TensorSpec([None], tf.string)}, tf.TensorSpec([], tf.int64)))
    dataset = stream_batches(source, length="tokens", bucket_boundaries=BOUNDARIES,
                             max_length=MAX_LENGTH, batch_tokens=64, shuffle_buffer=32, seed=0)
    assert dataset.cardinality() in (tf.data.UNKNOWN_CARDINALITY, tf.data.INFINITE_CARDINALITY)
    batches = list(dataset.take(5).as_numpy_iterator())
    assert len(batches) == 5
    for x, y in batches:
        for row, i in enumerate(y):
            assert [t.decode() for t in x["tokens"][row, :len(lines[i])]] == lines[i]
    assert len(read) < 3 * COUNT


def test_ragged_elements_are_batched(corpus):
    _, lines = corpus
    ragged = tf.ragged.constant([[1] * len(lines[i]) for i in range(20)])
    dataset = stream_batches(tf.data.Dataset.from_tensor_slices(ragged),
                             length=lambda x: tf.shape(x)[0], batch_size=4, shuffle_buffer=4)
    assert sum(int(b.sum()) for b in dataset.as_numpy_iterator()) == \
        sum(len(lines[i]) for i in range(20))


@pytest.mark.parametrize("kwargs", [
    {}, {"drop_remainder": True}, {"batch_tokens": None, "batch_size": 7},
    {"bucket_boundaries": [4, 8], "max_length": 12}, {"shard": (3, 1)}])
def test_known_lengths_give_the_number_of_batches(corpus, kwargs):
    path, lines = corpus
    dataset = stream(path, lengths=[len(lines[i]) for i in range(COUNT)], **kwargs)
    batches = epoch(dataset)
    assert dataset.cardinality() == len(batches) > 0
    assert len(epoch(dataset)) == len(batches)  # every epoch
    assert len(batches) == len(epoch(stream(path, **kwargs)))  # the stream's own count


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_tokens": 64, "max_length": None}, "batch_tokens needs max_length"),
    ({"batch_size": 4}, "exactly one of batch_size"),
    ({"batch_tokens": None}, "exactly one of batch_size"),
    ({"batch_tokens": 0}, "batch_tokens must be a positive integer"),
    ({"bucket_boundaries": [5, 40]}, "go past max_length 30"),
    ({"bucket_boundaries": [10, 5]}, "increasing positive integers"),
    ({"pad_to_bucket_boundary": True, "batch_tokens": None, "batch_size": 2, "max_length": None},
     "pad_to_bucket_boundary needs max_length"),
    ({"shard": (2, 2)}, r"shard index 2 is not in 0\.\.1"),
    ({"shuffle_buffer": -1}, "shuffle_buffer must be"),
])
def test_bad_arguments_name_themselves(corpus, kwargs, message):
    with pytest.raises(UserError, match=message):
        stream(corpus[0], **kwargs)


def test_drop_counter_belongs_outside_a_strategy_scope():
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        with pytest.raises(ValueError, match="outside strategy.scope"):
            DropCounter()


def test_make_dataset_unchanged(corpus):
    """The in-memory path still asserts its number of batches and batches
    exactly like tf.data's own bucket_by_sequence_length."""
    _, lines = corpus
    examples = [(np.full(len(lines[i]), i, "int32"), np.int32(i)) for i in range(COUNT)]
    length = lambda x, y: tf.shape(x)[0]  # noqa: E731
    dataset = make_dataset(examples, batch_size=8, length=length, shuffle=False,
                           bucket_boundaries=BOUNDARIES)
    per_bucket = np.bincount([bucket(len(lines[i])) for i in range(COUNT)])
    assert int(dataset.cardinality()) == int((-(-per_bucket // 8)).sum())
    reference = tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=(tf.TensorSpec([None], tf.int32),
                                                  tf.TensorSpec([], tf.int32)))
    reference = reference.bucket_by_sequence_length(length, BOUNDARIES, [8] * 4)
    got, want = list(dataset.as_numpy_iterator()), list(reference.as_numpy_iterator())
    assert len(got) == len(want) == int(dataset.cardinality())
    for (x, y), (x_ref, y_ref) in zip(got, want):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
    shuffled = make_dataset(examples, batch_size=8, length=length, shuffle=True, seed=3,
                            bucket_boundaries=BOUNDARIES)
    assert sorted(int(i) for _, y in shuffled.as_numpy_iterator() for i in y) == list(range(COUNT))
