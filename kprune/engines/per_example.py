"""Per-example gradients, a batch at a time: one compiled call per batch, or one example after
another where it fails (logged once).

Each engine's ``example_gradients`` (tf_keras, and Keras 3 on TensorFlow or JAX) builds a
function of a whole batch and one of a single example and hands both to :func:`per_batch`;
:func:`tensorflow_functions` builds them on TensorFlow for both engines.

Example:
    >>> from kprune.engines import engine_of
    >>> loss = engine.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> for grads in engine_of(model).example_gradients(model, loss, [(x, y)], [kernel]):
    ...     grads[id(kernel)].shape                  # 8 examples, a (4, 3) kernel
    (8, 4, 3)
"""

import logging

import numpy as np

__all__ = ["per_batch", "tensorflow_functions"]

logger = logging.getLogger("kprune")


def per_batch(batches, batched, single, variables):
    """For each ``(x, y)`` of ``batches``: ``{id(variable): gradients of each example}`` as
    numpy ``(len(y), *variable.shape)``.

    ``batched(x, y)`` gives the list of a batch's gradients (one per variable, the examples
    on the first axis); ``single(x, y)`` those of one example (``x`` and ``y`` with a batch
    axis of 1). If ``batched`` fails, every example is taken alone from then on (the
    failure is logged once).
    """
    alone = False
    for x, y in batches:
        found = None
        if not alone:
            try:
                found = [np.asarray(g) for g in batched(x, y)]
            except Exception as err:  # logged, then the per-example loop
                alone = True
                logger.warning("Per-example gradients could not be taken a batch at a time "
                               "(%s: %s); taking them one example at a time instead.",
                               type(err).__name__, (str(err).splitlines() or [""])[0])
        if found is None:
            each = [single(_take(x, i), y[i:i + 1]) for i in range(len(y))]
            found = [np.stack([np.asarray(g[k]) for g in each]) for k in range(len(variables))]
        yield {id(v): g for v, g in zip(variables, found)}


def tensorflow_functions(call, loss_fn, variables):
    """``(batched, single)`` for :func:`per_batch` on TensorFlow: the gradient of
    ``loss_fn(y, call(x))`` on one example with respect to ``variables`` (``tf.Variable``),
    alone, or for each example of a batch in one traced graph (``tf.map_fn``, any batch
    size).

    Not ``tf.vectorized_map``: its batched Dense on a sequence is a matmul of shape
    ``(n, 1, m, k) @ (k, p)``, which TensorFlow 2.21's oneDNN kernels get wrong (garbage,
    then a crash of the process), so the graph loops over the examples instead.
    """
    from kprune.engines.tfkeras.loader import tf

    def single(x, y):
        with tf.GradientTape() as tape:
            tape.watch(variables)
            loss = loss_fn(y, call(x))
        return [tf.zeros_like(v) if g is None else g
                for v, g in zip(variables, tape.gradient(loss, variables))]

    def one(example):  # an example without its batch axis
        return single(*tf.nest.map_structure(lambda t: t[None], example))

    signature = [tf.TensorSpec(v.shape, v.dtype) for v in variables]
    batched = tf.function(lambda x, y: tf.map_fn(one, (x, y), fn_output_signature=signature),
                          reduce_retracing=True)
    return batched, single


def _take(x, i):
    """Example ``i`` of a batch (an array or a dict of arrays), keeping its batch axis."""
    return {name: part[i:i + 1] for name, part in x.items()} if isinstance(x, dict) \
        else x[i:i + 1]
