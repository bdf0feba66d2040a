"""The seed tutorial end to end: baseline fit, default plan, pruning fit, strip, verify.

Example:
    >>> from kprune.demo import run_demo
    >>> summary = run_demo("kprune-demo", data_dir="path/to/mnist")
"""

import json
import math
import time
from pathlib import Path

import numpy as np

from kprune import data, models
from kprune.keras_callbacks import callbacks
from kprune.plan import PruningPlan
from kprune.saving import save_model
from kprune.verify import sparsity_report, strip
from kprune.wrap import apply

__all__ = ["run_demo", "QUICK", "FULL"]

# (train images, test images, baseline epochs, pruning epochs)
QUICK = dict(n_train=6000, n_test=2000, baseline_epochs=1, pruning_epochs=1)
FULL = dict(n_train=None, n_test=None, baseline_epochs=2, pruning_epochs=2)


def run_demo(out_dir, *, data_dir=None, full=False, epochs=None, batch_size=64, seed=0,
             log=print):
    """Run the seed recipe and write ``summary.json``, the plan and models to ``out_dir``.

    Args:
        out_dir: folder for the results (created).
        data_dir: MNIST folder of IDX files or an ``.npz``; None finds the best available.
        full: all of MNIST and more epochs, instead of the quick subset.
        epochs: override the pruning epochs (the baseline gets as many).
    """
    from kprune import _compat

    settings = dict(FULL if full else QUICK)
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"Argument `epochs` must be a positive integer. Received: epochs={epochs!r}")
        settings.update(baseline_epochs=epochs, pruning_epochs=epochs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = _load(data_dir, settings, seed)
    log(f"kprune demo: {len(x_train):,} training / {len(x_test):,} test images")

    _compat.keras.utils.set_random_seed(seed)
    baseline = models.compile_classifier(models.seed_cnn())
    log(f"[1/4] baseline fit, {settings['baseline_epochs']} epoch(s)")
    baseline.fit(x_train, y_train, batch_size=batch_size, epochs=settings["baseline_epochs"],
                 verbose=2)
    baseline_acc = _accuracy(baseline, x_test, y_test)

    plan = PruningPlan.default()
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    resolved = plan.resolve(baseline, steps_per_epoch=steps_per_epoch,
                            epochs=settings["pruning_epochs"])
    log("[2/4] resolved plan\n" + str(resolved))
    pruned = apply(baseline, plan, steps_per_epoch=steps_per_epoch,
                   epochs=settings["pruning_epochs"])
    models.compile_classifier(pruned)
    log(f"[3/4] pruning fit, {settings['pruning_epochs']} epoch(s)")
    pruned.fit(x_train, y_train, batch_size=batch_size, epochs=settings["pruning_epochs"],
               verbose=2, callbacks=callbacks())
    final = strip(pruned)
    models.compile_classifier(final)
    pruned_acc = _accuracy(final, x_test, y_test)
    report = sparsity_report(final, plan=resolved)
    log("[4/4] sparsity report\n" + str(report))

    save_model(baseline, out / "baseline.keras")
    save_model(final, out / "pruned.keras")
    plan.to_json(out / "plan.json")
    summary = {
        "baseline_accuracy": baseline_acc,
        "pruned_accuracy": pruned_acc,
        "accuracy_delta_pp": 100 * (pruned_acc - baseline_acc),
        "train_images": int(len(x_train)),
        "test_images": int(len(x_test)),
        "seconds": round(time.perf_counter() - started, 1),
        "resolved_plan": resolved.to_dict(),
        "sparsity": report.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(
        f"accuracy: dense {baseline_acc:.4f} -> pruned {pruned_acc:.4f} "
        f"({summary['accuracy_delta_pp']:+.2f} pp); "
        f"{report.weights / max(report.nonzero, 1):.2f}x fewer non-zero kernel weights"
    )
    log(f"wrote {out}/summary.json, plan.json, baseline.keras, pruned.keras")
    return summary


def _load(data_dir, settings, seed):
    train, test = data.load_mnist(data_dir)
    n_train = settings["n_train"] or len(train[0])
    n_test = settings["n_test"] or len(test[0])
    if n_train < len(train[0]) or n_test < len(test[0]):
        train, test = data.subset((train, test), min(n_train, len(train[0])),
                                  min(n_test, len(test[0])), seed=seed)
    return train, test


def _accuracy(model, x, y):
    predictions = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == y))
