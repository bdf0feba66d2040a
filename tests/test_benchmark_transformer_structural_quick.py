"""benchmarks.transformer_structural in quick mode, through main(argv), into a temporary folder."""

import json

import pytest

from benchmarks import transformer_structural as bench
from tests.latency_checks import assert_speedups_from_rounds


@pytest.mark.slow
def test_transformer_structural_quick(mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{bench.BEGIN}\nOLD\n{bench.END}\nafter\n")
    assert bench.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work"),
                       "--data", str(mnist_dir), "--readme", str(readme)]) == 0
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["data"]["train"] == 400
    rows = results["models"]
    assert list(rows) == ["dense", "heads+neurons l1", "heads+neurons fisher",
                          "heads+neurons fisher+ls", bench.REMOVED_ONLY, bench.SEARCH,
                          "blocks influence",
                          "heads+neurons fisher+ls+ft", "blocks influence+ft", "dense+ft"]
    assert rows["dense"]["accuracy"] > 0.2  # chance: 0.1
    # half the heads (2 of 4) and half the 128 feed-forward neurons: the same size
    # whichever neurons go, the residual stream (patch) whole
    for name in ("heads+neurons l1", "heads+neurons fisher", "heads+neurons fisher+ls",
                 "heads+neurons fisher+ls+ft"):
        assert rows[name]["params"] == 16_042 and rows[name]["macs"] == 177_664
    # the learned position embedding: 16 tokens of width 32
    assert rows["dense"]["params"] == rows["dense+ft"]["params"] == 24_394
    assert results["data"]["validation"] == 200 and 0 <= rows["dense"]["validation_accuracy"] <= 1
    assert results["parts"]["lm"]["run"] == results["parts"]["vit"]["run"] == "this run"
    # whole transformer blocks: 25 % of the quick ViT's 2, at least one
    assert len(results["settings"]["blocks_dropped"]) == 1
    assert results["settings"]["blocks_unit"] == "transformer"
    assert set(results["block_influence"]) == {"add_f1", "add_f2"}
    dropped = results["settings"]["blocks_dropped"][0]
    table = results["structural"]["blocks influence"]  # its attention and Dense layers gone
    assert [line.split()[-1] for line in table.splitlines()
            if line.split()[:1] in (["mha_" + dropped[-1]], ["ffn_up_" + dropped[-1]])] == ["0"] * 2
    # one of the two blocks gone: attention (4 heads) and feed-forward (32 -> 64 -> 32) both
    per_block = 4 * (32 * 8 * 3 + 8 * 3) + 32 * 4 * 8 + 32 + 2 * 64 + 32 * 64 + 64 + 64 * 32 + 32
    assert rows["dense"]["params"] - rows["blocks influence"]["params"] == per_block
    assert rows["blocks influence"]["macs"] < rows["dense"]["macs"]
    assert "fraction 0.5 (global) of the prunable budget: removed 4 of 8 prunable heads" \
        in results["selection"] and "excluded: exclude=('patch',)" in results["selection"]
    variants = {v["name"]: v for v in results["report"]["variants"]}
    for model in bench.EXPORTED:  # LiteRT answers as Keras does
        assert variants[f"{model}/float"]["accuracy"] == pytest.approx(
            rows[model]["accuracy"], abs=0.01)
    latency = results["latency"]
    assert latency["rounds"] == 2 and latency["threads"] == 1 and latency["batch"] == 1
    assert_speedups_from_rounds(latency)
    assert set(results["targets"]) == {"x_faster", "x_faster_met",
                                       "pp_lost_with_correction_no_fine_tune", "pp_met",
                                       "pp_lost_mac_search_with_correction_no_fine_tune"}
    # the mask search spends the same half of the heads' and neurons' MACs, split its way
    assert rows[bench.SEARCH]["macs"] < rows["dense"]["macs"]
    text = readme.read_text()
    assert "OLD" not in text and "`heads+neurons fisher+ls+ft/float`" in text
    assert text.endswith("after\n")
    _check_language_model(results["lm"], text)


