"""Pruning methods built on an engine: the shared trainer, workflows (one-shot, gradual,
iterative, rewind), per-layer sensitivity and global allocation.
"""
