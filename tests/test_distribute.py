"""tf.distribute: apply, callbacks, strip and reports under MirroredStrategy; the recipe key."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kprune
from kprune.experiments.recipe import Recipe, RecipeError

HELPER = Path(__file__).parent / "distributed_run.py"


def one_device_strategy():
    """MirroredStrategy on this process's one CPU: mirrored variables, as on many devices
    (writing the masks in cross-replica context fails there too: 'tuple indices must be
    integers or slices, not MirroredVariable'); two devices need a fresh process, see below."""
    from kprune.engines.tfkeras import loader

    return loader.tf.distribute.MirroredStrategy(["/cpu:0"])


@pytest.mark.slow
def test_a_model_built_in_a_strategy_is_pruned_stripped_and_reported_in_it(seeded):
    from kprune.engines import distribute
    from kprune.engines.callbacks import wrapped_layers
    from kprune.experiments import models
    from kprune.methods.trainer import compile_classifier

    strategy = one_device_strategy()
    with strategy.scope():
        model = models.build("lenet-300-100")
    plan = kprune.PruningPlan.default()
    pruned = kprune.apply(model, plan, steps_per_epoch=4, epochs=2)
    assert distribute.strategy_of(pruned) is strategy
    assert type(pruned.get_layer("prune_low_magnitude_fc1").pruning_vars[0][1]).__name__ == (
        "MirroredVariable")
    compile_classifier(pruned)
    x = np.random.default_rng(0).random((64, 28, 28, 1)).astype("float32")
    y = np.arange(64) % 10
    history = pruned.fit(x, y, batch_size=16, epochs=2, verbose=0,
                         callbacks=kprune.callbacks(strict=True))
    assert history.history["sparsity/fc1"] == [0.5, 0.5]
    for _, wrapper in wrapped_layers(pruned):
        masks = distribute.replica_values(wrapper.pruning_vars[0][1])
        assert all((m == masks[0]).all() for m in masks)
    final = kprune.strip(pruned)  # raised "tuple indices must be integers ... MirroredVariable"
    assert distribute.strategy_of(final) is strategy
    report = kprune.sparsity_report(final, strict=True)
    assert report["fc1"].n_m_violations == 0 and report["fc1"].achieved == 0.5


def test_a_custom_training_loop_prunes_under_a_strategy(seeded):
    """strategy.run steps, PruningStepper writing the masks at epoch ends (inside the strategy's
    scope there too)."""
    from kprune.engines.tfkeras import loader
    from kprune.experiments import models

    tf, keras = loader.tf, loader.keras
    strategy = one_device_strategy()
    with strategy.scope():
        model = models.build("lenet-300-100")
    pruned = kprune.apply(model, steps_per_epoch=4, epochs=2)
    with strategy.scope():
        optimizer = keras.optimizers.Adam()
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=keras.losses.Reduction.NONE)
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (rng.random((64, 28, 28, 1)).astype("float32"), np.arange(64) % 10)).batch(16)
    batches = strategy.experimental_distribute_dataset(data)

    @tf.function
    def train_step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                value = tf.nn.compute_average_loss(loss(y, pruned(x, training=True)),
                                                   global_batch_size=16)
            grads = tape.gradient(value, pruned.trainable_variables)
            optimizer.apply_gradients(zip(grads, pruned.trainable_variables))

        strategy.run(replica_step, args=(x, y))

    with kprune.PruningStepper(pruned) as stepper:
        for _ in range(2):
            for x, y in batches:
                train_step(x, y)
            stepper.end_epoch()
    report = kprune.sparsity_report(kprune.strip(pruned), strict=True)
    assert report["fc1"].achieved == 0.5 and report["fc1"].n_m_violations == 0


def test_apply_moves_a_plain_model_into_the_strategy_given(seeded):
    from kprune.engines import distribute
    from kprune.experiments import models

    strategy = one_device_strategy()
    model = models.build("lenet-300-100")
    pruned = kprune.apply(model, steps_per_epoch=4, epochs=1, strategy=strategy)
    assert distribute.strategy_of(model) is None
    assert distribute.strategy_of(pruned) is strategy
    assert type(pruned.weights[0]).__name__ == "MirroredVariable"


@pytest.mark.slow
def test_iterative_and_rewind_run_and_end_in_the_models_strategy(seeded):
    """Round 2 prunes round 1's stripped model, rewind's FixedMask writes mirrored kernels
    (gradual runs under two strategies below)."""
    from kprune.engines import distribute
    from kprune.experiments import models
    from kprune.methods import workflows

    strategy = one_device_strategy()
    with strategy.scope():
        model = models.build("lenet-300-100")
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 28, 28, 1)).astype("float32"), rng.integers(0, 10, 200)
    trainer = workflows.Trainer(x, y, validation_data=(x[:50], y[:50]), batch_size=50, seed=0)
    results = [workflows.iterative(model, 0.8, trainer=trainer, rounds=2),
               workflows.rewind(model, 0.8, trainer=trainer, epochs=1)]
    for result in results:
        assert distribute.strategy_of(result.model) is strategy, result.workflow
        assert result.report()["fc1"].achieved == pytest.approx(0.8, abs=0.01), result.workflow


