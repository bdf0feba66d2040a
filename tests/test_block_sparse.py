"""Block sparsity end to end: the plan method, the whole-block check after strip, and the
block-sparse int8 .tflite (block_map [1], block size 16) read back from the file.

LiteRT's converter stores an int8 FULLY_CONNECTED weight block-sparse when its zeros come in
runs of 16 consecutive inputs of one output unit: on a Dense kernel [inputs, outputs] that is
tfmot's block_size=(16, 1), kprune's block=16: LiteRT's converter stores an int8 Dense
kernel block-sparse (block_map [1]) only in blocks of 16 consecutive inputs of one output unit,
and its builtin int8 kernel runs that faster than dense int8; blocks of 16 outputs are not
recognised.
"""

import warnings

import numpy as np
import pytest

import kprune
from kprune import LayerRule, PruningPlan
from kprune.core import masks
from kprune.core.plan import LITERT_BLOCK, PlanWarning
from kprune.engines.wrap import copy_model
from kprune.tflite import export, flatbuffer, measure

from helpers import keras, tiny_cnn

INPUTS, UNITS = 256, 64


def dense_model(kernel=None):
    """Input(256) -> fc (Dense 64, the kernel given) -> head (Dense 10)."""
    model = keras.Sequential(
        [keras.Input((INPUTS,)), keras.layers.Dense(UNITS, activation="relu", name="fc"),
         keras.layers.Dense(10, name="head")],
        name="block_mlp",
    )
    if kernel is not None:
        model.get_layer("fc").set_weights([kernel, np.full(UNITS, 0.1, np.float32)])
    return model


def masked_kernel(block, sparsity=0.9, seed=0):
    """A random 256x64 kernel with ``sparsity`` of its ``block`` blocks zeroed (kprune.masks)."""
    w = np.random.default_rng(seed).normal(size=(INPUTS, UNITS)).astype(np.float32)
    return np.where(masks.block(w, block, sparsity), w, 0).astype(np.float32)


def inputs(n=64, seed=1):
    return np.random.default_rng(seed).random((n, INPUTS), dtype=np.float32)


def int8_file(model, path, *, sparse, data=None):
    data = inputs(100, seed=2) if data is None else data
    return export.to_tflite(model, path, quantize="int8", sparse=sparse,
                            representative_data=data).path


def plan_warnings(plan, model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolved = plan.resolve(model)
    return resolved, [w for w in caught if issubclass(w.category, PlanWarning)]


# -- the plan -------------------------------------------------------------------------


def test_block_16_means_16_consecutive_inputs_of_one_output_unit():
    rule = LayerRule("fc", method="block", block=16, target=0.9)
    assert rule.block == (16, 1) == (LITERT_BLOCK, 1)
    plan = PruningPlan([rule])
    assert PruningPlan.from_yaml(plan.to_yaml()) == plan
    assert PruningPlan.from_dict({"rules": [{"match": "fc", "method": "block", "block": 16,
                                             "target": 0.9}]}) == plan
    resolved, caught = plan_warnings(plan, dense_model())
    assert caught == []
    row = resolved["fc"]
    assert (row.method, row.block, row.target, row.method_label) == ("block", (16, 1), 0.9,
                                                                      "block 16x1")
    assert "block 16x1" in str(resolved) and "block 16x1" in str(plan)


def test_block_sparse_preset_prunes_every_dense_but_the_head():
    resolved, caught = plan_warnings(PruningPlan.block_sparse(0.8), tiny_cnn())
    assert caught == []
    assert [(r.name, r.method, r.block) for r in resolved.pruned] == [
        ("dense_a", "block", (16, 1))]
    assert resolved["head"].reason == "classifier head"


def test_blocks_the_converter_will_not_store_block_sparse_are_told():
    # 16 outputs of one input: tfmot prunes it, LiteRT's int8 converter ignores the blocks.
    plan = PruningPlan([LayerRule("fc", method="block", block=(1, 16), target=0.9)])
    resolved, caught = plan_warnings(plan, dense_model())
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'fc'" in message and "not runs of 16 consecutive inputs" in message
    assert "Use block=16" in message and "Received: block=(1, 16)" in message
    assert "not block-sparse in int8 .tflite" in resolved["fc"].reason
    assert "not block-sparse in int8" in str(resolved)
    # Any block height that is not a multiple of 16 (an unstructured rule with a block too).
    _, caught = plan_warnings(PruningPlan([LayerRule("fc", block=(8, 1), target=0.5)]),
                              dense_model())
    assert len(caught) == 1
    _, caught = plan_warnings(PruningPlan([LayerRule("fc", method="block", block=(32, 2))]),
                              dense_model())
    assert caught == []


def test_a_dense_whose_inputs_are_not_a_multiple_of_16_is_told():
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(64, name="fc"),
                              keras.layers.Dense(10, name="head")])
    resolved, caught = plan_warnings(PruningPlan.block_sparse(0.9), model)
    assert len(caught) == 1
    assert "its 100 inputs are not a multiple of 16" in str(caught[0].message)
    assert "drops the weights of the last 4 inputs" in str(caught[0].message)
    assert "loses the partial last block" in resolved["fc"].reason


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="block"), r"block rule needs a block of more than one weight.*"
                               r"Received: method='block', block=\(1, 1\)"),
        (dict(method="block", block=0), r"`block` must be two positive integers.*"
                                        r"Received: block=0"),
        (dict(method="block", block=(16, 1, 1)), r"Received: block=\(16, 1, 1\)"),
        (dict(method="block", block="16"), r"Received: block='16'"),
    ],
)
def test_bad_block_rules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayerRule("fc", **kwargs)


