"""word2vec and GloVe: the skip-gram examples, negative sampling and subsampling follow their
formulas; GloVe's weighting, loss and co-occurrence counts equal NumPy; a tiny run trains from
the CLI, exports vectors gensim reads back, and answers most_similar / analogy as NumPy's
cosines do; the evaluation equals gensim's; bad input is a ZooError."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from export.word_vectors import export_vectors
from zoo.cli import main as zoo_main
from zoo.data.cooccurrence import CooccurrenceData, cooccurrence
from zoo.data.skipgrams import (
    SkipGramData,
    context_matrix,
    draw_negatives,
    epoch_examples,
    keep_probabilities,
    noise_distribution,
    subsample,
)
from zoo.errors import ZooError
from zoo.files import read_json
from zoo.models import build_model
from zoo.models.glove import glove_loss, weighting
from zoo.run import LoadedRun, load
from zoo.word_similarity import WordVectors, analogy_accuracy, wordsim_spearman

gensim_models = pytest.importorskip("gensim.models")
datapath = pytest.importorskip("gensim.test.utils").datapath

WINDOW = 3


def _sentences(lengths=(7, 1, 12, 5, 9)) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ids 4, 5, ... (so an id names its position) and the sentence of each."""
    sentence = np.repeat(np.arange(len(lengths)), lengths).astype(np.int32)
    return (4 + np.arange(len(sentence))).astype(np.int32), sentence


def test_context_words_are_within_the_reduced_window_of_their_sentence():
    ids, sentence = _sentences()
    context = context_matrix(tf.constant(ids), tf.constant(sentence), WINDOW,
                             tf.constant([3, 4], tf.int64)).numpy()
    offsets = np.array([*range(-WINDOW, 0), *range(1, WINDOW + 1)])
    assert context.shape == (len(ids), 2 * WINDOW)
    for i, row in enumerate(context):
        in_sentence = [d for d in offsets
                       if 0 <= i + d < len(ids) and sentence[i + d] == sentence[i]]
        filled = [d for d, value in zip(offsets, row, strict=True) if value]
        for d, value in zip(offsets, row, strict=True):
            if value:
                assert value == ids[i + d]  # the word at that distance
        # some b in 1..WINDOW explains the row: every in-sentence offset with |d| <= b is filled
        assert any(sorted(filled) == sorted(d for d in in_sentence if abs(d) <= b)
                   for b in range(1, WINDOW + 1)), (i, filled)


def test_reduced_window_is_uniform_in_1_to_window():
    ids = (4 + np.arange(30000) % 50).astype(np.int32)
    context = context_matrix(tf.constant(ids), tf.zeros(len(ids), tf.int32), WINDOW,
                             tf.constant([1, 2], tf.int64)).numpy()[WINDOW:-WINDOW]
    b = (context[:, WINDOW:] > 0).sum(axis=1)  # right-hand context size = the reduced window
    counts = np.bincount(b, minlength=WINDOW + 1)[1:]
    np.testing.assert_allclose(counts / counts.sum(), 1 / WINDOW, atol=0.015)


def test_skipgram_pairs_are_the_context_matrix_pairs():
    ids, sentence = _sentences()
    keep = np.ones(ids.max() + 1)  # no subsampling: the epoch's pairs are all the context pairs
    inputs, positives = epoch_examples(tf.constant(ids), tf.constant(sentence), tf.constant(keep),
                                       WINDOW, "skipgram", 7, 0)
    pairs = sorted(zip(inputs.numpy()[:, 0].tolist(), positives.numpy().tolist(), strict=True))
    assert pairs
    for centre, word in pairs:
        i, j = centre - 4, word - 4
        assert 1 <= abs(i - j) <= WINDOW and sentence[i] == sentence[j]
    # CBOW: one example per centre with a context, its inputs the skip-gram pairs' words
    inputs_c, centres = epoch_examples(tf.constant(ids), tf.constant(sentence),
                                       tf.constant(keep), WINDOW, "cbow", 7, 0)
    cbow = sorted((int(c), int(w)) for c, row in zip(centres.numpy(), inputs_c.numpy(),
                                                     strict=True) for w in row if w)
    assert cbow == pairs


