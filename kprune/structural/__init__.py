"""Structural pruning: physically remove neurons and filters, giving a smaller dense model.

Every function takes a tf_keras or a Keras 3 (``import keras``, any of the TensorFlow and
JAX backends) Sequential or functional model and returns a model of the same Keras.

Example:
    >>> from kprune import structural
    >>> keep = structural.select_units(model, {"conv2": 0.5, "fc1": 0.5})
    >>> smaller = structural.remove_units(model, keep)
    >>> print(structural.groups(resnet))               # functional models: coupled groups
    >>> smaller = structural.prune(resnet, 0.5, round_to=8)
    >>> print(structural.select(transformer, 0.5))      # heads and neurons; what is left whole
    >>> smaller = structural.drop_blocks(resnet, 2, criterion="l1")  # whole residual blocks
    >>> shorter = structural.drop_blocks(bert, 1, unit="transformer",  # whole transformer
    ...                                  criterion="influence", data=x)  # blocks
"""

from kprune.structural.blocks import Block, block_scores, drop_blocks, residual_blocks
from kprune.structural.correct import TooFewRows, correct, refitted_layers
from kprune.structural.graph import Group, Groups, Member, groups
from kprune.structural.importance import (
    LeftWhole,
    Selection,
    channel_costs,
    group_scores,
    prune,
    select,
)
from kprune.structural.rebuild import dead_channels
from kprune.structural.units import (
    nonzero_units,
    remove_units,
    select_units,
    summary,
    unit_scores,
)

__all__ = ["unit_scores", "select_units", "nonzero_units", "remove_units", "summary", "channel_costs",
           "groups", "Group", "Groups", "Member", "group_scores", "select", "prune", "Selection", "LeftWhole",
           "dead_channels", "correct", "refitted_layers", "TooFewRows", "Block", "residual_blocks", "block_scores", "drop_blocks"]