def test_an_unknown_strategy_is_refused(tmp_path, monkeypatch):
    from kprune.engines import distribute

    with pytest.raises(ValueError, match=r"Unknown strategy 'tpu': must be one of "
                                         r"\['mirrored', 'multi-worker'\]"):
        distribute.make("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"'multi-worker' reads the cluster from the "
                                         r"TF_CONFIG environment variable, which is not set"):
        distribute.make("multi-worker")
    path = tmp_path / "recipe.yaml"
    path.write_text("model: lenet-5\ndistribute:\n  strategy: horovod\n")
    with pytest.raises(RecipeError, match=r"Key `distribute.strategy` \(line 3\) must be one "
                                          r"of \['mirrored', 'multi-worker'\]\. Received: "
                                          r"distribute.strategy='horovod'"):
        Recipe.load(path)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_workers(command_of):
    """Run ``command_of(index)`` (helper arguments) as two workers on 127.0.0.1 with their
    TF_CONFIG; returns what each printed."""
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(2)]}
    workers = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config)}
        workers.append(subprocess.Popen([sys.executable, str(HELPER), *command_of(index)],
                                        env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))
    try:
        printed = [worker.communicate(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, (_, errors) in zip(workers, printed):
        assert worker.returncode == 0, errors[-3000:]
    return [out for out, _ in printed]


def launch(strategy, recipe, out):
    """Run ``kprune run`` under ``strategy``: one process on two logical CPU devices
    (mirrored), or two worker processes on 127.0.0.1 (multi-worker, TF_CONFIG); returns
    the run folders (one per worker) and what the first printed."""
    command = ["run", str(recipe), "--out"]
    if strategy == "mirrored":
        done = subprocess.run([sys.executable, str(HELPER), *command, str(out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return [out], done.stdout
    printed = two_workers(lambda index: [*command, str(out / f"worker{index}")])
    return [out / f"worker{index}" for index in range(2)], printed[0]


@pytest.mark.slow
def test_workers_a_checkpoint_apart_resume_from_the_same_one(tmp_path):
    """Worker 1 was killed while writing checkpoint 3, which worker 0 finished: both go
    on from checkpoint 2."""
    from kprune.methods.checkpoints import Checkpoints

    for index, count in ((0, 3), (1, 2)):
        store = Checkpoints(tmp_path / f"worker{index}")
        for epoch in range(1, count + 1):
            store.save(f"prune-r0-epoch{epoch}", {"model": [np.zeros(2)]}, {"epoch": epoch})
    printed = two_workers(lambda index: ["agree", str(tmp_path / f"worker{index}")])
    assert [line.split()[-1] for line in printed] == ["0002-prune-r0-epoch2"] * 2
    assert not (tmp_path / "worker0" / "0003-prune-r0-epoch3").exists()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["mirrored", "multi-worker"])
def test_kprune_run_under_a_strategy(tmp_path, mnist_dir, strategy):
    """Real MNIST, 348 steps on two replicas: the plan of a plain run, 2:4 verified, > 90 %;
    the two workers of a multi-worker run end with the same model."""
    from kprune.experiments import models

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
model: lenet-300-100
data: {mnist_dir}
subset: {{train: 4000, test: 1000}}
validation: 300
baseline: {{epochs: 1, batch_size: 32}}
workflow: {{name: gradual, epochs: 2}}
export: {{variants: [float], latency_repeats: 1}}
distribute: {{strategy: {strategy}}}
""")
    folders, printed = launch(strategy, recipe, tmp_path / "run")
    assert f"{strategy} strategy over 2 replicas" in printed

    plain = kprune.PruningPlan.default().resolve(models.build("lenet-300-100"),
                                                  steps_per_epoch=116, epochs=2)
    finals = []
    for out in folders:
        assert json.loads((out / "plan.json").read_text()) == plain.to_dict()
        final = kprune.load_model(out / "pruned.keras")
        report = kprune.sparsity_report(final, strict=True)
        assert [r.name for r in report.rows if r.n == 2 and r.m == 4] == ["fc1", "fc2"]
        assert all(report[name].n_m_violations == 0 for name in ("fc1", "fc2"))
        result = json.loads((out / "report.json").read_text())
        pruned = next(v for v in result["variants"] if v["name"] == "pruned/float")
        assert pruned["accuracy"] > 0.9
        last = result["extra"]["history"][-1]
        assert last["sparsity"]["fc1"] == 0.5 and last["stage"] == "prune"
        finals.append(final.get_weights())
    for weights in finals[1:]:
        for got, want in zip(weights, finals[0]):
            np.testing.assert_array_equal(got, want)
