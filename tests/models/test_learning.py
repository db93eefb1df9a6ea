"""MRE learns a task where one modality carries the label and finds it."""

import numpy as np
import pytest

from keras_mre.models import build_model

DIMS = {"text": 12, "audio": 6, "vision": 8}
INFORMATIVE = "audio"


def make_data(n, num_classes, seed, max_len=8):
    """Only `INFORMATIVE` frames depend on the label (class prototype + noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype("int32")
    prototypes = np.random.default_rng(99).normal(size=(num_classes, DIMS[INFORMATIVE]))
    features = {}
    for modality, dim in DIMS.items():
        lengths = rng.integers(1, max_len + 1, n).astype("int32")
        frames = rng.normal(size=(n, max_len, dim))
        if modality == INFORMATIVE:
            frames = 0.7 * frames + prototypes[labels][:, None, :]
        frames[np.arange(max_len)[None, :] >= lengths[:, None]] = 0.0
        features[modality] = frames.astype("float32")
        features[f"{modality}_length"] = lengths
    return features, {"emotion": labels}


@pytest.mark.slow
def test_mre_learns_and_weights_the_informative_modality():
    train_x, train_y = make_data(512, 3, seed=0)
    test_x, test_y = make_data(256, 3, seed=1)
    model = build_model(feature_dims=DIMS, num_classes=3, hidden_dim=32, seed=1)
    model.fit(train_x, train_y, epochs=15, batch_size=32, verbose=0)
    out = model.predict(test_x, verbose=0)
    accuracy = float((out["emotion"].argmax(-1) == test_y["emotion"]).mean())
    assert accuracy >= 0.9
    mean_relevance = out["relevance"].mean(axis=0)
    assert int(np.argmax(mean_relevance)) == list(DIMS).index(INFORMATIVE), mean_relevance
