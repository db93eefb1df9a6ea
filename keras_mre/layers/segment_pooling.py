"""Masked mean pooling of a variable-length sequence into a fixed number of steps."""

import numbers

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mre")
class SegmentPooling(keras.layers.Layer):
    """Averages the valid frames of each sequence into `num_steps` segments.

    Unaligned modalities have different frame rates and lengths; models that
    need one time axis shared by every modality (EF-LSTM, MFN, Graph-MFN)
    resample each modality onto `num_steps` steps. For a sequence with `n`
    valid frames, step `s` (0-based) is the mean of frames
    `floor(s * n / S) <= t < max(floor((s + 1) * n / S), floor(s * n / S) + 1)`,
    so every step of a non-empty sequence covers at least one frame (short
    sequences repeat frames). A sequence with `n = 0` pools to zeros; padded
    frames never reach the output, even NaN or inf ones.

    Args:
        num_steps: int, the number of output steps `S`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        frames: `[batch, time, dim]` zero-padded frames.
        lengths: `[batch]` number of valid frames (clipped to `[0, time]`).

    Returns:
        `[batch, num_steps, dim]`.
    """

    def __init__(self, num_steps, **kwargs):
        super().__init__(**kwargs)
        if (isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral)
                or num_steps < 1):
            raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
        self.num_steps = int(num_steps)

    def call(self, frames, lengths):
        time = ops.shape(frames)[1]
        lengths = ops.cast(lengths, "int32")
        lengths = ops.minimum(ops.maximum(lengths, 0), time)
        steps = ops.arange(self.num_steps, dtype="int32")
        n = ops.expand_dims(lengths, 1)
        start = (steps[None, :] * n) // self.num_steps
        end = ops.maximum(((steps[None, :] + 1) * n) // self.num_steps, start + 1)
        end = ops.minimum(end, n)
        t = ops.arange(time, dtype="int32")[None, None, :]
        inside = ops.logical_and(
            t >= ops.expand_dims(start, 2), t < ops.expand_dims(end, 2)
        )
        weights = ops.cast(inside, frames.dtype)
        counts = ops.maximum(ops.sum(weights, axis=2, keepdims=True), 1.0)
        # A zero weight times a NaN or inf padded frame is still NaN: the
        # padded frames are zeroed before the product.
        valid = ops.arange(time, dtype="int32")[None, :, None] < n[:, :, None]
        frames = ops.where(valid, frames, ops.zeros_like(frames))
        return ops.matmul(weights / counts, frames)

    def compute_output_shape(self, frames_shape, lengths_shape=None):
        return (frames_shape[0], self.num_steps, frames_shape[2])

    def get_config(self):
        config = super().get_config()
        config["num_steps"] = self.num_steps
        return config
