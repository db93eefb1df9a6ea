"""notebooks/quickstart.ipynb runs from top to bottom."""

import os

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def test_quickstart_notebook_executes(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    # "python3" is ipykernel's native kernel: jupyter_client runs it with this
    # interpreter (sys.executable), so no kernel spec has to be installed.
    notebook = nbformat.read(os.path.join(REPO, "notebooks", "quickstart.ipynb"), as_version=4)
    client = NotebookClient(
        notebook, timeout=300, startup_timeout=120, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "accuracy" in text and "relevance" in text
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 3
    assert (tmp_path / "quickstart-output" / "export" / "mre" / "1" / "saved_model.pb").exists()
