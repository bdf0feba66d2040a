"""Fisher scores taken one example at a time (one eager gradient each), the reference that
kprune's batched per-example gradients must equal; numpy and kprune only, so that a JAX
subprocess imports it too (``from tests.fisher_reference import per_example_fisher``)."""

import numpy as np

from kprune import structural
from kprune.structural import importance


def per_example_fisher(model, x):
    """``{group id: Fisher score of each unit}``: per example, alone, the gradient of its loss
    on the model's top class (``weight_gradients``), the signed ``w * grad`` sums of each unit
    squared, summed over the examples."""
    groups = [g for g in structural.groups(model) if g.removable]
    labels = np.argmax(np.asarray(model(x, training=False)), axis=-1)
    found = {g.id: np.zeros(g.size) for g in groups}
    for i in range(len(labels)):
        one = ({name: part[i:i + 1] for name, part in x.items()} if isinstance(x, dict)
               else x[i:i + 1])
        grads = importance._kernel_gradients(model, (one, labels[i:i + 1]))
        for group in groups:
            found[group.id] += importance._taylor(group, model, grads, signed=True) ** 2
    return found


def assert_same_scores(found, expected, rtol=1e-5):
    """The same groups, each score within ``rtol`` of the group's largest."""
    assert sorted(found) == sorted(expected)
    for key, scores in expected.items():
        assert found[key].shape == scores.shape, key
        assert np.abs(found[key] - scores).max() <= rtol * np.abs(scores).max(), key
