import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.errors import ConfigError
from keras_mre.layers import LowRankFusion


def full_tensor_reference(layer, vectors):
    """Eq 1-2 through the full fusion tensor.

    Builds Z = z_1 (x) ... (x) z_M with z_m = [s_m, 1] (eq 1) and the full
    weight tensor W = sum_r w_r W_1^(r) (x) ... (x) W_M^(r), then
    F = <W, Z> + b (eq 2); the layer must compute the same without ever
    forming either tensor.
    """
    factors = [np.asarray(f, "float64") for f in layer.factors]
    fusion_weights = np.asarray(layer.fusion_weights, "float64")
    bias = np.asarray(layer.bias, "float64")
    outputs = []
    for sample in zip(*vectors):
        z = [np.append(s, 1.0) for s in sample]
        out = np.array(bias)
        for u in range(layer.units):
            total = 0.0
            for index in itertools.product(*[range(len(v)) for v in z]):
                tensor_z = np.prod([z[m][i] for m, i in enumerate(index)])
                weight = sum(
                    fusion_weights[r]
                    * np.prod([factors[m][r, i, u] for m, i in enumerate(index)])
                    for r in range(layer.rank)
                )
                total += weight * tensor_z
            out[u] += total
        outputs.append(out)
    return np.stack(outputs)


def test_list_input_matches_full_tensor_eq_1_2():
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=(3, d)).astype("float32") for d in (2, 3, 2)]
    layer = LowRankFusion(2, rank=3)
    layer.build([v.shape for v in vectors])
    # Random weights everywhere, including the constant rows.
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    out = np.asarray(layer(vectors))
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out, full_tensor_reference(layer, vectors), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("modalities", [2, 3, 5])
def test_stacked_input_equals_list_input(modalities):
    bag = np.random.default_rng(1).normal(size=(4, modalities, 3)).astype("float32")
    layer = LowRankFusion(3, rank=2)
    stacked = np.asarray(layer(bag))
    listed = np.asarray(layer([bag[:, m] for m in range(modalities)]))
    np.testing.assert_allclose(stacked, listed, atol=1e-6)
    assert len(layer.factors) == modalities


def test_constant_rows_start_at_one():
    layer = LowRankFusion(3, rank=2)
    layer.build([(None, 4), (None, 5)])
    np.testing.assert_array_equal(np.asarray(layer.factors[0])[:, 4, :], 1.0)
    np.testing.assert_array_equal(np.asarray(layer.factors[1])[:, 5, :], 1.0)


def test_factors_fusion_weights_and_bias_all_trained():
    bag = np.random.default_rng(2).normal(size=(4, 3, 3)).astype("float32")
    layer = LowRankFusion(2, rank=2)
    layer(bag)
    names = {w.name for w in layer.trainable_weights}
    assert names == {"factor_0", "factor_1", "factor_2", "fusion_weights", "bias"}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(bag) * tf.constant([[1.0, -2.0]]))
    grads = tape.gradient(loss, layer.trainable_weights)
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


def test_config_and_keras_file_round_trip(tmp_path):
    layer = LowRankFusion(5, rank=7)
    assert LowRankFusion.from_config(layer.get_config()).get_config() == layer.get_config()
    inputs = [keras.Input((2,)), keras.Input((4,))]
    model = keras.Model(inputs, LowRankFusion(3, rank=2)(inputs))
    data = [np.ones((2, 2), "float32"), np.arange(8, dtype="float32").reshape(2, 4)]
    model.save(tmp_path / "fusion.keras")
    loaded = keras.saving.load_model(tmp_path / "fusion.keras")
    np.testing.assert_array_equal(
        loaded.predict(data, verbose=0), model.predict(data, verbose=0)
    )


def test_bad_arguments_raise():
    with pytest.raises(ConfigError, match="rank=0"):
        LowRankFusion(3, rank=0)
    with pytest.raises(ConfigError, match="units=0"):
        LowRankFusion(0)
    with pytest.raises(ConfigError, match="at least 2"):
        LowRankFusion(3)(np.zeros((2, 1, 4), "float32"))
