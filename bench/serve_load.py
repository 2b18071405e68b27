"""Bounded load on loopback against a tiny LM export: REST with and without batching vs in-process.

    python bench/serve_load.py --quick                 # trains a tiny transformer, < 1 minute on CPU
    python bench/serve_load.py --export BASE_DIR       # an existing export (version dirs under it)

Prints p50/p99 latency and throughput of ``serving_default`` called (1) in process on the loaded
SavedModel, (2) over REST, (3) over REST with --enable_batching, each with the ratio to (1); then
time to first token of ``:generate_stream`` against the latency of the whole non-streamed answer.
Every loop is bounded in request count and in time.  Servers listen on 127.0.0.1, OS-picked ports.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROMPTS = ["ROMEO:", "First Citizen:", "To be, or not", "JULIET:\nO"]


def percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def post(port, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=json.dumps(body))
        reply = conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{reply.status}: {data[:200]!r}")
        return data
    finally:
        conn.close()


def load(fn, requests, concurrency, time_limit):
    """Run ``fn(i)`` ``requests`` times on ``concurrency`` threads (stop at ``time_limit`` s)."""
    latencies, errors = [], []
    counter = iter(range(requests))
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def worker():
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                fn(i)
            except Exception as exc:  # counted, reported
                errors.append(exc)
                continue
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return latencies, errors, wall


def build_export(root):
    import export
    import zoo

    data = os.environ.get("ZOO_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    corpus = os.path.join(root, "corpus.txt")
    with open(os.path.join(data, "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
        text = f.read(20000)
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(text)
    run = zoo.train("transformer_lm", corpus, os.path.join(root, "run"), verbose=0, max_steps=6, batch_size=4,
                    seq_len=32, checkpoint_every=3, eval_batches=2)
    base = os.path.join(root, "lm")
    export.saved_model(run, base, max_new_tokens=16, streaming=True)
    return base


def serve(base, batching_file=None):
    from serving.config import ModelConfig, ServerConfig
    from serving.server import ModelServer

    config = ServerConfig(models=[ModelConfig("lm", base)], port=0, rest_api_port=0,
                          file_system_poll_wait_seconds=0, enable_batching=batching_file is not None,
                          batching_parameters_file=batching_file or "")
    return ModelServer(config).start(timeout=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small counts for a 2-core CPU (< 1 minute)")
    p.add_argument("--export", help="model base path (default: train and export a tiny transformer)")
    p.add_argument("--requests", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None, help="seconds per load phase")
    args = p.parse_args(argv)
    requests = args.requests or (24 if args.quick else 200)
    concurrency = args.concurrency or (4 if args.quick else 8)
    limit = args.time_limit or (8.0 if args.quick else 60.0)
    streams = 3 if args.quick else 10

    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="serve-load-") as root:
        t0 = time.perf_counter()
        base = args.export or build_export(root)
        version = max(int(v) for v in os.listdir(base) if v.isdigit())
        print(f"# export {base}/{version} ready in {time.perf_counter() - t0:.1f}s; "
              f"{requests} requests, concurrency {concurrency}, <= {limit:.0f}s per phase", flush=True)

        loaded = tf.saved_model.load(os.path.join(base, str(version)))
        fn = loaded.signatures["serving_default"]
        fn(prompt=tf.constant(PROMPTS[:1]))  # warm
        rows = {}
        rows["in-process (1 thread)"] = load(
            lambda i: fn(prompt=tf.constant([PROMPTS[i % 4]]))["text"].numpy(), requests, 1, limit)

        body = lambda i: {"instances": [PROMPTS[i % 4]]}  # noqa: E731
        server = serve(base)
        try:
            post(server.rest_port, "/v1/models/lm:predict", body(0))
            rows["REST"] = load(lambda i: post(server.rest_port, "/v1/models/lm:predict", body(i)),
                                requests, concurrency, limit)
            # streaming: time to first token vs the whole non-streamed answer
            ttft, full_stream, full_plain = [], [], []
            for i in range(streams):
                conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=120)
                t = time.perf_counter()
                conn.request("POST", "/v1/models/lm:generate_stream", body=json.dumps({"prompt": PROMPTS[i % 4]}))
                reply = conn.getresponse()
                first = None
                while True:
                    line = reply.readline()
                    if not line:
                        break
                    if first is None and line.startswith(b"data: "):
                        first = time.perf_counter() - t
                full_stream.append(time.perf_counter() - t)
                ttft.append(first)
                conn.close()
                t = time.perf_counter()
                post(server.rest_port, "/v1/models/lm:predict", body(i))
                full_plain.append(time.perf_counter() - t)
        finally:
            server.stop()

        params = os.path.join(root, "batching.txt")
        with open(params, "w") as f:
            f.write("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000 }\n"
                    "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n")
        server = serve(base, params)
        try:
            post(server.rest_port, "/v1/models/lm:predict", body(0))
            calls0 = server.extras.scheduler.model_calls
            rows["REST + batching"] = load(lambda i: post(server.rest_port, "/v1/models/lm:predict", body(i)),
                                           requests, concurrency, limit)
            batch_calls = server.extras.scheduler.model_calls - calls0
        finally:
            server.stop()

    base_p50 = percentile(rows["in-process (1 thread)"][0], 50)
    base_tput = len(rows["in-process (1 thread)"][0]) / rows["in-process (1 thread)"][2]
    print(f"\n{'mode':<24}{'ok':>5}{'err':>5}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'p50 x':>8}{'req/s x':>9}")
    for name, (lat, errs, wall) in rows.items():
        tput = len(lat) / wall if wall else 0.0
        p50 = percentile(lat, 50)
        print(f"{name:<24}{len(lat):>5}{len(errs):>5}{p50 * 1e3:>9.1f}{percentile(lat, 99) * 1e3:>9.1f}"
              f"{tput:>8.1f}{p50 / base_p50:>8.2f}{tput / base_tput:>9.2f}")
    n_batched = len(rows["REST + batching"][0])
    print(f"\nbatching: {n_batched} requests in {batch_calls} model calls "
          f"(mean batch {n_batched / max(batch_calls, 1):.2f})")
    print(f"streaming ({streams} prompts, 16 tokens): time to first token p50 "
          f"{statistics.median(ttft) * 1e3:.1f} ms; whole stream {statistics.median(full_stream) * 1e3:.1f} ms; "
          f"non-streamed answer {statistics.median(full_plain) * 1e3:.1f} ms; "
          f"TTFT / non-streamed = {statistics.median(ttft) / statistics.median(full_plain):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
