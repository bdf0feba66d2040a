"""benchmarks.peers: the Keras -> PyTorch weight transfers (the residual CNN; the byte LM into
a Hugging Face GPT-2), --quick runs through main(argv), and a run without the peers (CI
installs only `.[dev]`, without torch, torch-pruning, transformers and llm-compressor)."""

import json

import numpy as np
import pytest

from benchmarks import peers  # on sys.path through setup.cfg's pythonpath

#: the skip reason, listed in tests/allowed_skips.txt
MISSING_PEERS = ("torch or torch_pruning is not installed (the peers extra: "
                 "pip install -e '.[peers]')")


def need_peers():
    try:
        import torch  # noqa: F401
        import torch_pruning  # noqa: F401
    except ImportError:
        pytest.skip(MISSING_PEERS)


def need_llm_peers():
    """Part 3's peers: torch, transformers and llm-compressor (in the peers extra too)."""
    try:
        import llmcompressor  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        pytest.skip(MISSING_PEERS)


def _random_statistics(model, rng):
    """Batch norms with statistics far from their initial ones, so that a transfer that
    drops or swaps one of them shows in the outputs."""
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


@pytest.mark.slow  # imports torch (and transformers): 7-18 s
def test_keras_to_torch_transfer_outputs_equal():
    need_peers()
    from benchmarks import _peer_models as twins

    rng = np.random.default_rng(0)
    model = twins.keras_model()
    _random_statistics(model, rng)
    net = twins.keras_to_torch(model)
    x = rng.random((16, 28, 28, 1)).astype(np.float32)
    assert twins.max_difference(model, net, x) <= 1e-4
    assert twins.torch_widths(net) == twins.keras_widths(model) == twins.WIDTHS
    # the other way, at pruned widths (a Torch-Pruning result's twin)
    widths = {"stem": 5, "b1": 7, "b2a": 9, "b2": 11, "b3": 13}
    small = twins.torch_model(widths).eval()
    back = twins.torch_to_keras(small)
    assert twins.keras_widths(back) == widths
    assert twins.max_difference(back, small, x) <= 1e-4
    # a transfer that got the conv layout wrong would not pass: check the check
    kernel = model.get_layer("b1_1_conv").get_weights()[0]
    model.get_layer("b1_1_conv").set_weights([kernel[::-1]])
    assert twins.max_difference(model, net, x) > 1e-4


def _random_lm(rng, **sizes):
    """The byte LM of benchmarks.post_training with every weight drawn at random (biases and
    layer norms far from their initial 0 and 1), so that a dropped or misplaced weight shows."""
    from benchmarks import post_training

    cfg = dict(context=12, width=16, heads=4, blocks=2, ffn=40, **sizes)
    model = post_training.language_model(**cfg)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model, cfg


@pytest.mark.slow  # imports torch (and transformers): 7-18 s
def test_keras_lm_to_gpt2_transfer_logits_equal():
    need_llm_peers()
    import torch
    import transformers

    from benchmarks import _peer_lm

    rng = np.random.default_rng(0)
    model, cfg = _random_lm(rng)
    net = _peer_lm.keras_to_gpt2(model, cfg)
    assert isinstance(net, transformers.GPT2LMHeadModel)
    assert net.config.activation_function == "gelu" and not net.config.tie_word_embeddings
    x = rng.integers(0, 256, size=(8, cfg["context"]))
    assert _peer_lm.max_difference(model, net, x) <= 1e-4
    # the Linear twin that llm-compressor prunes computes the same
    linear = _peer_lm.linear_twin(_peer_lm.keras_to_gpt2(model, cfg))
    assert all(isinstance(linear.get_submodule(name), torch.nn.Linear)
               for name in _peer_lm.prunable_names(linear))
    assert _peer_lm.max_difference(model, linear, x) <= 1e-4
    # and back: the twin's kernels into a fresh model give the same logits
    other, _ = _random_lm(np.random.default_rng(1))
    for name in ("embed", "positions", "head", *(f"ln_{i}_{p}" for i in range(2)
                                                 for p in "af"), "ln_final"):
        other.get_layer(name).set_weights(model.get_layer(name).get_weights())
    _peer_lm.gpt2_to_keras(linear, other)
    assert _peer_lm.max_difference(other, net, x) <= 1e-4
    # perplexity agrees between the two frameworks
    from benchmarks import post_training

    y = rng.integers(0, 256, size=x.shape)
    assert _peer_lm.perplexity(net, x, y) == pytest.approx(
        post_training.perplexity(model, x, y), rel=1e-4)
    # a transfer that swapped query and key would not pass: check the check
    query, key = (model.get_layer(f"{n}_1").get_weights() for n in ("query", "key"))
    model.get_layer("query_1").set_weights(key)
    model.get_layer("key_1").set_weights(query)
    assert _peer_lm.max_difference(model, net, x) > 1e-4


