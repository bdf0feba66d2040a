"""The core: plans, schedules, what each layer prunes, and numpy masks.

Nothing here needs an engine: ``plan``, ``schedules`` and ``layers`` import TensorFlow
(through :mod:`kprune.engines.tfkeras.loader`) only inside the functions that inspect a
model, and ``masks`` is numpy only. Every other subpackage builds on this one.
"""