def _check_language_model(lm, text):
    """The language-model half: a byte GPT with keras MultiHeadAttention, same rows."""
    rows = lm["models"]
    assert list(rows) == ["dense", "heads+neurons l1", "heads+neurons fisher",
                          "heads+neurons fisher+ls", bench.REMOVED_ONLY, bench.SEARCH,
                          "blocks influence",
                          "heads+neurons fisher+ls+ft", "blocks influence+ft", "dense+ft"]
    assert rows["dense"]["perplexity"] < 200  # chance: 256 bytes (8 training steps)
    assert lm["corpus"]["rule"].startswith("stdlib *.py")
    # half of the 2 x 4 heads and of the 2 x 64 neurons, the residual stream (embedding and
    # learned positions) and the vocabulary head whole
    assert "removed 4 of 8 prunable heads" in lm["selection"]
    assert "removed 64 of 128 prunable channels" in lm["selection"]
    assert "'positions' (PositionEmbedding)" in lm["selection"]
    for name in ("heads+neurons l1", "heads+neurons fisher", "heads+neurons fisher+ls",
                 "heads+neurons fisher+ls+ft"):
        assert rows[name]["params"] == 26_208 and rows[name]["macs"] == 589_824
    assert rows["dense"]["params"] == 34_560 and rows["dense"]["macs"] == 917_504
    # one of the two blocks: 4 heads of width 8 (query, key, value, output) and 32 -> 64 -> 32,
    # with their two layer norms
    per_block = 4 * 32 * 8 * 3 + 4 * 8 * 3 + 32 * 32 + 32 + 32 * 64 + 64 + 64 * 32 + 32 + 4 * 32
    assert rows["dense"]["params"] - rows["blocks influence"]["params"] == per_block
    assert set(lm["block_influence"]) == {"add_f1", "add_f2"}
    assert len(lm["settings"]["blocks_dropped"]) == 1
    # the correction re-fits the causal attention and the feed-forward outputs: it helps
    assert rows["heads+neurons fisher+ls"]["perplexity"] < rows["heads+neurons fisher"][
        "perplexity"]
    for name, litert in lm["litert"].items():  # LiteRT answers as Keras does
        assert litert["perplexity"] == pytest.approx(
            rows[name.removesuffix("/float")]["perplexity"], rel=1e-3)
    assert set(lm["latency"]["files"]) == {"dense/float", "heads+neurons fisher+ls+ft/float"}
    assert lm["latency"]["threads"] == 1 and lm["latency"]["batch"] == 1
    assert "perplexity_ratio_with_correction_no_fine_tune" in lm["targets"]
    assert "| file | LiteRT perplexity | KB | latency ms | x faster [range] |" in text


def test_dense_epochs_below_one_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert bench.main(["--quick", "--dense-epochs", "0", "--out", str(out)]) == 2
    assert "error: --dense-epochs must be at least 1. Received: 0" in capsys.readouterr().err
    assert not out.exists()


def test_the_vit_part_alone_needs_an_earlier_language_model_section(tmp_path, capsys, mnist_dir):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"benchmark": "transformer_structural"}))
    assert bench.main(["--quick", "--part", "vit", "--out", str(out), "--data",
                       str(mnist_dir), "--no-readme"]) == 2
    assert (f"error: --part vit keeps the language-model section of {out}, which has none; "
            "run both parts first. Received: --part vit") in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"benchmark": "transformer_structural"}
    # an earlier run's section is kept with the date it was measured
    out.write_text(json.dumps({"lm": {"models": {}}, "report": {"created": "2026-12-06T08:51"}}))
    assert bench._earlier_lm(out) == ({"models": {}}, "2026-12-06T08:51")
    out.write_text(json.dumps({"lm": {}, "parts": {"lm": {"measured": "earlier still"}},
                               "report": {"created": "later"}}))
    assert bench._earlier_lm(out) == ({}, "earlier still")