def test_blocks_on_a_conv_are_refused_or_fall_back():
    with pytest.raises(ValueError, match=r"Layer 'conv_b' cannot take blocks of 16x1: kernel "
                                         r"has rank 4.*fallback='unstructured'"):
        PruningPlan([LayerRule("conv_b", method="block", block=16)]).resolve(tiny_cnn())
    with pytest.raises(ValueError, match=r"cannot take blocks of 1x4.*block=\(1, 1\)"):
        PruningPlan([LayerRule("conv_b", block=(1, 4))]).resolve(tiny_cnn())
    rule = LayerRule(".*", by="regex", method="block", block=16, target=0.5,
                     fallback="unstructured")
    resolved = PruningPlan([rule]).resolve(tiny_cnn())
    assert (resolved["conv_b"].method, resolved["conv_b"].block) == ("unstructured", (1, 1))
    assert "blocks impossible (kernel has rank 4" in resolved["conv_b"].reason
    assert resolved["dense_a"].method == "block"


# -- the check on the weights ---------------------------------------------------------


def test_block_violations_counts_blocks_only_partly_zero():
    assert masks.block_violations(np.array([[0.0, 0.0, 1.0, 0.0]]), (1, 2)) == 1
    assert masks.block_violations(np.array([[0.0, 0.0, 1.0, 2.0]]), (1, 2)) == 0
    # A partial edge block counts only its own values: [0] alone is a whole zero block.
    assert masks.block_violations(np.array([[1.0, 1.0, 0.0]]), (1, 2)) == 0
    kernel = masked_kernel((16, 1))
    assert masks.block_violations(kernel, (16, 1)) == 0
    assert masks.block_violations(kernel, (32, 1)) > 0
    with pytest.raises(ValueError, match=r"Received: shape=\(16,\)"):
        masks.block_violations(kernel, (16,))


def pruned_in_blocks(target):
    """dense_model's fc pruned by a block=16 rule to ``target`` (apply, fit, strip)."""
    plan = PruningPlan([LayerRule("fc", method="block", block=16, target=target)])
    rng = np.random.default_rng(0)
    x, y = inputs(128), rng.integers(0, 10, 128)
    pruned = kprune.apply(dense_model(), plan, steps_per_epoch=8, epochs=2)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=kprune.callbacks())
    return kprune.strip(pruned), plan


@pytest.fixture(scope="module")
def blocks_75():
    """(stripped model, plan): fc pruned to 75 % of its 16-input blocks. Do not modify."""
    return pruned_in_blocks(0.75)


@pytest.mark.slow
def test_export_warns_when_a_planned_block_layer_is_not_stored_block_sparse(tmp_path,
                                                                            blocks_75):
    final, _ = blocks_75
    with warnings.catch_warnings():
        warnings.simplefilter("error", export.BlockSparseWarning)
        path = int8_file(final, tmp_path / "ok.tflite", sparse=True)
    assert [t.shape for t in flatbuffer.tflite_tensors(path).block_sparse] == [(UNITS, INPUTS)]
    # Too few zero blocks: the converter keeps the kernel dense, and kprune says so.
    final, _ = pruned_in_blocks(0.2)
    with pytest.warns(export.BlockSparseWarning, match=r"the plan prunes \['fc'\] in blocks "
                                                       r"of 16 inputs, but the converter did not"):
        path = int8_file(final, tmp_path / "few.tflite", sparse=True)
    assert flatbuffer.tflite_tensors(path).block_sparse == []