@pytest.mark.slow
def test_peers_llm_quick(tmp_path):
    # part 3 alone, end to end on a tiny LM: no MNIST needed, its own JSON and README block
    need_llm_peers()
    out = tmp_path / "llm.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{peers.LLM_BEGIN}\nOLD\n{peers.LLM_END}\nafter\n")
    code = peers.main(["--quick", "--only", "llm-compressor", "--lm-steps", "10", "--out",
                       str(out), "--work", str(tmp_path / "work"), "--readme", str(readme),
                       "--data", str(tmp_path / "no-mnist-here")])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["settings"]["parts"] == ["llm-compressor"] and results["data"] == {}
    assert results["versions"]["llmcompressor"] and results["versions"]["transformers"]
    part = results["llm_compressor"]
    assert part["config"]["steps"] == 10
    assert part["transfer_max_difference"] <= 1e-4
    assert part["linear_twin_max_difference"] <= 1e-4
    assert [(r["plan"], r["method"]) for r in part["rows"]] == [
        ("50%", "sparsegpt"), ("50%", "wanda"), ("2:4", "sparsegpt"), ("2:4", "wanda")]
    for row in part["rows"]:
        for tool in ("kprune", "llm_compressor"):
            entry = row[tool]
            assert entry["seconds"] > 0 and entry["perplexity"] > 1
            # both tools pruned the same four layers of the block to half
            assert len(entry["sparsity"]) == 4
            assert all(0.49 <= v <= 0.52 for v in entry["sparsity"].values()), entry
            # one evaluator or the other: the same perplexity for the same weights
            assert entry["perplexity_pytorch"] == pytest.approx(entry["perplexity"], rel=1e-3)
        assert row["llm_compressor"]["head_untouched"] and row["kprune"]["plan_met"]
        assert 0.5 < row["mask_agreement"] <= 1
    assert len(results["targets"]) == 8
    text = readme.read_text()
    assert "OLD" not in text and "| 2:4 | wanda |" in text and "--only llm-compressor" in text
    assert text.startswith("before\n") and text.endswith("after\n")


def assert_part_one(part):
    """Part 1 in --quick (LeNet-5, 2,000 images: 16 steps a fine-tune): tfmot and
    kprune-80 at 80 %, kprune-best as its recipe says, in the same budget."""
    sparsity = part["sparsity"]
    assert part["model"] == "lenet-5" and part["steps"] == 16
    assert sparsity["tfmot"]["overall"] == pytest.approx(0.8, abs=0.01)
    # PruningPlan.uniform leaves the head dense
    assert sparsity["kprune-80"]["fc1"] == pytest.approx(0.8, abs=0.01)
    assert sparsity["kprune-80"]["head"] == 0 and sparsity["dense"]["overall"] < 0.01
    # kprune-best: half the channels gone, fc1 at 95 % of its blocks, the head dense; its
    # overall sparsity counts the removed weights as pruned
    best = part["notes"]["kprune-best"]
    assert best["recipe"] == "examples/seed_cnn_max_compression.yaml"
    assert best["params"] < 0.5 * part["params"]
    assert sparsity["kprune-best"]["fc1"] == pytest.approx(0.95, abs=0.01)
    assert sparsity["kprune-best"]["head"] == 0
    assert sparsity["kprune-best"]["overall"] > 0.9
    # the budget of the other rows, shared 1 : 2 as the recipe's epochs
    split = best["split"]
    assert split["structural_fine_tune_steps"] + split["prune_steps"] == part["steps"]
    assert split["prune_steps"] == 2 * split["steps_per_recipe_epoch"] == 10
    rows = {(r["row"], r["variant"]): r for r in part["rows"]}
    assert all(0 < r["accuracy"] <= 1 and r["step_ms"] > 0 for r in rows.values())
    assert rows[("kprune-best", "int8")]["bytes"] < 0.5 * rows[("tfmot", "int8")]["bytes"]


