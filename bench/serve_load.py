"""Load test of ``zoo serve`` on loopback: latency, throughput and server memory, with and without
``--enable_batching``, plus the cost of refusing an oversized request.

    python bench/serve_load.py --quick               # trains a tiny transformer; about 2 minutes on 2 cores
    python bench/serve_load.py --export BASE_DIR     # an existing zoo LM export (version dirs under it)

Two servers run as separate processes (``python -m serving``, so their memory is their own):
one plain, one with ``--enable_batching``.  ``--clients`` threads each send ``generate`` requests
(REST predict, one prompt, ``--new-tokens`` greedy tokens, keep-alive connections) back to back
for ``--seconds``; the two servers take turns in ``--rounds`` rounds (the first one rotating,
``bench/_rounds.py``), so a change in the machine's load hits both.  Per server it prints the
medians over rounds, with min-max, of p50 and p99 latency and requests/s, and its resident
memory (VmRSS of the server process): idle (after a warm-up), peak under load (sampled every
20 ms) and their ratio; the target is a peak within 1.2x of idle.  Then the rejected-request
cost: the time to the 400 for a request of ``--oversized`` prompts (refused by
``--max_batch_rows`` before any model work) beside the time of a one-prompt request, and the
server's memory after those refusals.  ``--unbounded N`` adds the request the limits exist for:
N prompts to a third server with the limits off and a 1 s ``--rest_api_timeout_in_ms``, to see
the 504, the memory it took, and that the cancelled call stopped (the server's CPU after it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._rounds import process_cpu_seconds, run_rounds  # noqa: E402

PROMPTS = ["ROMEO:", "First Citizen:", "To be, or not", "JULIET:\nO"]
BATCHING = ("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000 }\n"
            "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; NaN when empty."""
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def generate_body(prompts: list[str], new_tokens: int) -> bytes:
    """A REST predict request for the export's ``generate`` signature (greedy)."""
    n = len(prompts)
    return json.dumps({"signature_name": "generate", "inputs": {
        "prompt": prompts, "max_new_tokens": [new_tokens] * n, "temperature": [0.0] * n, "top_k": [0] * n,
        "top_p": [1.0] * n, "seed": [0] * n}}).encode("utf-8")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """``python -m serving`` on free loopback ports, in its own process."""

    def __init__(self, base: str, root: str, batching: bool, flags: tuple[str, ...] = (), name: str = ""):
        self.name = name or ("batching" if batching else "no batching")
        cmd = [sys.executable, "-m", "serving", "--model_name=lm", f"--model_base_path={base}", "--port=-1",
               "--rest_api_port=-1", "--file_system_poll_wait_seconds=0", *flags]
        if batching:
            params = os.path.join(root, "batching.txt")
            with open(params, "w") as f:
                f.write(BATCHING)
            cmd += ["--enable_batching=true", f"--batching_parameters_file={params}"]
        self._log = open(os.path.join(root, f"server-{self.name.replace(' ', '-')}.log"), "w")  # noqa: SIM115
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=repo)
        self.port = None
        deadline = time.monotonic() + 300
        while self.port is None:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.name} server did not start (log: {self._log.name})")
            if line.startswith("REST API at "):
                self.port = int(line.strip().rsplit(":", 1)[1])

    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", "/v1/models/lm:predict", body=body, headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    return reply.status, reply.read()


def timed_post(port: int, body: bytes, want: int) -> float:
    """Seconds for one request on a fresh connection; its status must be ``want``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        started = time.perf_counter()
        status, data = post(conn, body)
        took = time.perf_counter() - started
    finally:
        conn.close()
    if status != want:
        raise RuntimeError(f"expected {want}, got {status}: {data[:200]!r}")
    return took


def load(server: Server, clients: int, seconds: float, new_tokens: int) -> dict:
    """``clients`` threads sending generate requests for ``seconds``; latencies, errors, RSS peak."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = threading.Event()
    peak = [server.rss()]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        i = k
        while not stop.is_set():
            body = generate_body([PROMPTS[i % len(PROMPTS)]], new_tokens)
            i += clients
            started = time.perf_counter()
            try:
                status, _ = post(conn, body)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                status = 0
            took = time.perf_counter() - started
            with lock:
                if status == 200:
                    latencies.append(took)
                else:
                    errors[0] += 1
        conn.close()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], server.rss())

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    sampler = threading.Thread(target=sample)
    started = time.perf_counter()
    for t in (*threads, sampler):
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in (*threads, sampler):
        t.join()
    wall = time.perf_counter() - started
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "rps": len(latencies) / wall,
            "ok": len(latencies), "errors": errors[0], "peak": peak[0]}


