"""benchmarks.han_lenet in quick mode, through main(argv), into a temporary folder."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ROW_KEYS = {"workflow", "plan", "epochs", "params", "nonzero", "x_fewer", "error_pct",
            "delta_pp", "kept_per_layer", "met", "seconds", "note"}


@pytest.fixture
def han_lenet(monkeypatch):
    """benchmarks/ lives outside the package: import it from the repository root."""
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import han_lenet

    return han_lenet


@pytest.mark.slow
def test_han_lenet_quick(han_lenet, mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nbefore\n\n{han_lenet.BEGIN}\nPREVIOUS-RUN-TABLE\n{han_lenet.END}\n\nafter\n")
    code = han_lenet.main(["--quick", "--models", "lenet-300-100", "--out", str(out),
                           "--data", str(mnist_dir), "--readme", str(readme)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["benchmark"] == "han_lenet" and results["mode"] == "quick"
    assert {"tensorflow", "tf_keras", "tfmot", "python"} <= set(results["versions"])
    assert {"platform", "cpu_count"} <= set(results["machine"])
    assert results["seed"] == 0
    net = results["networks"]["lenet-300-100"]
    rows = net["rows"]
    assert [r["workflow"] for r in rows] == ["dense", "one-shot", "gradual", "gradual",
                                             "iterative", "rewind to init"]
    assert all(ROW_KEYS <= set(row) for row in rows)
    assert rows[0]["params"] == 266_610 and rows[0]["x_fewer"] == pytest.approx(1.0, abs=1e-3)
    for row in rows[1:]:
        assert row["x_fewer"] >= 12.0, row["workflow"]
        assert row["delta_pp"] == pytest.approx(row["error_pct"] - rows[0]["error_pct"])
    assert net["allocation"]["sparsity"] == pytest.approx(0.92, abs=1e-5)
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n\n" + han_lenet.BEGIN)
    assert text.endswith(han_lenet.END + "\n\nafter\n") and "PREVIOUS-RUN-TABLE" not in text
    assert "| lenet-300-100 | *Han et al. 2015* |" in text


def test_missing_data_is_a_clear_error(han_lenet, tmp_path, capsys):
    assert han_lenet.main(["--quick", "--data", str(tmp_path / "nowhere")]) == 2
    assert "MNIST not found" in capsys.readouterr().err
