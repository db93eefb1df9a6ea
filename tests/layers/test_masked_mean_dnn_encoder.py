import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.errors import ConfigError
from keras_mre.layers import MaskedMeanDNNEncoder


def numpy_reference(layer, frames, lengths):
    mask = (np.arange(frames.shape[1])[None, :] < lengths[:, None]).astype("float64")
    total = np.einsum("bt,btd->bd", mask, frames)
    x = total / np.maximum(mask.sum(1, keepdims=True), 1.0)
    gamma, beta = [np.asarray(w) for w in layer.norm.weights]
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    x = (x - mean) / np.sqrt(var + layer.norm.epsilon) * gamma + beta
    for i, dense in enumerate(layer.dense_layers):
        kernel, bias = [np.asarray(w) for w in dense.weights]
        x = x @ kernel + bias
        x = np.tanh(x) if i == len(layer.dense_layers) - 1 else np.maximum(x, 0)
    return x


def make_inputs(batch=5, steps=7, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(batch, steps, dim)).astype("float32")
    lengths = np.array([7, 3, 1, 5, 2][:batch], dtype="int32")
    frames[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
    return frames, lengths


def test_matches_numpy_reference():
    layer = MaskedMeanDNNEncoder(6)
    frames, lengths = make_inputs()
    out = layer(frames, lengths)
    assert out.shape == (5, 6)
    np.testing.assert_allclose(
        np.asarray(out), numpy_reference(layer, frames, lengths), atol=1e-5
    )


def test_padding_changes_nothing():
    layer = MaskedMeanDNNEncoder(6)
    frames, lengths = make_inputs()
    rng = np.random.default_rng(1)
    padded = np.concatenate(
        [frames, rng.normal(size=(5, 9, 4)).astype("float32")], axis=1
    )
    garbage = rng.normal(size=frames.shape).astype("float32")
    invalid = np.arange(7)[None, :] >= lengths[:, None]
    padded[:, :7][invalid] = garbage[invalid]
    np.testing.assert_allclose(
        np.asarray(layer(padded, lengths)), np.asarray(layer(frames, lengths)), atol=1e-6
    )


def test_zero_valid_frames_give_finite_output():
    layer = MaskedMeanDNNEncoder(6)
    frames, _ = make_inputs()
    out = np.asarray(layer(frames, np.zeros(5, "int32")))
    assert np.isfinite(out).all()


def test_every_weight_gets_gradient():
    layer = MaskedMeanDNNEncoder(6, dropout=0.1)
    frames, lengths = make_inputs()
    layer(frames, lengths)
    with tf.GradientTape() as tape:
        out = layer(frames, lengths, training=True)
        loss = tf.reduce_sum(out * tf.random.normal(out.shape, seed=1))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == 2 + 2 * 3
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


def test_get_config_round_trip():
    layer = MaskedMeanDNNEncoder(6, num_layers=2, dropout=0.3, normalize=False)
    clone = MaskedMeanDNNEncoder.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.num_layers == 2 and clone.norm is None


def test_keras_file_round_trip(tmp_path):
    frames_in = keras.Input((None, 4))
    lengths_in = keras.Input((), dtype="int32")
    out = MaskedMeanDNNEncoder(6)(frames_in, lengths_in)
    model = keras.Model([frames_in, lengths_in], out)
    frames, lengths = make_inputs()
    path = tmp_path / "encoder.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        loaded.predict([frames, lengths], verbose=0),
        model.predict([frames, lengths], verbose=0),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [({"units": 0}, "units=0"), ({"units": 4, "num_layers": 0}, "num_layers=0")],
)
def test_bad_sizes_raise(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MaskedMeanDNNEncoder(**kwargs)
