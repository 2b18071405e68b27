"""Request limits on zoo LM exports: ``--max_prompt_bytes`` and ``--max_new_tokens_limit``.

Each violation is refused over REST predict (400), gRPC Predict (INVALID_ARGUMENT) and both
streaming routes, with a message naming the value and the limit; the server stays up and
requests within the limits still work.  Other models are not affected.
"""

from __future__ import annotations

import os
import sys

import grpc
import pytest

import export
import zoo
from serving.client import GrpcClient, RestClient, ServingClientError
from serving.config import ANY_PORT, ModelConfig, ServerConfig, parse_args
from serving.server import ModelServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import serving_models  # noqa: E402

MAX_NEW = 8
PROMPT_LIMIT = 64


@pytest.fixture(scope="module")
def export_dir(shakespeare_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    run = zoo.train("transformer_lm", shakespeare_file, str(root / "run"), verbose=0, max_steps=6,
                    batch_size=4, seq_len=32, checkpoint_every=3, eval_batches=2)
    export.saved_model(run, str(root / "lm"), max_new_tokens=MAX_NEW, streaming=True)
    serving_models.save_strings(str(root / "strings" / "1"))
    return root


def _serve(root, **limits):
    cfg = ServerConfig(models=[ModelConfig("lm", str(root / "lm")), ModelConfig("strings", str(root / "strings"))],
                       port=ANY_PORT, rest_api_port=ANY_PORT, file_system_poll_wait_seconds=0, **limits)
    server = ModelServer(cfg).start(timeout=180)
    return server, RestClient(server.rest_url), GrpcClient(f"127.0.0.1:{server.grpc_port}")


@pytest.fixture(scope="module")
def served(export_dir):
    server, rest, grpc_client = _serve(export_dir, max_prompt_bytes=PROMPT_LIMIT)
    try:
        yield rest, grpc_client
    finally:
        grpc_client.close()
        server.stop()


def _refused(call, rest: bool) -> str:
    with pytest.raises(ServingClientError) as info:
        result = call()
        if not isinstance(result, (str, list, dict)):
            list(result)  # a stream: errors come on iteration
    if rest:
        assert info.value.http_status == 400, info.value
    else:
        assert info.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT, info.value
    return info.value.message


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_prompt_over_max_prompt_bytes(served, protocol):
    client = served[0] if protocol == "rest" else served[1]
    rest = protocol == "rest"
    long = "é" * 40  # 80 UTF-8 bytes
    want = f"prompt is 80 bytes; the limit is {PROMPT_LIMIT} (--max_prompt_bytes)"
    assert _refused(lambda: client.generate("lm", long, max_new_tokens=2), rest) == want
    assert _refused(lambda: client.generate("lm", ["ok", long], max_new_tokens=2), rest) == want
    assert _refused(lambda: client.generate_stream("lm", long), rest) == want
    assert "text is 80 bytes" in _refused(lambda: client.score("lm", long), rest)
    # within the limit (64 bytes exactly) still works, and other models have no prompt limit
    edge = "a" * PROMPT_LIMIT
    assert client.generate("lm", edge, max_new_tokens=2) == "".join(client.generate_stream("lm", edge,
                                                                                            max_new_tokens=2))
    out = client.predict("strings", {"text": ["x" * 1000]})
    assert out["lengths"].tolist() == [1000]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_max_new_tokens_over_the_export_bound(served, protocol):
    client = served[0] if protocol == "rest" else served[1]
    rest = protocol == "rest"
    message = _refused(lambda: client.generate("lm", "ROMEO:", max_new_tokens=MAX_NEW + 1), rest)
    assert message.startswith(f"max_new_tokens is {MAX_NEW + 1}; the limit is {MAX_NEW} (--max_new_tokens_limit")
    message = _refused(lambda: client.generate_stream("lm", "ROMEO:", max_new_tokens=1000), rest)
    assert message.startswith(f"max_new_tokens is 1000; the limit is {MAX_NEW}")
    # at the bound, and None (the export's bound), still work: the server stayed up
    full = client.generate("lm", "ROMEO:", max_new_tokens=MAX_NEW)
    assert client.generate("lm", "ROMEO:") == full
    assert "".join(client.generate_stream("lm", "ROMEO:", max_new_tokens=MAX_NEW)) == full
    assert "".join(client.generate_stream("lm", "ROMEO:")) == full


def test_explicit_max_new_tokens_limit(export_dir):
    server, rest, grpc_client = _serve(export_dir, max_new_tokens_limit=3, max_prompt_bytes=0)
    try:
        for client, is_rest in ((rest, True), (grpc_client, False)):
            message = _refused(lambda c=client: c.generate("lm", "ROMEO:", max_new_tokens=4), is_rest)
            assert message.startswith("max_new_tokens is 4; the limit is 3")
            _refused(lambda c=client: c.generate_stream("lm", "ROMEO:", max_new_tokens=4), is_rest)
            three = client.generate("lm", "ROMEO:", max_new_tokens=3)
            assert client.generate("lm", "ROMEO:") == three  # "the export's bound" is capped at the limit
            assert "".join(client.generate_stream("lm", "ROMEO:", max_new_tokens=3)) == three
            assert client.generate("lm", "é" * 10000, max_new_tokens=1) is not None  # 0: no prompt limit
    finally:
        grpc_client.close()
        server.stop()


def test_flags():
    cfg = parse_args(["--model_base_path", "/tmp/m", "--max_prompt_bytes", "100", "--max_new_tokens_limit=5"])
    assert (cfg.max_prompt_bytes, cfg.max_new_tokens_limit) == (100, 5)
    cfg = parse_args(["--model_base_path", "/tmp/m"])
    assert (cfg.max_prompt_bytes, cfg.max_new_tokens_limit) == (16384, 0)
