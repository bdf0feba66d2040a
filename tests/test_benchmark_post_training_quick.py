"""The post-training benchmark's language-model part, quick: trained, pruned, perplexities."""

import math

import pytest

from benchmarks import post_training


@pytest.mark.slow
def test_quick_language_model_part_trains_prunes_and_scores_each_method():
    cfg = dict(post_training.QUICK["lm"])
    result = post_training.run_lm(cfg, seed=0)
    dense = result["dense_perplexity"]
    # 60 steps already beat a uniform guess over 256 bytes by far
    assert 1.0 < dense < 256 / 2, dense
    rows = {(r["plan"], r["method"]): r for r in result["rows"]}
    assert set(rows) == {(p, m) for p in ("50%", "2:4") for m in post_training.METHODS}
    for row in rows.values():
        assert row["plan_met"] and row["layers"] == 6, row  # q, k, v, out, ffn up and down
        assert math.isfinite(row["perplexity"]) and row["perplexity"] >= dense * 0.95
    for plan in ("50%", "2:4"):  # the solver's own objective: SparseGPT's layers err least
        assert rows[(plan, "sparsegpt")]["mean_error"] < rows[(plan, "magnitude")]["mean_error"]
    summary = post_training.markdown_summary({"lm": result, "cnn": {"models": {}},
                                              "seconds": 60.0, "finished": "now",
                                              "environment": post_training.environment(),
                                              "keras": "3"})
    assert summary.startswith("Run finished now, 1 min on ")
    assert f"| byte GPT here (kprune) | {dense:.3f} |" in summary
    assert "| OPT-125M, SparseGPT paper table 1 | 27.66 | 193 |" in summary


def test_a_partial_run_needs_the_results_of_an_earlier_full_run():
    with pytest.raises(ValueError, match="--part mobilenet keeps the other parts of the "
                                         "results JSON, and it has none"):
        post_training.run(data_dir=None, seed=0, quick=True, part="mobilenet", previous={})