def test_apply_fit_strip_gives_whole_zero_blocks_and_the_report_checks_them(blocks_75):
    final, plan = blocks_75
    rng = np.random.default_rng(0)
    report = kprune.sparsity_report(final, plan=plan, strict=True)
    row = report["fc"]
    assert row.block == (16, 1) and row.block_violations == 0 and row.ok
    assert row.achieved == pytest.approx(0.75, abs=1 / 64)
    assert "16x1 blocks ok" in str(report)
    assert report.to_dict()["layers"][0]["block"] == [16, 1]
    # The same sparsity, unstructured, is not in whole blocks: the check says so.
    final = copy_model(final)
    kernel = final.get_layer("fc").get_weights()[0]
    scattered = np.where(masks.magnitude(kernel + 1e-3 * rng.normal(size=kernel.shape), 0.75),
                         kernel, 0)
    final.get_layer("fc").set_weights([scattered, final.get_layer("fc").get_weights()[1]])
    report = kprune.sparsity_report(final, plan=plan)
    assert report["fc"].block_violations > 0 and not report.ok
    assert "blocks partly zero" in str(report)
    with pytest.raises(ValueError, match=r"fc: \d+ blocks partly zero"):
        kprune.sparsity_report(final, plan=plan, strict=True)


def test_keras3_engine_prunes_the_same_whole_blocks():
    import keras as keras3

    model = keras3.Sequential([keras3.Input((INPUTS,)),
                               keras3.layers.Dense(UNITS, activation="relu", name="fc"),
                               keras3.layers.Dense(10, name="head")])
    plan = PruningPlan([LayerRule("fc", method="block", block=16, target=0.75)])
    pruned = kprune.apply(model, plan, steps_per_epoch=8, epochs=2)
    pruned.compile(optimizer="adam",
                   loss=keras3.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = inputs(128), np.random.default_rng(0).integers(0, 10, 128)
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=kprune.callbacks(pruned))
    row = kprune.sparsity_report(kprune.strip(pruned), plan=plan, strict=True)["fc"]
    assert row.block == (16, 1) and row.block_violations == 0
    assert row.achieved == pytest.approx(0.75, abs=1 / 64)


def test_iterative_rounds_scale_a_block_rule_and_keep_whole_blocks():
    from kprune.methods import workflows

    rng = np.random.default_rng(0)
    trainer = workflows.Trainer(inputs(128), rng.integers(0, 10, 128), batch_size=16)
    plan = PruningPlan([LayerRule("fc", method="block", block=16, target=0.75)])
    result = workflows.iterative(dense_model(), plan, trainer=trainer, rounds=2,
                                 ladder="linear")
    assert [r.sparsity["fc"] for r in result.history] == pytest.approx([0, 0.375, 0.75],
                                                                       abs=1 / 64)
    row = kprune.sparsity_report(result.model, plan=plan, strict=True)["fc"]
    assert row.block_violations == 0


def test_a_saved_block_model_keeps_its_plan(tmp_path, blocks_75):
    final, _ = blocks_75
    loaded = kprune.load_model(kprune.save_model(final, tmp_path / "blocks.keras"))
    assert loaded._kprune_plan["fc"].method == "block"
    assert loaded._kprune_plan["fc"].block == (16, 1)
    assert kprune.sparsity_report(loaded, strict=True)["fc"].block_violations == 0


# -- the file ---------------------------------------------------------------------------


def test_int8_sparse_file_is_block_sparse_and_runs_like_the_dense_int8_file(tmp_path):
    model = dense_model(masked_kernel((16, 1), 0.9))
    dense = int8_file(model, tmp_path / "dense-int8.tflite", sparse=False)
    sparse = int8_file(model, tmp_path / "block-int8.tflite", sparse=True)
    info = flatbuffer.tflite_tensors(sparse)
    fc = next(t for t in info.weights if t.shape == (UNITS, INPUTS))  # TFLite: [out, in]
    assert fc.stored_sparse and fc.block_map == (1,) and fc.block_size == (16,)
    assert fc.block == (1, 16) and fc.storage == "block 1x16"
    assert fc.sparsity == pytest.approx(0.9, abs=0.01)
    assert info.block_sparse == [fc] and info.to_dict()["block_sparse"] == [fc.name]
    assert fc.to_dict()["block_map"] == [1] and fc.to_dict()["block_size"] == [16]
    assert "block 1x16" in str(info) and "(1 block-sparse)" in str(info)
    # The FULLY_CONNECTED op reads the block-sparse weight itself (no DENSIFY).
    assert fc.op == "FULLY_CONNECTED" and info.densify_ops == 0
    dense_info = flatbuffer.tflite_tensors(dense)
    assert dense_info.block_sparse == [] and not dense_info.sparse_storage
    assert measure.file_sizes(sparse)["bytes"] < 0.5 * measure.file_sizes(dense)["bytes"]
    # Equal outputs, up to one output quantization step where the kernels round differently
    # (the dense file runs under XNNPACK, the block-sparse one on LiteRT's builtin kernel).
    x = inputs(64)
    ours, theirs = measure.predict_tflite(sparse, x), measure.predict_tflite(dense, x)
    step = measure.load_interpreter(dense).get_output_details()[0]["quantization"][0]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=step * 1.001)
    assert np.mean(ours == theirs) > 0.98
    # The weights read back from the file are the dense file's, zeros in the same places.
    values = flatbuffer.tflite_tensors(sparse, keep_values=True)[fc.name].values
    dense_fc = next(t for t in flatbuffer.tflite_tensors(dense, keep_values=True).weights
                    if t.shape == (UNITS, INPUTS))
    np.testing.assert_array_equal(values, dense_fc.values)


