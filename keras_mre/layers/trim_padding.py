"""Cuts a padded batch of sequences to the longest clip it holds."""

import keras
from keras import ops


def _xla_compiling():
    """True while TensorFlow traces a function it will compile with XLA.

    XLA needs static shapes, so a slice whose size is a tensor cannot be
    compiled; `tf.function(jit_compile=True)` (and Keras' `jit_compile`)
    traces inside an XLA control-flow context, which this detects. Where
    this TensorFlow has no such check, it answers True: the sequence is
    then never cut, which is slower but never wrong.
    """
    import tensorflow as tf

    try:
        from tensorflow.python.ops import control_flow_util
        in_xla = control_flow_util.GraphOrParentsInXlaContext
    except (ImportError, AttributeError):
        return True
    return bool(in_xla(tf.compat.v1.get_default_graph()))


@keras.saving.register_keras_serializable(package="keras_mre")
class TrimPadding(keras.layers.Layer):
    """Drops the time steps after the longest valid clip of the batch.

    Data sets pad every clip to the modality's maximum length (500 audio
    frames on MOSEI), and a batch whose longest clip has 300 frames still
    carries 500. Layers that mask padding (`CrossmodalTransformer`) give
    the same result on the batch cut to `max(lengths)` steps, at a cost
    that falls with the time axis (the attention maps quadratically). This
    layer makes that cut.

    The cut changes shapes from batch to batch, which only TensorFlow
    graphs outside XLA support: on the TensorFlow backend (eager, in
    `tf.function`, in SavedModels) the sequence is sliced; inside a
    function compiled with XLA (`jit_compile=True`) and on the JAX and
    PyTorch backends it is returned whole. Either way the steps that go
    are padding, so what the layers after it compute for the valid frames
    does not change. At least one step is kept. (No equation of the MulT
    paper: the cut only saves the work spent on padding.)

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        sequence: `[batch, time, dim]` padded frames.
        lengths: `[batch]` int, valid frames per clip.

    Returns:
        `[batch, time', dim]` with `time' = clip(max(lengths), 1, time)`
        (`time' = time` where the cut is not made).
    """

    def call(self, sequence, lengths):
        if keras.config.backend() != "tensorflow" or _xla_compiling():
            return sequence
        time = ops.shape(sequence)[1]
        longest = ops.max(ops.cast(lengths, "int32"), initial=1)
        return sequence[:, : ops.minimum(longest, time)]

    def compute_output_shape(self, sequence_shape, lengths_shape=None):
        if keras.config.backend() != "tensorflow":
            return tuple(sequence_shape)
        return (sequence_shape[0], None) + tuple(sequence_shape[2:])