def test_negatives_follow_unigram_to_the_075():
    from scipy.stats import chisquare

    counts = np.array([0, 0, 0, 0, 1000, 400, 120, 60, 30, 9, 3, 1], np.int64)
    noise = noise_distribution(counts)
    expected = np.where(np.arange(len(counts)) >= 4, counts.astype(float) ** 0.75, 0.0)
    np.testing.assert_allclose(noise, expected / expected.sum())
    draws = draw_negatives(tf.constant(np.cumsum(noise)), [2000, 100],
                           tf.constant([5, 9], tf.int64)).numpy().ravel()
    observed = np.bincount(draws, minlength=len(counts))
    assert observed[:4].sum() == 0  # reserved ids are never drawn
    frequencies = observed[4:] / draws.size
    np.testing.assert_allclose(frequencies[:6], noise[4:10], rtol=0.03)
    assert chisquare(observed[4:], noise[4:] * draws.size).pvalue > 1e-3


def test_subsampling_keeps_words_at_the_word2vec_rate():
    counts = np.array([0, 0, 0, 0, 20000, 5000, 1000, 200], np.int64)
    sample = 1e-2
    keep = keep_probabilities(counts, sample)
    threshold = sample * counts.sum()
    formula = np.minimum(1.0, (np.sqrt(counts[4:] / threshold) + 1) * threshold / counts[4:])
    np.testing.assert_allclose(keep[4:], formula)
    assert keep[4] < 0.4 and keep[7] == 1.0  # a frequent word is thinned, a rare one kept
    ids = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    kept, _ = subsample(tf.constant(ids), tf.zeros_like(tf.constant(ids)), tf.constant(keep),
                        tf.constant([11, 0], tf.int64))
    rate = np.bincount(kept.numpy(), minlength=len(counts))[4:] / counts[4:]
    sigma = np.sqrt(keep[4:] * (1 - keep[4:]) / counts[4:])
    assert np.all(np.abs(rate - keep[4:]) <= 4 * sigma + 1e-9), (rate, keep[4:])


