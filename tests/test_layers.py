"""kprune.layers: what each layer type prunes, measured on real tiny models end to end.

For every layer type tfmot prunes: the plan row names the weight, apply -> a few steps
of fit -> strip, and the report's achieved sparsity equals the sparsity of that weight
measured directly; N:M rules are checked along the input-channel axis (axis -2).
"""

import numpy as np
import pytest

import kprune
from kprune import LayerRule, PruningPlan, layers, masks
from kprune.core.layers import N_M_AXIS
from kprune.engines.tfkeras import loader

from helpers import keras

L = keras.layers
STEPS, BATCH = 4, 8


class PrunableDense(L.Dense, loader.tfmot.sparsity.keras.PrunableLayer):
    """A user's own layer that names what tfmot should prune."""

    def get_prunable_weights(self):
        return [self.kernel]


def _head(x):
    return L.Dense(3, name="head")(x)


def _model(shape, body, dtype="float32"):
    inputs = keras.Input(shape, dtype=dtype)
    return keras.Model(inputs, _head(body(inputs)))


# name, builder, input shape, integer inputs, method, weight labels
CASES = [
    ("Dense", lambda x: L.Dense(8, name="target")(L.Flatten()(x)), (4, 4), False, "m_by_n",
     ["kernel"]),
    ("Conv1D", lambda x: L.GlobalAveragePooling1D()(L.Conv1D(8, 3, name="target")(x)),
     (12, 4), False, "unstructured", ["kernel"]),
    ("Conv2D", lambda x: L.GlobalAveragePooling2D()(L.Conv2D(8, 3, name="target")(x)),
     (6, 6, 4), False, "m_by_n", ["kernel"]),
    ("Conv3D", lambda x: L.GlobalAveragePooling3D()(L.Conv3D(4, 2, name="target")(x)),
     (4, 4, 4, 2), False, "unstructured", ["kernel"]),
    ("Conv2DTranspose",
     lambda x: L.GlobalAveragePooling2D()(L.Conv2DTranspose(8, 3, name="target")(x)),
     (5, 5, 4), False, "unstructured", ["kernel"]),
    ("SeparableConv1D",
     lambda x: L.GlobalAveragePooling1D()(L.SeparableConv1D(8, 3, name="target")(x)),
     (12, 4), False, "unstructured", ["pointwise_kernel"]),
    ("SeparableConv2D",
     lambda x: L.GlobalAveragePooling2D()(L.SeparableConv2D(8, 3, name="target")(x)),
     (6, 6, 8), False, "m_by_n", ["pointwise_kernel"]),
    ("Embedding", lambda x: L.Flatten()(L.Embedding(20, 8, name="target")(x)), (6,), True,
     "unstructured", ["embeddings"]),
    ("MultiHeadAttention",
     lambda x: L.Flatten()(L.MultiHeadAttention(2, 4, name="target")(x, x)), (4, 8), False,
     "unstructured", ["_query_dense.kernel", "_key_dense.kernel", "_value_dense.kernel",
                      "_output_dense.kernel"]),
    ("LSTM", lambda x: L.LSTM(8, name="target")(x), (5, 4), False, "m_by_n",
     ["cell.kernel", "cell.recurrent_kernel"]),
    ("GRU", lambda x: L.GRU(8, name="target")(x), (5, 4), False, "unstructured",
     ["cell.kernel", "cell.recurrent_kernel"]),
    ("SimpleRNN", lambda x: L.SimpleRNN(8, name="target")(x), (5, 4), False, "unstructured",
     ["cell.kernel", "cell.recurrent_kernel"]),
    ("PrunableLayer", lambda x: PrunableDense(8, name="target")(L.Flatten()(x)), (4, 4), False,
     "m_by_n", ["kernel[0]"]),
]


def _data(shape, integer, n=STEPS * BATCH):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (n, *shape)) if integer else rng.random((n, *shape), np.float32)
    return x, rng.integers(0, 3, n)


# the recurrent, attention and 3-D cases train longest: in the slow tier only
SLOW_CASES = {"LSTM", "GRU", "SimpleRNN", "MultiHeadAttention", "Conv3D"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c[0] in SLOW_CASES
                                  else c for c in CASES], ids=[c[0] for c in CASES])
def test_every_prunable_layer_type_is_pruned_where_the_report_looks(case):
    _, body, shape, integer, method, labels = case
    keras.utils.set_random_seed(0)
    model = _model(shape, body, dtype="int32" if integer else "float32")
    rule = (LayerRule("target", method="m_by_n") if method == "m_by_n"
            else LayerRule("target", target=0.6))
    plan = PruningPlan([rule])
    row = plan.resolve(model, steps_per_epoch=STEPS, epochs=1)["target"]
    assert row.pruned and list(row.weights) == labels

    pruned = kprune.apply(model, plan, steps_per_epoch=STEPS, epochs=1)
    pruned.compile(optimizer="adam",
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(shape, integer)
    pruned.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=kprune.callbacks(strict=True))
    final = kprune.strip(pruned)

    report = kprune.sparsity_report(final, strict=True)
    measured = [w.variable.numpy() for w in layers.prunable_weights(final.get_layer("target"))]
    size = sum(v.size for v in measured)
    nonzero = sum(int(np.count_nonzero(v)) for v in measured)
    got = report["target"]
    assert (got.weights, got.nonzero) == (size, nonzero)
    assert got.achieved == pytest.approx(1 - nonzero / size)
    assert [part[0] for part in got.parts] == labels
    if method == "m_by_n":
        assert got.method == "2:4"
        assert all(masks.n_m_violations(v, 2, 4, axis=N_M_AXIS) == 0 for v in measured)
    else:
        assert got.achieved == pytest.approx(0.6, abs=0.05)
    assert np.count_nonzero(final.get_layer("head").get_weights()[0]) == 3 * final.get_layer(
        "head").get_weights()[0].shape[0]  # the head stays dense


