"""Every notebook runs top to bottom in quick mode, and is committed without outputs."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_tutorials_are_all_there():
    names = [path.stem for path in NOTEBOOKS]
    assert names == ["01_quickstart", "02_structured_2by4", "03_granularities",
                     "04_export_and_quantize", "05_workflows_and_sensitivity"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "QUICK = True" in code[0].source, "the first code cell holds the parameters"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom_in_quick_mode(path, mnist_dir, tmp_path):
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    parameters = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "DATA_DIR = None" in parameters.source
    parameters.source = parameters.source.replace("DATA_DIR = None", f"DATA_DIR = {str(mnist_dir)!r}")
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
