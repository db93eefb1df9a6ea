"""Turn TensorFlow read failures inside `fit` / `predict` into `DataError`s.

A damaged shard is only noticed when tf.data reaches it, deep inside a Keras
loop, where TensorFlow reports it with its own op names and no file name.
`explain_read_errors` catches those errors, re-reads the splits with
`verify_dataset` (which names the shard file, the record index and the
field) and raises its `DataError` instead.
"""

import contextlib

from keras_mre.data.reader import verify_dataset
from keras_mre.errors import DataError


@contextlib.contextmanager
def explain_read_errors(path, splits):
    """Context manager: a tf.data read failure becomes a precise `DataError`.

    Args:
        path: Data set directory (or `DatasetInfo`) being read.
        splits: The splits read inside the block.

    Raises:
        DataError: from `verify_dataset` when the data set is damaged, or one
            naming the data set and TensorFlow's first message line when the
            records verify but reading still failed.
    """
    import tensorflow as tf

    try:
        yield
    except (
        tf.errors.DataLossError,
        tf.errors.InvalidArgumentError,
        tf.errors.FailedPreconditionError,
    ) as error:
        verify_dataset(path, [s for s in splits if s is not None])
        first_line = (error.message or str(error)).strip().splitlines()[0]
        raise DataError(
            f"{path}: reading split(s) {', '.join(s for s in splits if s)} failed: {first_line}"
        ) from None