def unbounded(base: str, root: str, prompts: int, new_tokens: int) -> None:
    """The request the limits exist for, with them off: ``prompts`` prompts against a 1 s REST
    timeout; the time to the 504, the server's memory, and its CPU once the call was cancelled."""
    server = Server(base, root, False, ("--max_batch_rows=0", "--max_tokens_per_request=0",
                                        "--rest_api_timeout_in_ms=1000"), name="unbounded")
    try:
        timed_post(server.port, generate_body(["ROMEO:"], new_tokens), 200)
        time.sleep(1.0)
        idle, peak, stop = server.rss(), [0.0], threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak[0] = max(peak[0], server.rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        took = timed_post(server.port, generate_body(["To be, or not"] * prompts, new_tokens), 504)
        answered = time.perf_counter()
        busy = 0.0  # seconds until the server's own CPU use drops under 0.1 cores (the cancelled call ended)
        while busy < 60:
            cpu, started = process_cpu_seconds(server.proc.pid), time.perf_counter()
            time.sleep(0.25)
            if (process_cpu_seconds(server.proc.pid) - cpu) / (time.perf_counter() - started) < 0.1:
                break
            busy = time.perf_counter() - answered
        after = timed_post(server.port, generate_body(["ROMEO:"], new_tokens), 200)
        stop.set()
        print(f"limits off, --rest_api_timeout_in_ms=1000: a {prompts}-prompt request got its 504 after {took:.2f} s; "
              f"the server's CPU was idle again {busy:.2f} s later (the step in flight finishes, then the "
              f"cancelled call ends); a one-prompt request then {after * 1e3:.0f} ms; RSS idle {idle:.0f} MiB, "
              f"peak {peak[0]:.0f} MiB, after {server.rss():.0f} MiB")
        server.stop()
        server = Server(base, root, False, ("--max_batch_rows=0", "--max_tokens_per_request=0",
                                            "--rest_api_timeout_in_ms=0"), name="unbounded-no-timeout")
        whole = timed_post(server.port, generate_body(["To be, or not"] * prompts, new_tokens), 200)
        print(f"the same request without a timeout: 200 after {whole:.2f} s, RSS then {server.rss():.0f} MiB")
    finally:
        server.stop()


def build_export(root: str) -> str:
    """Train a tiny transformer_lm on tinyshakespeare (``ZOO_DATA_DIR``) for 6 steps and export it."""
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


def spread(values: list[float], fmt: str) -> str:
    """``median [min-max]`` of per-round values."""
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 rounds of 6 s, 4 clients (about 2 minutes on 2 cores)")
    p.add_argument("--export", help="model base path (default: train and export a tiny transformer)")
    p.add_argument("--clients", type=int, default=None, help="concurrent clients (default 8; --quick 4)")
    p.add_argument("--seconds", type=float, default=None, help="load time per server and round (default 15; --quick 6)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5; --quick 3)")
    p.add_argument("--new-tokens", type=int, default=16, help="max_new_tokens of each request (<= the export's)")
    p.add_argument("--oversized", type=int, default=5000, help="prompts in the refused request")
    p.add_argument("--unbounded", type=int, default=0, metavar="N",
                   help="also send N prompts to a server with the limits off and a 1 s REST timeout (0: skip)")
    args = p.parse_args(argv)
    clients = args.clients or (4 if args.quick else 8)
    seconds = args.seconds or (6.0 if args.quick else 15.0)
    rounds = args.rounds or (3 if args.quick else 5)

    with tempfile.TemporaryDirectory(prefix="serve-load-") as root:
        t0 = time.perf_counter()
        base = args.export or build_export(root)
        print(f"# export {base} ready in {time.perf_counter() - t0:.1f}s; {clients} clients, {seconds:.0f} s per "
              f"server and round, {rounds} rounds, {args.new_tokens} new tokens per request", flush=True)
        servers = {}
        try:
            for batching in (False, True):
                server = Server(base, root, batching)
                servers[server.name] = server
            idle = {}
            for name, server in servers.items():
                for i in range(3):  # warm-up: tracing, first allocations
                    timed_post(server.port, generate_body([PROMPTS[i]], args.new_tokens), 200)
                time.sleep(1.0)
                idle[name] = server.rss()
            results: dict[str, list[dict]] = {name: [] for name in servers}

            def round_of(name: str):
                def one_round() -> float:
                    result = load(servers[name], clients, seconds, args.new_tokens)
                    results[name].append(result)
                    return 1.0 / result["rps"] if result["rps"] else float("inf")
                return one_round

            measured = run_rounds({name: round_of(name) for name in servers}, rounds,
                                  progress=lambda line: print("#", line, flush=True),
                                  cpu_of=lambda name: process_cpu_seconds(servers[name].proc.pid)
                                  + time.process_time())
            print(f"\n{'server':<13}{'ok':>6}{'err':>5}{'p50 ms':>20}{'p99 ms':>20}{'req/s':>20}"
                  f"{'RSS idle MiB':>14}{'peak MiB':>20}{'peak/idle':>20}")
            for name, rows in results.items():
                ratio = [r["peak"] / idle[name] for r in rows]
                print(f"{name:<13}{sum(r['ok'] for r in rows):>6}{sum(r['errors'] for r in rows):>5}"
                      f"{spread([r['p50'] * 1e3 for r in rows], '.1f'):>20}"
                      f"{spread([r['p99'] * 1e3 for r in rows], '.1f'):>20}{spread([r['rps'] for r in rows], '.1f'):>20}"
                      f"{idle[name]:>14.0f}{spread([r['peak'] for r in rows], '.0f'):>20}{spread(ratio, '.3f'):>20}")
            per_round = [results["batching"][r]["rps"] / results["no batching"][r]["rps"] for r in range(rounds)]
            print(f"batching / no batching req/s, per round: {spread(per_round, '.2f')}; other processes kept "
                  f"{statistics.median([v for vs in measured.other_load.values() for v in vs]):.2f} cores busy "
                  "(median over rounds)")

            oversized = generate_body(["To be, or not"] * args.oversized, args.new_tokens)
            for name, server in servers.items():
                refused = [timed_post(server.port, oversized, 400) for _ in range(5)]
                normal = [timed_post(server.port, generate_body(["ROMEO:"], args.new_tokens), 200) for _ in range(5)]
                print(f"{name}: {args.oversized}-prompt request ({len(oversized) / 1e3:.0f} kB) refused in "
                      f"{statistics.median(refused) * 1e3:.1f} ms (median of 5) vs one-prompt request "
                      f"{statistics.median(normal) * 1e3:.1f} ms; RSS after the refusals {server.rss():.0f} MiB "
                      f"(idle {idle[name]:.0f})")
        finally:
            for server in servers.values():
                server.stop()
        if args.unbounded:
            unbounded(base, root, args.unbounded, args.new_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
