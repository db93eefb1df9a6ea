import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.errors import ConfigError
from keras_mre.layers import RelevanceAttention


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def numpy_reference(layer, bag):
    """Eq 3 per head, M1 / M2 per modality, P_m head and eq 4, sample by sample."""
    w = {v.name: np.asarray(v, "float64") for v in layer.weights}
    batch, modalities, width = bag.shape
    heads = layer.num_heads
    dk = width // heads
    out = {k: [] for k in ("relevance", "unimodal", "multimodal", "embeddings")}
    for x in bag.astype("float64"):
        q, k, v = x @ w["query_kernel"], x @ w["key_kernel"], x @ w["value_kernel"]
        a = np.zeros_like(x)
        for h in range(heads):
            cols = slice(h * dk, (h + 1) * dk)
            scores = softmax(q[:, cols] @ k[:, cols].T / np.sqrt(dk))  # eq 3
            a[:, cols] = scores @ v[:, cols]
        logits = np.zeros(modalities)
        unimodal = np.zeros((modalities, layer.num_classes))
        for m in range(modalities):
            hidden = np.maximum(
                a[m] @ w["relevance_hidden_kernel"][m] + w["relevance_hidden_bias"][m], 0
            )
            logits[m] = hidden @ w["relevance_kernel"][m] + w["relevance_bias"][m]
            hidden = np.maximum(
                a[m] @ w["class_hidden_kernel"][m] + w["class_hidden_bias"][m], 0
            )
            unimodal[m] = hidden @ w["class_kernel"][m] + w["class_bias"][m]
        relevance = softmax(logits)
        pooled = relevance @ a
        out["relevance"].append(relevance)
        out["unimodal"].append(unimodal)
        out["multimodal"].append(pooled @ w["multimodal_kernel"] + w["multimodal_bias"])
        out["embeddings"].append(relevance[:, None] * x)  # eq 4
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("modalities, heads", [(3, 1), (2, 2), (4, 4)])
def test_matches_numpy_reference(modalities, heads):
    bag = np.random.default_rng(0).normal(size=(5, modalities, 8)).astype("float32")
    layer = RelevanceAttention(3, num_heads=heads, hidden_units=6)
    out = layer(bag)
    reference = numpy_reference(layer, bag)
    assert out["relevance"].shape == (5, modalities)
    assert out["unimodal"].shape == (5, modalities, 3)
    assert out["multimodal"].shape == (5, 3)
    assert out["embeddings"].shape == (5, modalities, 8)
    for key, value in reference.items():
        np.testing.assert_allclose(np.asarray(out[key]), value, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(np.asarray(out["relevance"]).sum(-1), 1.0, atol=1e-6)


def test_every_weight_gets_gradient():
    bag = np.random.default_rng(1).normal(size=(6, 3, 8)).astype("float32")
    layer = RelevanceAttention(3)
    layer(bag)
    with tf.GradientTape() as tape:
        out = layer(bag)
        loss = sum(
            tf.reduce_sum(out[k] * tf.random.normal(tf.shape(out[k]), seed=i))
            for i, k in enumerate(("relevance", "unimodal", "multimodal", "embeddings"))
        )
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == 13
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


def test_config_and_keras_file_round_trip(tmp_path):
    layer = RelevanceAttention(4, num_heads=2, hidden_units=5)
    clone = RelevanceAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    bag_in = keras.Input((3, 8))
    model = keras.Model(bag_in, RelevanceAttention(4, num_heads=2)(bag_in))
    bag = np.random.default_rng(2).normal(size=(4, 3, 8)).astype("float32")
    model.save(tmp_path / "attention.keras")
    loaded = keras.saving.load_model(tmp_path / "attention.keras")
    expected = model.predict(bag, verbose=0)
    actual = loaded.predict(bag, verbose=0)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key])


def test_bad_arguments_raise():
    with pytest.raises(ConfigError, match="num_classes=1"):
        RelevanceAttention(1)
    with pytest.raises(ConfigError, match="num_heads=0"):
        RelevanceAttention(3, num_heads=0)
    with pytest.raises(ConfigError, match="num_heads=3"):
        RelevanceAttention(3, num_heads=3)(np.zeros((2, 3, 8), "float32"))
    with pytest.raises(ConfigError, match="modalities=1"):
        RelevanceAttention(3)(np.zeros((2, 1, 8), "float32"))