@pytest.mark.slow
def test_peers_quick(mnist_dir, tmp_path):
    need_peers()
    need_llm_peers()
    out = tmp_path / "results.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{peers.BEGIN}\nOLD\n{peers.END}\nafter\n")
    code = peers.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work"),
                       "--data", str(mnist_dir), "--readme", str(readme)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["mode"] == "quick" and results["seeds"] == 1
    assert all(results["peers"][name]["available"] for name in ("tfmot", "torch",
                                                                 "torch_pruning"))
    assert {"tensorflow", "tf_keras", "tfmot", "torch", "torch_pruning"} <= set(
        results["versions"])
    assert results["not_done"] == {}
    assert [(r["plan"], r["method"]) for r in results["llm_compressor"]["rows"]] == [
        ("50%", "sparsegpt"), ("50%", "wanda"), ("2:4", "sparsegpt"), ("2:4", "wanda")]
    rows = {(r["row"], r["variant"]): r for r in results["tfmot"]["rows"]}
    assert set(rows) == {("dense", "float"), ("dense", "int8"), ("dense-ft", "int8"),
                         ("tfmot", "int8"), ("kprune-default", "int8"), ("kprune-80", "int8"),
                         ("kprune-best", "int8")}
    assert_part_one(results["tfmot"])
    part = results["torch_pruning"]
    assert part["transfer_max_difference"] <= 1e-4
    structural = {r["row"]: r for r in part["rows"]}
    assert list(structural) == ["dense", "kprune-50", "torch-pruning-50"]
    for name in ("kprune-50", "torch-pruning-50"):
        row = structural[name]
        assert 0.35 < row["macs_kept"] <= 0.5 and row["prune_s"] > 0
        assert row["macs"] < structural["dense"]["macs"]
        assert len(row["accuracy"]) == 1 and row["std"] == 0.0
        assert row["litert"]["median_ms"] > 0 and row["eager"]["median_ms"] > 0
    assert structural["torch-pruning-50"]["torch_to_keras_max_difference"] <= 1e-4
    assert results["targets"] and all(isinstance(c["met"], bool) for c in results["targets"])
    text = readme.read_text()
    assert "OLD" not in text and "| torch-pruning-50 |" in text and "| tfmot | int8 |" in text
    assert "| 50% | sparsegpt |" in text
    assert text.startswith("before\n") and text.endswith("after\n")


@pytest.mark.slow
def test_missing_peer_is_reported_and_the_rest_runs(mnist_dir, tmp_path, monkeypatch):
    # what CI sees (only `.[dev]`): the tfmot part runs, the Torch-Pruning part says why not
    status = {"tfmot": {"available": True, "version": "0.8.1", "why": ""},
              "torch": {"available": False, "version": None,
                        "why": "ModuleNotFoundError: No module named 'torch'"},
              "torch_pruning": {"available": False, "version": None,
                                "why": "ModuleNotFoundError: No module named 'torch_pruning'"},
              "transformers": {"available": False, "version": None,
                               "why": "ModuleNotFoundError: No module named 'transformers'"},
              "llmcompressor": {"available": False, "version": None,
                                "why": "ModuleNotFoundError: No module named 'llmcompressor'"}}
    monkeypatch.setattr(peers, "peer_status", lambda: status)
    out = tmp_path / "results.json"
    code = peers.main(["--quick", "--out", str(out), "--no-readme", "--data", str(mnist_dir),
                       "--work", str(tmp_path / "work")])
    assert code == 0
    results = json.loads(out.read_text())
    assert "No module named 'torch'" in results["torch_pruning"]["skipped"]
    assert len(results["tfmot"]["rows"]) == 7
    assert_part_one(results["tfmot"])
    assert [c["target"] for c in results["targets"]] == [
        "kprune at 80 % as accurate as tfmot at 80 % (int8, within 0.1 pp)",
        "kprune's best recipe: a smaller file (gzipped) than tfmot's smallest, as accurate "
        "(within 0.1 pp)"]
    text = peers.markdown_summary(results)
    assert "Peers not installed" in text and "Torch-Pruning part skipped" in text
    assert "| tfmot | int8 |" in text and "kprune-80 against tfmot's recipe" in text
    assert "| kprune-best | int8 |" in text and "kprune's best recipe against tfmot's" in text
    assert "`kprune-best`: the steps of `examples/seed_cnn_max_compression.yaml`" in text
    assert "No module named 'llmcompressor'" in results["llm_compressor"]["skipped"]
    assert "llm-compressor part skipped" in text


