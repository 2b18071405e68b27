"""Extractive QA (``bert_qa``): windows and spans mapped back to characters, SQuAD's EM/F1 by
hand, the split by article, and a tiny run trained, evaluated, exported and served (``answer``
over REST and gRPC), with bad input refused cleanly."""

from __future__ import annotations

import http.client
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import export
import zoo
from zoo.data import squad
from zoo.errors import ZooError
from zoo.qa_metrics import exact_match, normalize_answer, squad_scores, token_f1
from zoo.tasks import qa_spans
from zoo.tokenizers.base import SPECIAL_TOKENS
from zoo.tokenizers.wordpiece import WordPieceTokenizer

FAST = dict(verbose=0, max_steps=6, batch_size=8, checkpoint_every=3, eval_batches=2,
            vocab_size=500)

# ------------------------------------------------------------------------------------------------
# windows and spans


WORDS = [f"w{i:02d}" for i in range(20)]


@pytest.fixture(scope="module")
def toy():
    """A WordPiece vocabulary of whole words (one token each), a multi-byte one among them."""
    vocab = [*SPECIAL_TOKENS, "where", "?", "café", *WORDS]
    return qa_spans.OffsetWordPiece(WordPieceTokenizer(vocab))


def test_windows_cover_the_context_and_an_answer_across_a_boundary_maps_back(toy):
    # 20 context tokens; "café" (5 bytes, 4 characters) sits before the answer, so byte and
    # character offsets differ there.
    context = " ".join(WORDS[:5]) + " café " + " ".join(WORDS[5:19])  # 20 tokens
    answer = "w08 w09 w10 w11"  # tokens 9..12
    char_start = context.index(answer)
    q_ids, _, _ = toy.tokenize_with_offsets(tf.constant(["where ?"]))
    c_ids, starts, ends = toy.tokenize_with_offsets(tf.constant([context]))
    assert c_ids.row_lengths().numpy().tolist() == [20]
    # seq_len 16, question 2 tokens: 11 context tokens a window, windows start every 4 tokens
    windows = qa_spans.make_windows(q_ids, c_ids, seq_len=16, stride=4)
    assert windows.start.numpy().tolist() == [0, 4, 8, 12]
    assert windows.length.numpy().tolist() == [11, 11, 11, 8]
    ids = windows.ids.numpy()
    q = q_ids.numpy()[0].tolist()
    c = c_ids.numpy()[0].tolist()
    assert ids[1].tolist() == [2, *q, 3, *c[4:15], 3]  # [CLS] question [SEP] piece [SEP]
    assert ids[3].tolist() == [2, *q, 3, *c[12:20], 3, 0, 0, 0]

    span = qa_spans.char_span_to_tokens(starts.to_list()[0], ends.to_list()[0], char_start,
                                        char_start + len(answer), qa_spans.byte_offsets(context))
    assert span == (9, 12)
    labels = qa_spans.window_labels(windows, [span])
    # window 0 (tokens 0-10) cuts the answer: it points at [CLS]; windows 1 and 2 hold it
    assert labels.tolist() == [[0, 0], [4 + 9 - 4, 4 + 12 - 4], [4 + 9 - 8, 4 + 12 - 8], [0, 0]]

    # logits that favour the answer in window 2; higher ones outside any context piece
    logits = np.zeros([4, 16, 2], np.float32)
    logits[2, 5, 0] = logits[2, 8, 1] = 5.0
    logits[0, 15, 0] = logits[0, 15, 1] = 50.0  # window 0's closing [SEP]
    logits[1, 1, 0] = logits[1, 2, 1] = 50.0  # the question
    logits[3, 13:, :] = 50.0  # window 3's [SEP] and padding
    score, first, last = qa_spans.best_spans(tf.constant(logits), windows, 1, max_answer_tokens=8)
    assert (first.numpy().tolist(), last.numpy().tolist()) == ([9], [12])
    assert float(score[0]) == pytest.approx(10.0)
    text, start, end = qa_spans.span_text(tf.constant([context]), starts, ends, first, last)
    assert text.numpy()[0].decode() == answer
    assert (int(start[0]), int(end[0])) == (char_start, char_start + len(answer))
    assert context[int(start[0]):int(end[0])] == answer

    # too long a span is never picked: the length cap moves the answer to a 3-token span
    _, first, last = qa_spans.best_spans(tf.constant(logits), windows, 1, max_answer_tokens=3)
    assert int(last[0]) - int(first[0]) < 3


