"""The main job, end to end on tinyshakespeare: ``python -m zoo.demo`` (or ``make demo``).

1. train a character-level ``transformer_lm`` (small preset) for about a minute on a CPU,
2. evaluate it on the validation split (loss, perplexity, bits per character),
3. generate a continuation,
4. export a TF Serving SavedModel (raw text in, text out) and call it,
5. serve it with ``zoo serve`` and answer one REST request, then stop the server.

Every generation samples (temperature 0.8, top-k 40, a fixed seed: the same text each time),
so the answers read like the corpus rather than greedy decoding's loops. Progress goes to
stderr (``zoo.progress``); at the end the demo says where the run, the export and the
TensorBoard logs are. The corpus comes from ``ZOO_DATA_DIR`` when set, otherwise it is
downloaded once (sha256-checked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from zoo import quiet
from zoo.errors import ZooError

# How every generation of the demo samples: reads like the corpus, the same text on each run.
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 1.0}
SEED = 1234
SERVED_TOKENS = 48  # the export's max_new_tokens: below the small preset's context of 64


def _generate_request(prompt: str) -> dict:
    """The ``generate`` signature's inputs for one prompt, sampled with ``SAMPLING`` and
    ``SEED`` (columnar, one value per prompt)."""
    return {"prompt": [prompt], "max_new_tokens": [SERVED_TOKENS], "seed": [SEED],
            **{name: [value] for name, value in SAMPLING.items()}}


def _serve_and_ask(base: str, name: str, prompt: str) -> str:
    """Run ``zoo serve`` on ``base``, POST one ``:predict`` request to the ``generate``
    signature (sampled, seeded), stop the server."""
    import signal
    import subprocess
    import urllib.request

    command = [sys.executable, "-m", "zoo", "serve", f"--model_name={name}",
               f"--model_base_path={base}", "--rest_api_port=-1", "--port=0"]  # REST on a free port, no gRPC
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
        body = json.dumps({"signature_name": "generate", "inputs": _generate_request(prompt)})
        request = urllib.request.Request(
            f"{url}/v1/models/{name}:predict",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        print(f"   POST /v1/models/{name}:predict {body}")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["outputs"]["text"][0]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status (2 with a one-line error on a ``ZooError``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--model", default="transformer_lm")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--verbose", action="store_true",
                        help="let TensorFlow's native log lines through (as ZOO_LOG_LEVEL=info)")
    args = parser.parse_args(argv)
    try:
        level = quiet.level_from(args.verbose)
    except ValueError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    quiet.configure(level)  # as the zoo command: no native log noise, before TensorFlow loads

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
            verbose=1,
        )
        print(f"   trained in {time.time() - started:.0f} s")
        print("== 2. evaluate on the validation split")
        print(json.dumps(run.evaluate(verbose=1), indent=2))
        print(f"== 3. generate from {args.prompt!r} (sampled: temperature "
              f"{SAMPLING['temperature']}, top-k {SAMPLING['top_k']}, seed {SEED})")
        text = run.generate(args.prompt, max_new_tokens=200, strategy="sample", seed=SEED,
                            **SAMPLING)
        print(args.prompt + text)

        import tensorflow as tf

        import export

        base = os.path.join(args.out, "export")
        print(f"== 4. export a TF Serving SavedModel under {base}")
        path = export.saved_model(run, base, max_new_tokens=SERVED_TOKENS, verbose=1)
        print(f"   wrote {path}")
        served = tf.saved_model.load(path).signatures["generate"]
        specs = served.structured_input_signature[1]  # {name: TensorSpec}
        inputs = {k: tf.constant(v, specs[k].dtype)
                  for k, v in _generate_request(args.prompt).items()}
        reply = served(**inputs)["text"][0].numpy().decode("utf-8")
        print(f"   generate({args.prompt!r}, seed={SEED}) -> {reply[:60]!r}...")

        print("== 5. start `zoo serve`, send one REST request (TF Serving's API), stop the server")
        text = _serve_and_ask(os.path.abspath(base), "shakespeare", args.prompt)
        print(args.prompt + text)
        _where(run.path, path)
    except ZooError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    return 0


def _where(run_dir: str, export_dir: str) -> None:
    """Print where the demo left its results, and how to look at the training curves."""
    from zoo.files import LOG_DIR

    logs = os.path.join(run_dir, LOG_DIR)
    print("== where things are")
    print(f"   run:         {run_dir}   (config.json, model.keras, metrics.json, checkpoints/)")
    print(f"   export:      {export_dir}   (zoo serve --model_base_path="
          f"{os.path.dirname(export_dir)})")
    print(f"   TensorBoard: {logs}   (loss and validation by step)")
    print(f"   tensorboard --logdir {logs}")


if __name__ == "__main__":
    sys.exit(main())