def _part_one(best, tfmot):
    """A part-1 result with kprune-best's and tfmot's smallest files: (accuracy, gzip bytes)."""
    rows = []
    for name, (accuracy, size) in (("kprune-best", best), ("tfmot", tfmot)):
        rows += [{"row": name, "variant": "int8", "accuracy": accuracy, "gzip_bytes": size},
                 {"row": name, "variant": "float", "accuracy": 0.99, "gzip_bytes": 10 * size}]
    return {"tfmot": {"rows": rows}}


@pytest.mark.parametrize("best, tfmot, met", [
    ((0.9860, 80_000), (0.9864, 1_000_000), True),    # smaller, 0.04 pp less: within 0.1 pp
    ((0.9850, 80_000), (0.9864, 1_000_000), False),   # smaller but 0.14 pp less accurate
    ((0.9900, 1_000_001), (0.9864, 1_000_000), False),  # as accurate, one byte bigger
])
def test_best_recipe_target_needs_a_smaller_file_and_the_same_accuracy(best, tfmot, met):
    (check,) = peers.check_targets(_part_one(best, tfmot))
    assert check["target"].startswith("kprune's best recipe: a smaller file")
    assert check["met"] is met
    assert check["measured"]["kprune"] == "kprune-best/int8"
    assert check["measured"]["tfmot_gzip_bytes"] == tfmot[1]


def test_part_one_alone_has_its_own_results_and_readme_block(tmp_path):
    parser = peers.build_parser()
    args = parser.parse_args(["--only", "tfmot", "--data", str(tmp_path)])
    assert peers.outputs(args) == (peers.TFMOT_OUT, peers.README,
                                   (peers.TFMOT_BEGIN, peers.TFMOT_END))
    args = parser.parse_args(["--only", "tfmot", "torch-pruning", "--data", str(tmp_path)])
    assert peers.outputs(args) == (peers.DEFAULT_OUT, peers.README, (peers.BEGIN, peers.END))


def test_best_recipe_must_be_gradual_with_channels_first(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: seed-cnn\nworkflow: {name: one-shot, epochs: 1}\n")
    with pytest.raises(ValueError, match="applies a gradual recipe with a structural step "
                                         "before it"):
        peers.best_recipe(None, np.zeros((10, 28, 28, 1)), np.zeros(10), recipe)


def test_bisect_finds_the_largest_model_within_budget():
    # MACs fall as the ratio grows: the answer is the smallest ratio at or under the target
    ratio, macs, _ = peers.bisect(lambda r: (1000 * (1 - r) ** 2, r), 250, steps=20)
    assert macs <= 250 and ratio == pytest.approx(0.5, abs=1e-4)


def test_seeds_must_be_positive(capsys):
    assert peers.main(["--seeds", "0", "--no-readme"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err


def test_the_front_readme_comparison_is_the_committed_run_of_all_parts():
    results = json.loads((peers.REPO / "benchmarks" / "results" / "peers.json").read_text())
    assert set(results["settings"]["parts"]) == set(peers.PARTS)  # one run, every part
    table = peers.compared_table(results)
    assert f"{peers.COMPARED_BEGIN}\n{table}\n{peers.COMPARED_END}" in (
        peers.FRONT_README.read_text())
    # one row per comparison: two against tfmot, one per MAC budget, one per LM method and plan
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 2 + len(results["settings"]["budgets"]) + len(
        results["llm_compressor"]["rows"])
    # every target of the run is in the table, met or not
    assert sum(line.count("yes") + line.count(" no") for line in rows[1:]) == len(
        results["targets"])
