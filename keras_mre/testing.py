"""Small random batches following the model input and label contract.

For tests and examples only: the values are noise, not emotions.

```python
features, labels = random_batch({"text": 16, "audio": 5}, num_classes=3)
model(features)
```
"""

import numpy as np

from keras_mre.data import schema


def random_batch(feature_dims, num_classes, batch=8, max_len=6, seed=0):
    """A random batch `(features, labels)` as the data pipeline yields it.

    Args:
        feature_dims: ordered mapping modality -> feature dimension.
        num_classes: number of classes.
        batch: number of samples.
        max_len: padded time length of every modality.
        seed: numpy seed.

    Returns:
        `features`: `{<m>: float32 [batch, max_len, D_m], <m>_length: int32
        [batch]}`, lengths drawn from `0..max_len` (sample 0 full length,
        sample 1 empty when `batch > 1`) and frames past a length set to 0.
        `labels`: `{"emotion": int32 [batch], "emotion_<m>": int32 [batch]}`
        with about a quarter of the unimodal labels -1 (unknown).
    """
    rng = np.random.default_rng(seed)
    features = {}
    for modality, dim in feature_dims.items():
        lengths = rng.integers(0, max_len + 1, size=batch).astype("int32")
        lengths[0] = max_len
        if batch > 1:
            lengths[1] = 0
        frames = rng.normal(size=(batch, max_len, dim)).astype("float32")
        frames[np.arange(max_len)[None, :] >= lengths[:, None]] = 0.0
        features[modality] = frames
        features[schema.length_key(modality)] = lengths
    labels = {schema.LABEL_KEY: rng.integers(0, num_classes, size=batch).astype("int32")}
    for modality in feature_dims:
        unimodal = rng.integers(0, num_classes, size=batch).astype("int32")
        unimodal[rng.random(batch) < 0.25] = schema.UNKNOWN_LABEL
        labels[schema.unimodal_label_key(modality)] = unimodal
    return features, labels
