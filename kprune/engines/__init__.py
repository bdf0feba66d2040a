"""The tf_keras engine, on tfmot: wrap a model as a plan says, the callbacks ``fit``
needs, strip and verify, save and load.

Example:
    >>> from kprune.engines import wrap, verify
    >>> pruned = wrap.apply(model, plan, steps_per_epoch=100, epochs=2)
"""
