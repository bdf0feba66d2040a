"""tfmot's pruning wrapper as kprune builds and saves it: the same layer, with a config that
keeps ``sparsity_m_by_n``.

Example:
    >>> from kprune.engines.tfkeras.wrapper import PruneLowMagnitude
    >>> isinstance(kprune.apply(model, steps_per_epoch=10, epochs=1).layers[1],
    ...            PruneLowMagnitude)
    True
"""

from kprune.engines.tfkeras import loader

__all__ = ["PruneLowMagnitude"]


@loader.keras.utils.register_keras_serializable(package="kprune")
class PruneLowMagnitude(loader.PruneLowMagnitude):
    """tfmot's pruning wrapper (same name, same behaviour) whose config keeps ``sparsity_m_by_n``.

    tfmot's own ``get_config`` drops it, so a saved and reloaded 2:4 layer silently
    becomes an unstructured one. Everything else is tfmot's.
    """

    def get_config(self):
        config = super().get_config()
        config["sparsity_m_by_n"] = (
            None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n)
        )
        return config