def test_batches_are_a_function_of_seed_and_step():
    ids, sentence = _sentences((40, 30, 50))
    data = SkipGramData(ids, sentence, np.bincount(ids), window=2, negatives=3, sample=0.0,
                        architecture="skipgram", batch_size=8, seed=3)
    per_epoch = data.steps_per_epoch()
    whole = list(data.dataset(0, per_epoch + 3).as_numpy_iterator())
    resumed = list(data.dataset(per_epoch - 1, 4).as_numpy_iterator())
    for (x, y), (x2, y2) in zip(whole[per_epoch - 1:], resumed, strict=True):
        for a, b in zip(x, x2, strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(y, y2)
    (inputs, targets), labels = whole[0]
    assert inputs.shape == (8, 1) and targets.shape == (8, 4)
    np.testing.assert_array_equal(labels, np.eye(1, 4).repeat(8, axis=0))


def test_glove_weighting_and_loss_equal_numpy():
    x_max, alpha = 10.0, 0.75
    x = np.array([0.5, 3.0, 9.99, 10.0, 42.0])
    np.testing.assert_allclose(np.asarray(weighting(x, x_max, alpha)),
                               np.where(x < x_max, (x / x_max) ** alpha, 1.0), rtol=1e-6)
    rng = np.random.default_rng(0)
    counts = np.where(rng.random((10, 10)) < 0.5, rng.random((10, 10)) * 30, 0.0)
    rows, cols = np.nonzero(counts)
    model = build_model("glove", vocab_size=10, preset="tiny", x_max=x_max, alpha=alpha)
    for layer in (model.word_bias, model.context_bias):  # non-zero biases, so they count
        layer.embeddings.assign(rng.normal(size=(10, 1)).astype("float32"))
    w, wc = (np.asarray(e.embeddings, np.float64) for e in (model.word_embedding,
                                                           model.context_embedding))
    b, bc = (np.asarray(e.embeddings, np.float64)[:, 0] for e in (model.word_bias,
                                                                 model.context_bias))
    xs = counts[rows, cols]
    f = np.where(xs < x_max, (xs / x_max) ** alpha, 1.0)
    j = np.sum(f * (np.sum(w[rows] * wc[cols], axis=1) + b[rows] + bc[cols] - np.log(xs)) ** 2)
    prediction = model((rows.astype("int32"), cols.astype("int32")))
    labels = np.stack([np.log(xs), np.asarray(weighting(xs, x_max, alpha))], axis=1)
    np.testing.assert_allclose(float(glove_loss(labels, prediction)) * len(xs), j, rtol=1e-5)
    np.testing.assert_allclose(model.word_vectors(), w + wc, rtol=1e-6)


def test_cooccurrence_counts_equal_a_brute_force_count():
    rng = np.random.default_rng(1)
    ids = rng.integers(4, 12, 60).astype(np.int32)
    sentence = np.repeat(np.arange(4), [20, 5, 25, 10]).astype(np.int32)
    window = 4
    brute = np.zeros((12, 12))
    for i in range(len(ids)):
        for j in range(len(ids)):
            d = abs(i - j)
            if 1 <= d <= window and sentence[i] == sentence[j]:
                brute[ids[i], ids[j]] += 1.0 / d
    rows, cols, counts = cooccurrence(ids, sentence, window, 12)
    dense = np.zeros((12, 12))
    dense[rows, cols] = counts
    np.testing.assert_allclose(dense, brute)
    assert np.all(counts > 0)
    data = CooccurrenceData(rows, cols, counts, np.ones_like(counts), batch_size=4, seed=0)
    (r, c), labels = next(data.dataset(0, 1).as_numpy_iterator())
    np.testing.assert_allclose(labels[:, 0], np.log(dense[r, c]), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# a tiny run, end to end


def _corpus(path) -> str:
    """Lines of a little grammar: animals and objects in interchangeable slots."""
    rng = np.random.default_rng(0)
    animals, objects = ["cat", "dog", "horse", "cow"], ["mat", "rug", "bed", "sofa"]
    verbs = ["sat", "lay", "slept", "stood"]
    lines = [f"the {rng.choice(animals)} {rng.choice(verbs)} on the {rng.choice(objects)}"
             for _ in range(1500)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def w2v_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("w2v")
    data = _corpus(root / "animals.txt")
    out = str(root / "run")
    code = zoo_main(["train", "word2vec", "--data", data, "--out", out, "--tokenizer", "word",
                     "--max-steps", "20", "--batch-size", "64", "--quiet",
                     "--set", "checkpoint_every=10", "--set", "eval_batches=2"])
    assert code == 0
    return load(out)


def test_tiny_run_trains_and_exports_vectors_gensim_reads(w2v_run, tmp_path):
    from gensim.models import KeyedVectors

    words, vectors = w2v_run.word_vectors()
    assert words[0] == "the" and vectors.shape == (len(words), 16)
    assert w2v_run.config["task"] == "word_vectors" and w2v_run.config["tokenizer"] == "word"
    path = str(tmp_path / "vectors.txt")
    assert zoo_main(["export", w2v_run.path, "--vectors", path]) == 0
    loaded = KeyedVectors.load_word2vec_format(path, binary=False)
    assert list(loaded.index_to_key) == words
    np.testing.assert_array_equal(loaded.vectors, vectors)
    glove_path = str(tmp_path / "glove.txt")
    export_vectors(w2v_run, glove_path, "glove")
    loaded_glove = KeyedVectors.load_word2vec_format(glove_path, binary=False, no_header=True)
    np.testing.assert_array_equal(loaded_glove.vectors, vectors)
    ours = w2v_run.most_similar("cat", top_k=5)
    theirs = loaded.most_similar("cat", topn=5)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)


def test_tiny_glove_run_trains_and_exports_its_final_vectors(w2v_run, tmp_path):
    from gensim.models import KeyedVectors

    import zoo

    run = zoo.train("glove", w2v_run.config["data"], str(tmp_path / "glove"), max_steps=12,
                    batch_size=16, checkpoint_every=6, eval_batches=2, verbose=0)
    assert run.config["task"] == "word_vectors"
    words, vectors = run.word_vectors()
    w, wc = (np.asarray(e.embeddings) for e in (run.model.word_embedding,
                                               run.model.context_embedding))
    np.testing.assert_allclose(vectors, (w + wc)[4:], rtol=1e-6)  # W + W~, reserved ids left out
    metrics = read_json(str(tmp_path / "glove" / "metrics.json"))
    assert metrics["steps"] == 12 and np.isfinite(metrics["validation"]["loss"])
    path = str(tmp_path / "glove.txt")
    export_vectors(run, path, "glove")
    loaded = KeyedVectors.load_word2vec_format(path, binary=False, no_header=True)
    assert list(loaded.index_to_key) == words
    np.testing.assert_array_equal(loaded.vectors, vectors)


def test_most_similar_and_analogy_equal_numpy_cosines(w2v_run):
    words, vectors = w2v_run.word_vectors()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    i = words.index("dog")
    cos = unit @ unit[i]
    cos[i] = -np.inf
    order = np.argsort(-cos)[:3]
    got = w2v_run.most_similar("dog", top_k=3)
    assert [w for w, _ in got] == [words[k] for k in order]
    np.testing.assert_allclose([s for _, s in got], cos[order], atol=1e-6)
    a, b, c = (words.index(w) for w in ("cat", "mat", "dog"))
    scores = unit @ (unit[b] - unit[a] + unit[c])
    scores[[a, b, c]] = -np.inf
    (best, score), = w2v_run.analogy("cat", "mat", "dog")
    assert best == words[int(np.argmax(scores))]
    np.testing.assert_allclose(score, scores.max(), atol=1e-6)


def test_evaluation_equals_gensims_on_the_same_vectors():
    from gensim.models import KeyedVectors

    words = []
    with open(datapath("questions-words.txt"), encoding="utf-8") as f:
        for line in f:
            if not line.startswith(":"):
                words += [w.lower() for w in line.split()]
    with open(datapath("wordsim353.tsv"), encoding="utf-8") as f:
        words += [w.lower() for line in f if not line.startswith("#")
                  for w in line.split("\t")[:2]]
    vocab = list(dict.fromkeys(words))
    rng = np.random.default_rng(2)
    vocab = [vocab[i] for i in np.sort(rng.permutation(len(vocab))[:500])]  # partial coverage
    # some questions with an answer: the first section's countries = capitals + one offset
    capitals = {"athens": "greece", "baghdad": "iraq", "bangkok": "thailand", "beijing": "china",
                "berlin": "germany", "cairo": "egypt", "madrid": "spain", "paris": "france"}
    vocab = [w for w in vocab if w not in capitals and w not in capitals.values()]
    vocab = [*capitals, *capitals.values(), *vocab]
    vectors = rng.normal(size=(len(vocab), 8)).astype(np.float32)
    vectors[len(capitals):2 * len(capitals)] = vectors[:len(capitals)] + 2 * vectors[-1]
    kv = KeyedVectors(8)
    kv.add_vectors(vocab, vectors)
    ours = WordVectors(vocab, vectors)
    _, spearman, oov = kv.evaluate_word_pairs(datapath("wordsim353.tsv"))
    pairs = wordsim_spearman(ours)
    np.testing.assert_allclose(pairs["spearman"], spearman.statistic, rtol=1e-6)
    assert 0 < pairs["pairs"] < pairs["pairs_total"] == 353
    np.testing.assert_allclose(100 * (1 - pairs["pairs"] / 353), oov)
    accuracy, sections = kv.evaluate_word_analogies(datapath("questions-words.txt"),
                                                    restrict_vocab=300)
    total = sections[-1]
    ours_analogy = analogy_accuracy(ours, restrict=300)
    assert ours_analogy["questions"] == len(total["correct"]) + len(total["incorrect"]) > 0
    assert ours_analogy["correct"] == len(total["correct"]) > 0
    np.testing.assert_allclose(ours_analogy["accuracy"], accuracy)


def test_bad_input_is_a_zoo_error(w2v_run, tmp_path, capsys):
    with pytest.raises(ZooError, match="'zebra' is not in the vocabulary"):
        w2v_run.most_similar("zebra")
    with pytest.raises(ZooError, match="'unicorn'"):
        w2v_run.analogy("cat", "unicorn", "dog")
    lm = LoadedRun(path="runs/lm", model=None, tokenizer=None,
                   config={"task": "causal_lm", "model": "transformer_lm"})
    with pytest.raises(ZooError, match="--vectors needs a word_vectors run"):
        export_vectors(lm, str(tmp_path / "v.txt"))
    with pytest.raises(ZooError, match="most_similar needs a word_vectors run"):
        lm.most_similar("cat")
    with pytest.raises(ZooError, match="word tokenizer, not char"):
        from zoo.tasks.word_vectors import train

        train("word2vec", "dataset:ptb", str(tmp_path / "r"), tokenizer="char")
    with pytest.raises(ZooError, match="--data does not apply"):
        w2v_run.evaluate(data="dataset:ptb")
    capsys.readouterr()
    assert zoo_main(["export", w2v_run.path, "--saved-model", str(tmp_path / "m")]) == 2
    assert "there is no SavedModel export" in capsys.readouterr().err