def test_blocks_of_16_outputs_are_not_stored_block_sparse(tmp_path):
    model = dense_model(masked_kernel((1, 16), 0.9))
    plan = PruningPlan([LayerRule("fc", method="block", block=(1, 16), target=0.9)])
    _, caught = plan_warnings(plan, model)  # kprune says so before training...
    assert "not runs of 16 consecutive inputs" in str(caught[0].message)
    info = flatbuffer.tflite_tensors(int8_file(model, tmp_path / "wrong.tflite", sparse=True))
    fc = next(t for t in info.weights if t.shape == (UNITS, INPUTS))
    assert fc.block is None and fc.block_map == () and fc.storage != "block 1x16"
    assert info.block_sparse == []  # ...and the file's table says so after export
    assert "block 1x16" not in str(info)


def test_the_converter_drops_a_partial_last_block(tmp_path):
    # Why the plan warns above: LiteRT's converter stores a 100-input kernel block-sparse
    # (blocks 0..5 of 16 inputs) and loses inputs 96..99. The reader reads the file as it
    # is (the partial block is allowed), so the lost weights show as zeros.
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(64, name="fc")])
    w = rng.normal(size=(100, 64)).astype(np.float32)
    kernel = np.where(masks.block(w, (16, 1), 0.9), w, 0)
    model.get_layer("fc").set_weights([kernel, np.zeros(64, np.float32)])
    data = rng.random((50, 100), dtype=np.float32)
    sparse = int8_file(model, tmp_path / "sparse.tflite", sparse=True, data=data)
    dense = int8_file(model, tmp_path / "dense.tflite", sparse=False, data=data)
    fc = flatbuffer.tflite_tensors(sparse, keep_values=True).weights[0]
    assert fc.block == (1, 16) and fc.shape == (64, 100)
    kept_tail = np.any(kernel[96:] != 0, axis=0)  # output units with weights in 96..99
    assert kept_tail.any()
    assert np.all(fc.values[kept_tail, 96:] == 0)
    dense_fc = flatbuffer.tflite_tensors(dense, keep_values=True).weights[0]
    np.testing.assert_array_equal(fc.values[:, :96], dense_fc.values[:, :96])
    x = rng.random((20, 100), dtype=np.float32)
    step = measure.load_interpreter(dense).get_output_details()[0]["quantization"][0]
    wrong = np.abs(measure.predict_tflite(sparse, x) - measure.predict_tflite(dense, x))
    assert wrong.max() > 5 * step


@pytest.mark.slow
def test_block_rule_on_mnist_apply_fit_strip_export(mnist_small, tmp_path, seeded):
    (x_train, y_train), (x_test, y_test) = mnist_small
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(name="flatten"),
         keras.layers.Dense(128, activation="relu", name="fc1"),
         keras.layers.Dense(10, name="head")],
        name="mlp",
    )
    plan = PruningPlan.block_sparse(0.9)
    epochs, batch = 3, 64
    steps = -(-len(x_train) // batch)
    pruned = kprune.apply(model, plan, steps_per_epoch=steps, epochs=epochs)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    pruned.fit(x_train, y_train, batch_size=batch, epochs=epochs, verbose=0,
               callbacks=kprune.callbacks())
    final = kprune.strip(pruned)
    report = kprune.sparsity_report(final, strict=True)  # the plan apply attached
    assert report["fc1"].block == (16, 1) and report["fc1"].block_violations == 0
    assert report["fc1"].achieved == pytest.approx(0.9, abs=0.01)
    path = int8_file(final, tmp_path / "fc1-block-int8.tflite", sparse=True, data=x_train[:200])
    info = flatbuffer.tflite_tensors(path)
    assert [t.shape for t in info.block_sparse] == [(128, 784)]
    assert info.block_sparse[0].block_size == (16,)
    # 10 % of fc1's blocks left after 3 epochs on 4,000 images: well above chance, and the
    # block-sparse int8 file scores what the Keras model scores.
    keras_accuracy = np.mean(final.predict(x_test, verbose=0).argmax(axis=1) == y_test)
    assert keras_accuracy > 0.8
    assert measure.evaluate_tflite(path, x_test, y_test) == pytest.approx(keras_accuracy,
                                                                          abs=0.01)