def test_spans_keep_to_whole_words():
    vocab = [*SPECIAL_TOKENS, "un", "##believ", "##able", "story", "q"]
    tok = qa_spans.OffsetWordPiece(WordPieceTokenizer(vocab))
    q_ids, _, _ = tok.tokenize_with_offsets(tf.constant(["q"]))
    c_ids, starts, ends = tok.tokenize_with_offsets(tf.constant(["unbelievable story"]))
    windows = qa_spans.make_windows(q_ids, c_ids, seq_len=12, stride=4)
    begins, ends_word = qa_spans.word_edges(c_ids, tok.suffix_table)
    assert begins.to_list() == [[True, False, False, True]]
    assert ends_word.to_list() == [[False, False, True, True]]
    logits = np.zeros([1, 12, 2], np.float32)
    logits[0, 4, 0] = logits[0, 4, 1] = 9.0  # "##believ" alone: not a word
    width = 12
    _, first, last = qa_spans.best_spans(
        tf.constant(logits), windows, 1, 30, qa_spans.in_windows(begins, windows, width),
        qa_spans.in_windows(ends_word, windows, width))
    text, _, _ = qa_spans.span_text(tf.constant(["unbelievable story"]), starts, ends, first, last)
    assert text.numpy()[0].decode() == "unbelievable"


# ------------------------------------------------------------------------------------------------
# metrics


def test_exact_match_and_f1_by_hand():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel tower") == 0.0
    # "in the year 1850" -> [in, year, 1850]; gold [1850]: P = 1/3, R = 1, F1 = 2PR/(P+R) = 0.5
    assert token_f1("in the year 1850", "1850") == pytest.approx(0.5)
    # multiset overlap: [x, y, y] vs [y, y, z] share two tokens: P = R = 2/3
    assert token_f1("x y y", "y y z") == pytest.approx(2 / 3)
    assert token_f1("nothing", "something") == 0.0
    assert token_f1("", "") == 0.0  # as SQuAD v1.1: no common token, F1 0
    # max over gold answers, mean over questions, in percent
    predictions = ["Denver Broncos", "Carolina Panthers defense", "1850"]
    golds = [["Denver Broncos", "Broncos"], ["Panthers", "the Carolina Panthers"],
             ["in 1851"]]
    # EM: 1, 0, 0. F1: 1; max(1/3 P, R 1 -> 0.5; P 2/3, R 1 -> 0.8) = 0.8; 0
    scores = squad_scores(predictions, golds)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)
    assert scores["examples"] == 3


def test_split_keeps_test_articles_out_of_training(data_dir):
    articles = squad.read_articles(squad.source_path("dataset:squad"))
    parts = squad.split_articles(len(articles))
    assert (len(articles), list(parts["test"])) == (48, list(range(40, 48)))
    assert list(parts["train_all"]) == list(range(40))
    assert list(parts["validation"]) == [36, 37, 38, 39]
    test = squad.load_examples("dataset:squad", "test")
    seen = (squad.load_examples("dataset:squad", "train")
            + squad.load_examples("dataset:squad", "validation"))
    assert len(test) == 1589 and len(test) + len(seen) == 10570
    assert not {e.article for e in test} & {e.article for e in seen}
    assert not {e.context for e in test} & {e.context for e in seen}
    assert not {e.id for e in test} & {e.id for e in seen}
    first = test[0]
    assert first.context[first.answer_starts[0]:].startswith(first.answers[0])


# ------------------------------------------------------------------------------------------------
# a tiny run: train, evaluate, answer, export, serve


