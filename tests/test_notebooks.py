"""Every notebook runs top to bottom in quick mode, and is committed with the outputs of a
quick run (written by ``python -m notebooks.refresh``), free of this machine's paths."""

import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: An absolute path of the machine that ran the notebook.
MACHINE_PATH = re.compile(r"(/(?:tmp|home|root|work|Users|private|var/folders)/|[A-Z]:\\)")


def test_the_tutorials_are_all_there():
    names = [path.stem for path in NOTEBOOKS]
    assert names[:6] == ["01_quickstart", "02_structured_2by4", "03_granularities",
                         "04_export_and_quantize", "05_workflows_and_sensitivity", "06_keras3"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_the_outputs_of_a_quick_run(path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "QUICK = True" in code[0].source, "the first code cell holds the parameters"
    assert "DATA_DIR = None" in code[0].source, "refresh puts the parameter back"
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name} was not run top to bottom in one go: python -m notebooks.refresh")
    outputs = [out for cell in code for out in cell.outputs]
    assert outputs and not [out for out in outputs if out.output_type == "error"]
    texts = [out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
             for out in outputs]
    assert not [t for t in texts if MACHINE_PATH.search(t)], "a path of the machine"
    assert not [t for t in texts if "INFO:tensorflow" in t or "I0000 " in t], "log noise"


def test_refresh_refuses_an_unknown_notebook():
    from notebooks import refresh

    with pytest.raises(SystemExit, match=r"no notebook \['07_nothing'\]"):
        refresh.notebooks(["07_nothing"])


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
