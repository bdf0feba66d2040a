"""benchmarks.han_lenet in quick mode, through main(argv), into a temporary folder."""

import json

import pytest

from benchmarks import han_lenet  # on sys.path through setup.cfg's pythonpath

ROW_KEYS = {"workflow", "plan", "epochs", "params", "nonzero", "x_fewer", "error_pct",
            "delta_pp", "delta_pp_range", "delta_control_pp", "kept_per_layer", "met", "seconds", "note"}


@pytest.mark.slow
def test_han_lenet_quick(mnist_dir, tmp_path):
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
    assert results["seed"] == 0 and results["repeats"] == {"lenet-300-100": 1}
    net = results["networks"]["lenet-300-100"]
    assert net["seeds"] == [0] and len(net["runs"]) == 1
    rows = net["rows"]
    assert [r["workflow"] for r in rows] == ["dense", "one-shot", "gradual", "gradual",
                                             "iterative", "rewind to init"]
    assert all(ROW_KEYS <= set(row) for row in rows)
    assert rows[0]["params"] == 266_610 and rows[0]["x_fewer"] == pytest.approx(1.0, abs=1e-3)
    for row in rows[1:]:
        assert row["x_fewer"] >= 12.0, row["workflow"]
        assert row["delta_pp"] == pytest.approx(row["error_pct"] - rows[0]["error_pct"])
        assert row["delta_control_pp"] is None  # quick mode trains no control
    assert net["allocation"]["sparsity"] == pytest.approx(0.92, abs=1e-5)
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n\n" + han_lenet.BEGIN)
    assert text.endswith(han_lenet.END + "\n\nafter\n") and "PREVIOUS-RUN-TABLE" not in text
    assert "| lenet-300-100 | *Han et al. 2015* |" in text


def test_control_deltas():
    rows = [{"workflow": "dense", "error_pct": 1.9}, {"workflow": han_lenet.CONTROL,
                                                      "error_pct": 1.7},
            {"workflow": "one-shot", "error_pct": 2.0}]
    deltas = [r["delta_control_pp"] for r in han_lenet.add_control_deltas(rows)]
    assert deltas == pytest.approx([0.2, 0.0, 0.3])
    assert all(r["delta_control_pp"] is None
               for r in han_lenet.add_control_deltas([{"workflow": "dense", "error_pct": 1.0}]))


def _run(seed, dense_error, pruned_error, nonzero):
    """A run_network-shaped result with a dense row and one pruned row (no training)."""
    def row(workflow, error, nonzero, met):
        return {"workflow": workflow, "plan": "global", "epochs": 4, "params": 1000,
                "nonzero": nonzero, "x_fewer": 1000 / nonzero, "error_pct": error,
                "delta_pp": error - dense_error, "delta_control_pp": None,
                "kept_per_layer": {"fc": nonzero / 1000}, "met": met, "seconds": 1.0 + seed,
                "note": ""}
    return {"params": 1000, "dense_error_pct": dense_error,
            "allocation": {"seed": seed}, "rows": [row("dense", dense_error, 1000, None),
                                                   row("one-shot", pruned_error, nonzero, True)]}


def test_repeats_combine_into_medians_and_a_delta_range():
    runs = [_run(0, 2.0, 2.3, 80), _run(1, 1.8, 1.8, 82), _run(2, 1.9, 1.95, 84)]
    net = han_lenet.combine_repeats(runs, seeds=[0, 1, 2])
    dense, pruned = net["rows"]
    assert net["seeds"] == [0, 1, 2] and net["dense_error_pct"] == pytest.approx(1.9)
    assert pruned["error_pct"] == pytest.approx(1.95) and pruned["nonzero"] == 82
    assert pruned["delta_pp"] == pytest.approx(0.05)  # median of +0.3, 0.0, +0.05
    assert pruned["delta_pp_range"] == pytest.approx([0.0, 0.3])
    assert pruned["met"] is True and dense["met"] is None  # 12.2x, +0.05 pp
    assert [run["seed"] for run in net["runs"]] == [0, 1, 2]
    assert net["allocation"] == {"seed": 0}
    worse = han_lenet.combine_repeats([_run(0, 2.0, 2.3, 80), _run(1, 1.8, 2.0, 80)],
                                      seeds=[0, 1])
    assert worse["rows"][1]["delta_pp"] == pytest.approx(0.25) and not worse["rows"][1]["met"]


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert han_lenet.main(["--quick", "--data", str(tmp_path / "nowhere")]) == 2
    assert "MNIST not found" in capsys.readouterr().err


def test_repeats_below_one_is_a_clear_error(mnist_dir, capsys):
    assert han_lenet.main(["--quick", "--repeats", "0", "--data", str(mnist_dir)]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err