@pytest.fixture(scope="module")
def qa_file(data_dir, tmp_path_factory):
    """Six articles of SQuAD dev, two paragraphs each, as a SQuAD JSON file."""
    with open(os.path.join(data_dir, "squad", "dev-v1.1.json"), encoding="utf-8") as f:
        data = json.load(f)["data"]
    small = {"version": "1.1",
             "data": [dict(a, paragraphs=a["paragraphs"][:2]) for a in data[:6]]}
    path = tmp_path_factory.mktemp("qa_data") / "squad_small.json"
    path.write_text(json.dumps(small), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def runs(qa_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("qa_runs")
    run = zoo.train("bert_qa", qa_file, str(root / "qa"),
                    model_overrides={"max_context_tokens": 400}, **FAST)
    path = export.saved_model(run, str(root / "models" / "qa"))
    return {"run": run, "export": path}


@pytest.fixture(scope="module")
def server(runs):
    from serving.config import ANY_PORT, ModelConfig, ServerConfig
    from serving.server import ModelServer

    config = ServerConfig(models=[ModelConfig("qa", os.path.dirname(runs["export"]))],
                          port=ANY_PORT, rest_api_port=ANY_PORT, max_num_load_retries=0)
    srv = ModelServer(config).start(timeout=120)
    yield srv
    srv.stop()


def _pairs(qa_file, split="test"):
    examples = squad.load_examples(qa_file, split)
    return [e.question for e in examples[:4]], [e.context for e in examples[:4]]


def test_tiny_run_answers_spans_of_the_context_and_evaluates(runs, qa_file):
    run = runs["run"]
    assert run.task == "question_answering"
    questions, contexts = _pairs(qa_file)
    answers = run.answer(questions, contexts)
    for a, context in zip(answers, contexts, strict=True):
        assert context[a["start"]:a["end"]] == a["answer"] and a["answer"]
        assert np.isfinite(a["score"])
    # the tiny windows (64 ids) cut these paragraphs into several
    tok = qa_spans.OffsetWordPiece(run.tokenizer)
    lengths = tok.tokenize_with_offsets(tf.constant(contexts))[0].row_lengths().numpy()
    assert lengths.max() > 64
    single = run.answer(questions[0], contexts[0])
    assert single == answers[0]

    examples = squad.load_examples(qa_file, "test")
    report = run.evaluate(split="test")
    predicted = [a["answer"] for a in run.answer([e.question for e in examples],
                                                  [e.context for e in examples])]
    again = squad_scores(predicted, [e.answers for e in examples])
    assert report["examples"] == len(examples) == again["examples"]
    assert report["exact_match"] == pytest.approx(again["exact_match"])
    assert report["f1"] == pytest.approx(again["f1"])
    assert report["articles"] == 1 and report["split"] == "test"


def test_cli_answer(runs, capsys):
    from zoo.cli import main

    context = "The Rhine flows through Basel and Cologne."
    assert main(["answer", runs["run"].path, "--question", "Where does it flow?",
                 "--context", context]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"answer", "score", "start", "end"}
    assert context[out["start"]:out["end"]] == out["answer"]
    assert main(["answer", runs["run"].path, "--question", " ", "--context", context]) == 2
    assert "every question needs some text" in capsys.readouterr().err


def test_bad_input_is_a_clean_error(runs):
    run = runs["run"]
    with pytest.raises(ZooError, match="^answer: every question needs some text$"):
        run.answer("", "Some context.")
    with pytest.raises(ZooError, match="^answer: every context needs some text$"):
        run.answer("Why?", "   ")
    with pytest.raises(ZooError, match="longer than 400 tokens"):
        run.answer("Why?", "word " * 500)
    with pytest.raises(ZooError, match="2 questions for 1 contexts"):
        run.answer(["a", "b"], ["c"])
    classifier_like = zoo.run.LoadedRun(path="x", model=None, tokenizer=None,
                                        config={"task": "masked_lm"})
    with pytest.raises(ZooError, match="needs a question_answering run"):
        classifier_like.answer("a", "b")


def _post(port: int, path: str, body: dict):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=json.dumps(body))
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_served_answer_over_rest_and_grpc(runs, server, qa_file):
    questions, contexts = _pairs(qa_file)
    expected = runs["run"].answer(questions, contexts)
    status, body = _post(server.rest_port, "/v1/models/qa:predict",
                         {"signature_name": "answer",
                          "inputs": {"question": questions, "context": contexts}})
    assert status == 200, body
    out = body["outputs"]
    assert out["answer"] == [e["answer"] for e in expected]
    assert out["start"] == [e["start"] for e in expected]
    assert out["end"] == [e["end"] for e in expected]
    np.testing.assert_allclose(out["score"], [e["score"] for e in expected], rtol=1e-4, atol=1e-4)

    status, body = _post(server.rest_port, "/v1/models/qa:predict",
                         {"signature_name": "answer",
                          "inputs": {"question": [""], "context": ["Some context."]}})
    assert status == 400 and "every question needs some text" in body["error"]
    status, body = _post(server.rest_port, "/v1/models/qa:predict",
                         {"signature_name": "answer",
                          "inputs": {"question": ["Why?"], "context": ["word " * 500]}})
    assert status == 400 and "longer than 400 tokens" in body["error"]

    import grpc

    from serving.client import GrpcClient, ServingClientError

    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
        got = client.predict("qa", {"question": questions, "context": contexts},
                             signature_name="answer")
        assert [a.decode() for a in got["answer"]] == [e["answer"] for e in expected]
        assert got["start"].tolist() == [e["start"] for e in expected]
        assert got["end"].tolist() == [e["end"] for e in expected]
        with pytest.raises(ServingClientError) as err:
            client.predict("qa", {"question": ["Why?"], "context": [""]},
                           signature_name="answer")
    assert err.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "every context needs some text" in str(err.value)


def test_encoder_copied_from_a_masked_lm_run(tmp_path):
    from zoo.models import build_model
    from zoo.tasks.question_answering import _copy_encoder

    mlm = build_model("bert_mlm", 60, "tiny")  # context 64
    mlm.save(str(tmp_path / "model.keras"))
    qa = build_model("bert_qa", 60, "tiny", max_length=48)
    _copy_encoder(qa, str(tmp_path))
    for got, want in zip(qa.encoder.get_weights(), mlm.encoder.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want[:got.shape[0]])  # positions cut to 48
