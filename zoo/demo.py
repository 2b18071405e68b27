"""The main job, end to end on tinyshakespeare: ``python -m zoo.demo`` (or ``make demo``).

1. train a character-level ``transformer_lm`` (small preset) for about a minute on a CPU,
2. evaluate it on the validation split (loss, perplexity, bits per character),
3. generate a continuation,
4. export a TF Serving SavedModel (raw text in, text out) and call it.

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
        path = export.saved_model(run, base, max_new_tokens=100)
        print(f"   wrote {path}")
        served = tf.saved_model.load(path).signatures["serving_default"]
        reply = served(prompt=tf.constant([args.prompt]))["text"][0].numpy().decode("utf-8")
        print(f"   serving_default({args.prompt!r}) -> {reply[:60]!r}...")
    except ZooError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
