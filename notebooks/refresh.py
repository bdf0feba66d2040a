"""Run every tutorial notebook in quick mode and save it with its outputs.

The notebooks are committed with the outputs of a quick run, so that a reader sees the
tables and plots without running anything. This is the one command that writes them:

    python -m notebooks.refresh --data ../shared/data/mnist     # all notebooks
    python -m notebooks.refresh 01_quickstart --data DIR          # one

Each notebook runs top to bottom in a temporary folder (what it writes stays there) with
``DATA_DIR`` set to ``--data``; the saved parameter cell keeps ``DATA_DIR = None``, and the
outputs have the data folder written as given and temporary folders replaced, so no path
of this machine is committed; TensorFlow's log lines and kprune's progress lines
(``KPRUNE_QUIET``) are left out. A notebook whose run fails is not rewritten.
"""

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARAMETER = "DATA_DIR = None"
#: TensorFlow's start-up and saving logs: noise to a reader, and they name
#: temporary folders of the machine that ran the notebook.
LOG_NOISE = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} |INFO:tensorflow:"
                       r"|To enable the following instructions|.*rebuild TensorFlow with"
                       r"|fully_quantize: |INFO: Created TensorFlow Lite)")
#: A folder the notebook made under the temporary directory (``tempfile.mkdtemp``).
TEMP_FOLDER = re.compile(re.escape(tempfile.gettempdir()) + r"/[^/\s]+")


def notebooks(names=()):
    """The tutorial notebooks (``NN_name.ipynb``), or those named, in order."""
    found = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return found
    by_stem = {path.stem: path for path in found}
    unknown = [name for name in names if Path(name).stem not in by_stem]
    if unknown:
        raise SystemExit(f"refresh: no notebook {unknown}; there are {sorted(by_stem)}")
    return [by_stem[Path(name).stem] for name in names]


def refresh(path, data_dir, *, timeout=900):
    """Execute the notebook at ``path`` with ``DATA_DIR = data_dir`` and save its outputs."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    parameters = next(cell for cell in notebook.cells if cell.cell_type == "code")
    if PARAMETER not in parameters.source:
        raise SystemExit(f"refresh: {path.name}'s first code cell has no `{PARAMETER}`")
    given = str(data_dir)
    absolute = str(Path(data_dir).resolve())
    original = parameters.source
    parameters.source = original.replace(PARAMETER, f"DATA_DIR = {absolute!r}")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # the kernel inherits these: fewer start-up
    os.environ["KPRUNE_QUIET"] = "1"  # logs, and no progress lines in the saved outputs
    with tempfile.TemporaryDirectory(prefix="kprune-notebook-") as work:
        client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": work}})
        client.execute()
        parameters.source = original
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = _cleaned(cell.outputs, {str(Path(work).resolve()): ".",
                                                       work: ".", absolute: given})
    nbformat.write(notebook, path)


def _cleaned(outputs, replacements):
    """The outputs without TensorFlow's log noise, machine paths rewritten."""
    kept = []
    for output in outputs:
        if output.get("output_type") == "stream":
            lines = output["text"].splitlines(keepends=True)
            output["text"] = "".join(line for line in lines if not LOG_NOISE.match(line))
            if not output["text"].strip():
                continue
        _replace_paths(output, replacements)
        kept.append(output)
    return kept


def _replace_paths(output, replacements):
    """Rewrite machine paths in a text output (stream text, or text/plain data)."""
    def clean(text):
        for old, new in replacements.items():
            text = text.replace(old, new)
        return TEMP_FOLDER.sub("<temporary folder>", text)

    if "text" in output:
        output["text"] = clean(output["text"])
    for key in ("text/plain", "text/markdown", "text/html"):
        if key in output.get("data", {}):
            output["data"][key] = clean(output["data"][key])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m notebooks.refresh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebooks to refresh (default: all)")
    parser.add_argument("--data", required=True,
                        help="the MNIST folder (the four IDX files) or .npz the runs read")
    args = parser.parse_args(argv)
    if not Path(args.data).exists():
        parser.error(f"--data {args.data!r} does not exist")
    for path in notebooks(args.names):
        started = time.perf_counter()
        print(f"{path.name}: running", flush=True)
        refresh(path, args.data)
        print(f"{path.name}: saved with outputs ({time.perf_counter() - started:.0f} s)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
