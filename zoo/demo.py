"""The main job, end to end on tinyshakespeare: ``python -m zoo.demo`` (or ``make demo``).

1. train a character-level ``transformer_lm`` (small preset) for about a minute on a CPU,
2. evaluate it on the validation split (loss, perplexity, bits per character),
3. generate a continuation,
4. export a TF Serving SavedModel (raw text in, text out) and call it,
5. serve it with ``zoo serve`` and answer one REST request, then stop the server.

The corpus comes from ``ZOO_DATA_DIR`` when set, otherwise it is downloaded once (sha256-checked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoo.errors import ZooError  # noqa: E402


def _serve_and_ask(base: str, name: str, prompt: str) -> str:
    """Run ``zoo serve`` on ``base``, POST one ``:predict`` request, stop the server."""
    import signal
    import subprocess
    import urllib.request

    command = [sys.executable, "-m", "zoo", "serve", f"--model_name={name}",
               f"--model_base_path={base}", "--rest_api_port=0", "--port=0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            line = server.stdout.readline()
            if not line:
                raise ZooError("zoo serve exited before it was ready")
            if line.startswith("REST API at "):
                url = line.split("REST API at ", 1)[1].strip()
        if url is None:
            raise ZooError("zoo serve did not become ready within 120 s")
        print(f"   zoo serve is up at {url}")
        body = json.dumps({"inputs": {"prompt": [prompt]}})
        request = urllib.request.Request(
            f"{url}/v1/models/{name}:predict",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        print(f"   POST /v1/models/{name}:predict {body}")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["outputs"][0]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--model", default="transformer_lm")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--prompt", default="ROMEO:")
    args = parser.parse_args(argv)

    import zoo

    try:
        started = time.time()
        print(f"== 1. train {args.model} on tinyshakespeare ({args.steps} steps) -> {args.out}")
        run = zoo.train(
            args.model,
            "dataset:tinyshakespeare",
            args.out,
            preset="small",
            tokenizer="char",
            max_steps=args.steps,
            batch_size=12,
            learning_rate=1e-3,
            checkpoint_every=200,
            verbose=2,
        )
        print(f"   trained in {time.time() - started:.0f} s")
        print("== 2. evaluate on the validation split")
        print(json.dumps(run.evaluate(), indent=2))
        print(f"== 3. generate from {args.prompt!r}")
        text = run.generate(args.prompt, max_new_tokens=200, strategy="sample", top_k=10, seed=0)
        print(args.prompt + text)

        import tensorflow as tf

        import export

        base = os.path.join(args.out, "export")
        print(f"== 4. export a TF Serving SavedModel under {base}")
        path = export.saved_model(run, base, max_new_tokens=48)
        print(f"   wrote {path}")
        served = tf.saved_model.load(path).signatures["serving_default"]
        reply = served(prompt=tf.constant([args.prompt]))["text"][0].numpy().decode("utf-8")
        print(f"   serving_default({args.prompt!r}) -> {reply[:60]!r}...")

        print("== 5. start `zoo serve`, send one REST request (TF Serving's API), stop the server")
        text = _serve_and_ask(os.path.abspath(base), "shakespeare", args.prompt)
        print(args.prompt + text)
    except ZooError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
