"""Cross-replica helpers for losses that need the whole global batch.

This is the only module of the model code that touches `tf.distribute`. On
other backends, outside a strategy, or during Keras' symbolic build (when no
replica context exists) every helper is the identity.
"""

import keras


def _replica_context():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def num_replicas():
    """Replicas taking part in the current step (1 outside a strategy)."""
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def all_gather(x):
    """`x` from every replica concatenated along axis 0, in replica order.

    Inside a `tf.distribute` replica context with more than one replica the
    result is the global batch and gradients flow back to each replica's own
    slice; anywhere else `x` is returned unchanged.
    """
    context = _replica_context()
    if context is None:
        return x
    return context.all_gather(x, axis=0)