def test_the_registry_names_what_tfmot_prunes_and_why_not():
    inputs = keras.Input((8, 8, 8))
    dw = L.DepthwiseConv2D(3, name="dw")
    bn = L.BatchNormalization(name="bn")
    x = bn(dw(inputs))
    sep = L.SeparableConv2D(8, 3, name="sep")
    x = L.Flatten(name="flat")(sep(x))
    keras.Model(inputs, L.Activation("softmax", name="soft")(L.Dense(3)(x)))
    assert [w.label for w in layers.prunable_weights(sep)] == ["pointwise_kernel"]
    assert layers.prunable_weights(sep)[0].variable is sep.pointwise_kernel
    assert layers.prunable_weights(dw) == ()
    assert layers.not_pruned_reason(dw) == "tfmot does not prune depthwise kernels"
    assert layers.not_pruned_reason(bn) == "not pruned: no kernel"
    assert layers.not_pruned_reason(L.Flatten()) == "no weights"
    assert (layers.kind(sep), layers.channel_role(sep)) == ("conv", "producer")
    assert layers.channel_role(dw) == "channelwise" and layers.channel_role(L.Add()) == "coupling"
    assert layers.channel_role(L.Activation("softmax")) == "mixing"
    assert layers.channel_role(L.Activation("relu")) == "channelwise"


def test_a_subclass_tfmot_does_not_know_is_refused_with_the_way_out():
    class MyDense(L.Dense):
        pass

    layer = MyDense(4)
    layer.build((None, 8))
    assert not layers.is_prunable(layer)
    assert "not in tfmot's registry" in layers.not_pruned_reason(layer)
    assert "PrunableLayer" in layers.not_pruned_reason(layer)
    model = keras.Sequential([keras.Input((8,)), layer, L.Dense(2, name="head")])
    with pytest.raises(ValueError, match="has nothing tfmot can prune .*not in tfmot's registry"):
        PruningPlan([LayerRule(layer.name, target=0.5)]).resolve(model)


@pytest.mark.parametrize(
    ("layer", "shape", "match"),
    [
        (L.Conv1D(8, 3), (None, 12, 8), "rank 3; tfmot groups N:M only in rank-2 and rank-4"),
        (L.Conv2DTranspose(8, 3), (None, 6, 6, 8), "output channels on the axis tfmot groups"),
        (L.Embedding(20, 8), (None, 4), "looked up, not multiplied"),
        (L.Conv2D(8, 3), (None, 6, 6, 1), "1 input channel < group size 4"),
        (L.Dense(8), (None, 6), "6 input channels is not a multiple of 4"),
    ],
)
def test_n_m_problems_are_named(layer, shape, match):
    layer.build(shape)
    assert match in layers.n_m_problem(layer, 2, 4)
    model = keras.Sequential([keras.Input(shape[1:]), layer])
    with pytest.raises(ValueError, match="cannot take 2:4 sparsity"):
        PruningPlan([LayerRule(layer.name, method="m_by_n")]).resolve(model)


def test_the_default_plan_gives_separable_pointwise_kernels_2_by_4_and_skips_depthwise():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, name="stem")(inputs)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    x = L.SeparableConv2D(16, 3, name="sep")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(4, name="head")(x))
    resolved = PruningPlan.default().resolve(model)
    assert resolved["stem"].method == "unstructured"
    assert resolved["sep"].method_label == "2:4" and resolved["sep"].weights == ("pointwise_kernel",)
    assert resolved["dw"].method == "skip"
    assert resolved["dw"].reason == "tfmot does not prune depthwise kernels"
    assert resolved["head"].reason == "classifier head"


def test_kind_selector_rejects_unknown_kinds():
    with pytest.raises(ValueError, match=r"Argument `match` must be one of \('conv'"):
        LayerRule("convolution", by="kind")


APPLICATIONS = [
    ("MobileNet", lambda: keras.applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=4)),
    ("MobileNetV2", lambda: keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=4)),
    ("Xception", lambda: keras.applications.Xception(
        input_shape=(71, 71, 3), weights=None, classes=4)),
]


@pytest.mark.slow
@pytest.mark.parametrize("build", [b for _, b in APPLICATIONS], ids=[n for n, _ in APPLICATIONS])
def test_applications_with_depthwise_and_separable_layers_are_really_sparse(build):
    keras.utils.set_random_seed(0)
    model = build()
    plan = PruningPlan.default()
    resolved = plan.resolve(model, steps_per_epoch=2, epochs=1)
    kinds = {row.type for row in resolved.pruned}
    assert "Conv2D" in kinds
    for row in resolved:
        if row.type == "DepthwiseConv2D":
            assert row.reason == "tfmot does not prune depthwise kernels"
    if any(row.type == "SeparableConv2D" for row in resolved):
        assert {r.method_label for r in resolved if r.type == "SeparableConv2D"} == {"2:4"}
    pruned = kprune.apply(model, plan, steps_per_epoch=2, epochs=1)
    pruned.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    shape = model.input_shape[1:]
    rng = np.random.default_rng(0)
    x, y = rng.random((8, *shape), np.float32), rng.integers(0, 4, 8)
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=kprune.callbacks(strict=True))
    report = kprune.sparsity_report(kprune.strip(pruned), strict=True)
    by_name = {row.name: row for row in report.rows}
    for row in resolved.pruned:
        achieved = by_name[row.name]
        assert achieved.weight == row.weights[0]
        assert achieved.achieved >= row.target - 0.05, row.name
