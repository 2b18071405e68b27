"""Optional dependencies: the package extras that bring them, and one clear error without them.

The core (``import zoo``, training, evaluation of language models, SavedModel export, serving)
needs only ``install_requires``. A few features need a package from an extra of ``setup.cfg``:

    eval       rouge-score      ROUGE (zoo.text_metrics.rouge, zoo eval of a translation run)
    litert     ai-edge-litert   running LiteRT flatbuffers in Python (export.tflite.LiteRTModel)
    reference  torch, transformers   the GPT-2 golden files' live re-check (tests only)

:func:`require` imports such a module, or raises ``ZooError`` naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from zoo.errors import ZooError

__all__ = ["install_hint", "require"]

DISTRIBUTION = "keras-lm-zoo"


def install_hint(extra: str) -> str:
    """How to install ``extra``: from the index, or into a checkout (with its constraints)."""
    return (f"pip install '{DISTRIBUTION}[{extra}]' (in a checkout: "
            f"pip install -c constraints.txt -e '.[{extra}]')")


def require(module: str, *, extra: str, package: str, purpose: str) -> ModuleType:
    """``import module``, or ``ZooError``: "<purpose> needs <package> (the <extra> extra): ..."."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ZooError(
            f"{purpose} needs the {package} package (the '{extra}' extra): {install_hint(extra)}"
        ) from err
