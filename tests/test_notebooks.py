"""The tutorial notebooks: committed with outputs, and each one runs top to bottom in fast mode.

Fast mode (``ZOO_FAST=1``) trains the tiny presets for a few steps; the notebooks are executed
in memory with nbclient (the committed files, with the outputs of a full run, are never
rewritten) and every cell error fails the test. Each notebook writes its runs into a temporary
directory, which is checked too: executing one leaves nothing new in ``notebooks/``.
"""

from __future__ import annotations

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
EXPECTED = [
    "01_language_models_and_rnns.ipynb",
    "02_attention_and_transformers.ipynb",
    "03_sampling_strategies.ipynb",
    "04_export_serve_and_mobile.ipynb",
    "05_masked_lm_translation_classification.ipynb",
    "06_summarization_qa_search.ipynb",
    "07_embeddings_and_convolutions.ipynb",
]
CELL_TIMEOUT_S = 600

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the 'notebooks' extra")


def _read(name: str):
    return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


def _code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_every_notebook_is_listed():
    present = sorted(f for f in os.listdir(NOTEBOOK_DIR) if f.endswith(".ipynb"))
    assert present == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_has_outputs(name):
    """Readable without running: outputs of a real run, at least one plot, no errors, an assert."""
    nb = _read(name)
    cells = _code_cells(nb)
    assert cells, f"{name} has no code cells"
    outputs = [out for cell in cells for out in cell.get("outputs", [])]
    assert all(cell.get("execution_count") for cell in cells), f"{name}: a code cell was never run"
    assert not [out for out in outputs if out.output_type == "error"], f"{name} was saved with an error"
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert images, f"{name} has no plot in its outputs"
    asserts = [cell for cell in cells
               if any(line.lstrip().startswith(("assert ", "np.testing.assert_"))
                      for line in cell.source.splitlines())]
    assert asserts, f"{name} has no cell that checks a number it computed"
    fast_markers = [cell for cell in cells if "ZOO_FAST" in cell.source]
    assert fast_markers, f"{name} does not read ZOO_FAST"


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_in_fast_mode(name, data_dir, monkeypatch):
    """Execute a copy with ZOO_FAST=1; any cell error (a failed assert included) fails."""
    nbclient = pytest.importorskip("nbclient", reason="notebook tests need the 'notebooks' extra")
    pytest.importorskip("ipykernel", reason="notebook tests need the 'notebooks' extra")
    monkeypatch.setenv("ZOO_FAST", "1")
    monkeypatch.setenv("ZOO_DATA_DIR", data_dir)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    before = sorted(os.listdir(NOTEBOOK_DIR))
    nb = _read(name)  # an in-memory copy: the committed file is never written
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": NOTEBOOK_DIR}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [out for cell in _code_cells(nb) for out in cell.get("outputs", [])]
    assert any("image/png" in out.get("data", {}) for out in outputs), f"{name} drew no plot"
    assert sorted(os.listdir(NOTEBOOK_DIR)) == before, f"{name} left files in notebooks/"
