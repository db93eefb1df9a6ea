"""Optimizers of keras-mre."""

from keras_mre.optimizers.fused_adam import FusedAdam

__all__ = ["FusedAdam"]
