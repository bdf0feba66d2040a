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
    text = "\n".join(out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
                     for out in outputs)
    check = CHECKS.get(path.stem)
    if check is not None:
        check(text, tmp_path)


def report_rows(text):
    """The rows of the sparsity report printed in ``text``, split on spaces, by layer."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("layer  type    weight"))
    rows = {}
    for line in lines[start + 2:]:
        if line.startswith("total:"):
            return rows
        rows[line.split()[0]] = line.split()
    raise AssertionError("the sparsity report has no total line")


def check_seed_report(text):
    """conv1 unstructured at 0.5, conv2 and fc1 2:4, the head left dense, all checked ok."""
    rows = report_rows(text)
    assert list(rows) == ["conv1", "conv2", "fc1", "head"]
    assert rows["conv1"][5:] == ["0.500", "unstructured", "0.500", "ok"]
    assert rows["conv2"][5:] == rows["fc1"][5:] == ["0.500", "2:4", "0.500", "2:4", "ok"]
    assert rows["head"][5:] == ["0.000", "skip"]


def printed_accuracy(text, pattern):
    """The accuracies that ``pattern``'s groups match in ``text``, as floats."""
    found = re.search(pattern, text)
    assert found, pattern
    return [float(value) for value in found.groups()]


def check_02_structured_2by4(text, folder):
    assert "Layer 'conv1' cannot take 2:4 sparsity: 1 input channel < group size 4" in text
    assert "LayerPlan(name='conv1', type='Conv2D', params=832, method='unstructured'" in text
    assert "reason='2:4 impossible (1 input channel < group size 4)'" in text
    check_seed_report(text)
    assert "fc1 is 2:4: True" in text
    dense, pruned = printed_accuracy(text, r"test accuracy: dense (\S+) -> 2:4 pruned (\S+)")
    assert dense > 0.8 and pruned > 0.8  # 3,000 images, one epoch each (quick; unseeded:
    # dense 0.944 -> pruned 0.961 seen; 0.91-0.97 with 6,000), chance 0.1


def check_06_keras3(text, folder):
    import kprune

    assert "on the tensorflow backend" in text
    assert "the same table as for the tf_keras seed CNN: True" in text
    assert ("{'sparsity/conv1': [0.5], 'sparsity/conv2': [0.5], 'sparsity/fc1': [0.5], "
            "'sparsity': [0.5]}") in text
    check_seed_report(text)
    assert "input model unchanged: True" in text
    dense, pruned = printed_accuracy(text, r"test accuracy: dense (\S+) -> pruned (\S+)")
    assert dense > 0.85 and pruned > 0.85  # 3,000 images, one epoch each (quick): 0.944
    saved = kprune.load_model(folder / "final.keras", compile=False)
    assert type(saved).__module__.startswith("keras.")
    assert kprune.sparsity_report(saved, strict=True).ok
    for name in ("float", "sparse", "sparse-int8"):  # LiteRT: the Keras model's accuracy
        assert (folder / "keras3-tflite" / f"{name}.tflite").is_file(), name
        litert, = printed_accuracy(text, rf"\n{name} +[\d,]+ bytes +LiteRT accuracy (\S+)")
        assert litert == pytest.approx(pruned, abs=0.01), name


#: What a notebook must print or save, beyond running without error.
CHECKS = {"02_structured_2by4": check_02_structured_2by4, "06_keras3": check_06_keras3}
