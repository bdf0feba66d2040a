"""strip() and sparsity_report(): real weights, honest N:M check, strict mode."""

import numpy as np
import pytest

import kprune
from kprune import LayerRule, PruningPlan
from kprune.core.plan import LayerPlan, ResolvedPlan
from kprune.engines.tfkeras import loader

from helpers import keras, tiny_cnn, tiny_mlp


def train(model, x, y, *, epochs=1, batch_size=16):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=kprune.callbacks())
    return model


def images(n=64, shape=(8, 8, 1), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, n)


def test_strip_gives_a_plain_independent_model_with_masks_applied():
    x, y = images()
    plan = PruningPlan.default()
    pruned = train(kprune.apply(tiny_cnn(), plan, steps_per_epoch=4, epochs=1), x, y)
    final = kprune.strip(pruned)
    assert not any(isinstance(layer, loader.PruneLowMagnitude) for layer in final.layers)
    assert {id(w) for w in final.weights}.isdisjoint({id(w) for w in pruned.weights})
    np.testing.assert_allclose(final.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    report = kprune.sparsity_report(final, plan=plan, strict=True)
    assert report.ok
    assert report["conv_b"].n_m_violations == 0
    assert report["conv_a"].achieved == pytest.approx(0.5, abs=0.01)
    assert report["head"].achieved == 0.0
    assert report["head"].method == "skip"
    with pytest.raises(KeyError, match=r"No layer 'conv_c' in the report\. Did you mean .*'conv_a'"):
        report["conv_c"]
    with pytest.raises(KeyError, match=r"No layer 'haed' in the plan\. Did you mean 'head'"):
        plan.resolve(final)["haed"]


@pytest.mark.slow
def test_report_uses_the_plan_apply_attached():
    x, y = images()
    pruned = train(kprune.apply(tiny_cnn(), steps_per_epoch=4, epochs=1), x, y)
    report = kprune.sparsity_report(pruned)
    assert report["dense_a"].method == "2:4"
    assert report["dense_a"].ok
    text = str(report)
    assert "2:4 ok" in text and "total:" in text


def test_one_channel_conv_is_not_called_2_4_although_tfmot_says_so():
    # tfmot's 2:4 on a conv with one input channel zeroes nothing (and its own
    # is_pruned_m_by_n still says True: the padding satisfies it).
    conv = keras.layers.Conv2D(8, 3, name="conv")
    wrapped = loader.tfmot.sparsity.keras.prune_low_magnitude(
        conv, sparsity_m_by_n=(2, 4)
    )
    model = keras.Sequential([keras.Input((8, 8, 1)), wrapped, keras.layers.Flatten(),
                              keras.layers.Dense(10, name="head")])
    x, y = images()
    train(model, x, y)
    kernel = kprune.strip(model).get_layer("conv").kernel
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils

    assert bool(pruning_utils.is_pruned_m_by_n(kernel, (2, 4)))  # tfmot is fooled
    assert np.count_nonzero(kernel.numpy()) == kernel.numpy().size  # nothing was zeroed
    claim = ResolvedPlan((LayerPlan("conv", "Conv2D", 80, "m_by_n", 0.5, n=2, m=4),))
    report = kprune.sparsity_report(kprune.strip(model), plan=claim)
    assert report["conv"].n_m_violations > 0
    assert not report.ok
    with pytest.raises(ValueError, match=r"conv: \d+ groups not 2:4"):
        kprune.sparsity_report(kprune.strip(model), plan=claim, strict=True)


def test_strict_mode_catches_a_missed_unstructured_target():
    model = tiny_mlp()
    plan = PruningPlan([LayerRule("fc1", target=0.8)])
    with pytest.raises(ValueError, match=r"fc1: missed target \(achieved 0.000, target 0.8\)"):
        kprune.sparsity_report(model, plan=plan, strict=True)
    assert not kprune.sparsity_report(model, plan=plan).ok


def test_report_totals_and_dict():
    model = tiny_mlp()
    kernel = model.get_layer("fc1").kernel
    kernel.assign(np.zeros(kernel.shape, np.float32))
    report = kprune.sparsity_report(model)
    assert report.weights == 784 * 64 + 64 * 32 + 32 * 10
    assert report.nonzero == report.weights - 784 * 64
    assert report.to_dict()["layers"][0]["name"] == "fc1"


def test_report_rejects_a_bad_plan():
    with pytest.raises(TypeError, match="Argument `plan` must be"):
        kprune.sparsity_report(tiny_mlp(), plan="default")


def test_strict_report_without_a_plan_refuses_to_pass_having_checked_nothing():
    x, y = images(shape=(28, 28, 1))
    pruned = train(kprune.apply(tiny_mlp(), PruningPlan.default(), steps_per_epoch=4, epochs=1),
                   x, y)
    reloaded_like = kprune.copy_model(kprune.strip(pruned))  # a clone carries no plan
    with pytest.raises(ValueError, match="strict sparsity report needs a plan"):
        kprune.sparsity_report(reloaded_like, strict=True)
    assert kprune.sparsity_report(reloaded_like, plan=PruningPlan.default(), strict=True).ok


def test_a_plan_saved_with_the_model_is_checked_after_loading(tmp_path):
    x, y = images(shape=(28, 28, 1))
    plan = PruningPlan([LayerRule("fc1", target=0.7), LayerRule("fc2", method="m_by_n")])
    final = kprune.strip(train(kprune.apply(tiny_mlp(), plan, steps_per_epoch=4, epochs=1), x, y))
    for suffix in (".keras", ".h5"):
        loaded = kprune.load_model(kprune.save_model(final, tmp_path / f"final{suffix}"))
        report = kprune.sparsity_report(loaded, strict=True)
        assert report["fc1"].target == 0.7 and report["fc1"].ok
        assert report["fc2"].method == "2:4" and report["fc2"].n_m_violations == 0
        # The stored plan is really compared with: break the weights and it fails.
        loaded.get_layer("fc1").kernel.assign(np.ones((784, 64), np.float32))
        with pytest.raises(ValueError, match="fc1: missed target"):
            kprune.sparsity_report(loaded, strict=True)


def test_a_plan_row_survives_its_dict_round_trip():
    resolved = PruningPlan.default().resolve(tiny_cnn(), steps_per_epoch=10, epochs=2)
    assert ResolvedPlan.from_dict(resolved.to_dict()) == resolved
    with pytest.raises(ValueError, match="schema version 1"):
        ResolvedPlan.from_dict({"schema_version": 9, "layers": []})
    with pytest.raises(TypeError, match="must be a mapping with a 'layers' list"):
        ResolvedPlan.from_dict({"rules": []})
