"""Run an exported LiteRT flatbuffer: the interpreter with tensorflow-text's kernels, and
``LiteRTModel``, a small wrapper around its signatures (see ``export/tflite.py``).

    lm = LiteRTModel("shakespeare.tflite")
    lm.generate("ROMEO:")                 # the greedy continuation, like run.generate(...)
    lm.score(["To be, or not to be"])     # (log_likelihood, num_tokens)
"""

from __future__ import annotations

import math
import os

import numpy as np

from zoo.extras import require
from zoo.quiet import native_stderr

__all__ = ["LiteRTModel", "load_interpreter"]


def load_interpreter(model, num_threads: int | None = None):
    """A LiteRT interpreter (``ai_edge_litert``) with the tensorflow-text custom ops registered.

    ``model``: a path or the flatbuffer bytes.
    """
    litert = require("ai_edge_litert.interpreter", extra="litert", package="ai-edge-litert",
                     purpose="running a LiteRT model")
    from tensorflow_text import tflite_registrar

    source = (
        {"model_content": bytes(model)}
        if isinstance(model, (bytes, bytearray))
        else {"model_path": os.fspath(model)}
    )
    with native_stderr():  # LiteRT announces its CPU delegate on descriptor 2
        return litert.InterpreterWithCustomOps(
            custom_op_registerers=list(tflite_registrar.SELECT_TFTEXT_OPS),
            num_threads=num_threads,
            **source,
        )


def _strings(texts) -> np.ndarray:
    return np.array([t.encode("utf-8") for t in texts], dtype=object)


class LiteRTModel:
    """Convenience wrapper around the signatures of an exported flatbuffer."""

    def __init__(self, model, num_threads: int | None = None):
        self.interpreter = load_interpreter(model, num_threads=num_threads)
        self._runners: dict = {}

    def runner(self, name: str):
        """The interpreter's runner of signature ``name`` (made once)."""
        if name not in self._runners:
            self._runners[name] = self.interpreter.get_signature_runner(name)
        return self._runners[name]

    @staticmethod
    def _texts(values) -> list[str]:
        return [v.decode("utf-8", errors="replace") for v in values]

    def generate(self, prompts):
        """Greedy continuation(s): a str for a str, a list for a list."""
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        out = self._texts(self.runner("generate")(prompt=_strings(texts))["text"])
        return out[0] if single else out

    def sample(self, prompts, *, temperature=1.0, top_k=0, top_p=1.0, seed=0):
        """Sampled continuation(s); ``seed`` is the per-row seed (an int for every row or a list)."""
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        n = len(texts)
        seeds = np.broadcast_to(np.asarray(seed, np.int64), [n]).copy()
        out = self.runner("sample")(
            prompt=_strings(texts),
            temperature=np.full([n], temperature, np.float32),
            top_k=np.full([n], top_k, np.int32),
            top_p=np.full([n], top_p, np.float32),
            seed=seeds,
        )
        out = self._texts(out["text"])
        return out[0] if single else out

    def tokenize(self, texts) -> list[list[int]]:
        """The zoo tokenizer's ids of every text (no ``<bos>``/``<eos>``)."""
        out = self.runner("tokenize")(text=_strings(texts))
        return [row[:n].tolist() for row, n in zip(out["token_ids"], out["num_tokens"], strict=True)]

    def score(self, texts, batch_size: int = 64):
        """``(log_likelihood (N,) float64, num_tokens (N,) int64)`` for a list of texts."""
        lls, counts = [], []
        for i in range(0, len(texts), batch_size):
            out = self.runner("score")(text=_strings(texts[i : i + batch_size]))
            lls.append(out["log_likelihood"].astype(np.float64))
            counts.append(out["num_tokens"].astype(np.int64))
        if not lls:
            return np.zeros([0]), np.zeros([0], np.int64)
        return np.concatenate(lls), np.concatenate(counts)

    def perplexity(self, texts, batch_size: int = 64) -> float:
        """Corpus-level perplexity of ``texts``: ``exp(-sum log_likelihood / sum num_tokens)``."""
        ll, n = self.score(list(texts), batch_size=batch_size)
        return math.exp(-float(ll.sum()) / max(int(n.sum()), 1))
