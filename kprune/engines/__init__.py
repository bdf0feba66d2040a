"""The tf_keras engine, on tfmot: wrap a model as a plan says, the callbacks ``fit``
needs, strip and verify, save and load. Handed a Keras 3 model, each of these passes it to
the Keras 3 engine in :mod:`kprune.engines.keras3` (same plans, schedules and reports).

Example:
    >>> from kprune.engines import wrap, verify
    >>> pruned = wrap.apply(model, plan, steps_per_epoch=100, epochs=2)
"""
