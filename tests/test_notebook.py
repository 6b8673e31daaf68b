"""notebooks/colab.ipynb runs top to bottom: on this checkout (its install cell skipped) for a few steps."""

import nbformat
from nbclient import NotebookClient

from conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "colab.ipynb"


def test_colab_notebook_trains_plots_and_samples(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "commit it with outputs cleared"
    monkeypatch.setenv("MMJAX_CHECKOUT", str(ROOT))  # the kernel inherits the environment
    monkeypatch.setenv("MMJAX_MAX_STEPS", "20")
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in code for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "CpuDevice(id=0)" in text
    assert "step 20 | test_loss" in text  # trained the steps asked for, then evaluated
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 2  # the loss curves, the sweep's
    assert "winner: learning_rate=" in text  # the sweep's table
    assert "20 names: " in text and len(text.split("20 names: ")[1].split("\n")[0].split(", ")) == 20
