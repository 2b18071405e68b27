"""Remove TensorFlow's C++ start-up log lines from the stream outputs of executed notebooks.

    python notebooks/strip_tf_logs.py notebooks/*.ipynb

``import tensorflow`` writes lines such as ``I0000 ... cudart_stub.cc:31] Could not find cuda
drivers`` straight to file descriptor 2, before ``TF_CPP_MIN_LOG_LEVEL`` can silence them, and a
kernel records them as cell output. They say nothing about the notebook, so the committed copies
go without them, and without TensorFlow's retracing warning, which notebook 03 triggers on purpose
(one decoding graph per length it times). Everything else (and every other output) is kept as it is.
"""

from __future__ import annotations

import re
import sys

import nbformat

NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog"
    r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+\.cc:\d+\]"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate"
    r"|normalizer\.cc\(\d+\) LOG\(INFO\)"
    r"|WARNING:tensorflow:\d+ out of the last \d+ calls to .* triggered tf.function retracing)"
)


def strip(path: str) -> int:
    nb = nbformat.read(path, as_version=4)
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream":
                lines = out.text.splitlines(keepends=True)
                kept = [line for line in lines if not NOISE.match(line)]
                removed += len(lines) - len(kept)
                if not "".join(kept).strip():
                    continue
                out.text = "".join(kept)
            outputs.append(out)
        cell.outputs = outputs
    nbformat.write(nb, path)
    return removed


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {strip(name)} log lines removed")
