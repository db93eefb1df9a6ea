"""CrossmodalTransformer (MulT eq 2-4) against a numpy reference."""

import math

import keras
import numpy as np
import pytest

from keras_mre.layers.crossmodal_transformer import CrossmodalTransformer

DIM, HEADS = 8, 2


def _layer_norm(x, norm):
    gamma, beta = (np.asarray(w) for w in norm.weights)
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + norm.epsilon) * gamma + beta


def _dense(x, layer, relu=False):
    kernel, bias = (np.asarray(w) for w in layer.weights)
    y = x @ kernel + bias
    return np.maximum(y, 0.0) if relu else y


def _embed(x):
    time, dim = x.shape[1], x.shape[2]
    half = dim // 2
    frequencies = np.exp(-np.arange(half) * math.log(10000.0) / (half - 1))
    angles = np.arange(time)[:, None] * frequencies[None, :]
    table = np.concatenate([np.sin(angles), np.cos(angles)], -1)
    return x * math.sqrt(dim) + table[None]


def _reference(layer, target, source, source_lengths, noise=None):
    """MulT eq 2-4, one head at a time, padded source frames excluded. With
    `noise` (one `[batch, heads, target_time, source_time]` array of
    uniform draws per block), attention dropout keeps the weights whose
    draw is >= the rate and rescales them by 1 / (1 - rate)."""
    x = _embed(target)
    self_attention = source is None
    src = x if self_attention else _embed(source)
    head = DIM // HEADS
    for index in range(layer.num_layers):
        query = _layer_norm(x, layer.query_norms[index])
        context = query if self_attention else _layer_norm(
            src, layer.source_norms[index]
        )
        q = _dense(query, layer.query_projections[index])
        kv = _dense(context, layer.key_value_projections[index])
        k, v = kv[..., :DIM], kv[..., DIM:]
        attended = np.zeros_like(q)
        for b in range(x.shape[0]):
            n = int(source_lengths[b])
            if n == 0:
                continue  # nothing to attend to
            for h in range(HEADS):
                cols = slice(h * head, (h + 1) * head)
                scores = q[b, :, cols] @ k[b, :n, cols].T / math.sqrt(head)
                weights = np.exp(scores - scores.max(-1, keepdims=True))
                weights /= weights.sum(-1, keepdims=True)
                if noise is not None:
                    rate = layer.attention_dropout
                    keep = noise[index][b, h, :, :n] >= rate
                    weights = weights * keep / (1.0 - rate)
                attended[b, :, cols] = weights @ v[b, :n, cols]
        x = x + _dense(attended, layer.output_projections[index])
        hidden = _dense(
            _layer_norm(x, layer.ffn_norms[index]), layer.ffn_in[index], relu=True
        )
        x = x + _dense(hidden, layer.ffn_out[index])
    return _layer_norm(x, layer.final_norm)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(3, 5, DIM)).astype("float32")
    source = rng.normal(size=(3, 7, DIM)).astype("float32")
    target_lengths = np.array([5, 3, 4], "int32")
    source_lengths = np.array([7, 2, 0], "int32")  # the last clip: empty source
    return target, target_lengths, source, source_lengths


@pytest.mark.parametrize("self_attention", [False, True])
def test_matches_numpy_reference(self_attention):
    target, target_lengths, source, source_lengths = _inputs()
    layer = CrossmodalTransformer(DIM, HEADS, num_layers=2, dropout=0.0,
                                  attention_dropout=0.0)
    if self_attention:
        out = layer(target, target_lengths)
        expected = _reference(layer, target, None, target_lengths)
    else:
        out = layer(target, target_lengths, source, source_lengths)
        expected = _reference(layer, target, source, source_lengths)
    assert out.shape == target.shape
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected,
                               rtol=1e-4, atol=1e-4)


def test_padded_source_frames_do_not_matter():
    target, target_lengths, source, source_lengths = _inputs()
    layer = CrossmodalTransformer(DIM, HEADS, num_layers=1)
    out = layer(target, target_lengths, source, source_lengths)
    noisy = source.copy()
    for b, n in enumerate(source_lengths):
        noisy[b, n:] = 100.0
    out_noisy = layer(target, target_lengths, noisy, source_lengths)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out),
                               keras.ops.convert_to_numpy(out_noisy), atol=1e-5)


def test_attention_dropout_only_in_training():
    target, target_lengths, source, source_lengths = _inputs()
    layer = CrossmodalTransformer(DIM, HEADS, num_layers=1, dropout=0.0,
                                  attention_dropout=0.5)
    a = layer(target, target_lengths, source, source_lengths, training=True)
    b = layer(target, target_lengths, source, source_lengths, training=True)
    assert not np.allclose(keras.ops.convert_to_numpy(a),
                           keras.ops.convert_to_numpy(b))
    c = layer(target, target_lengths, source, source_lengths, training=False)
    expected = _reference(layer, target, source, source_lengths)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(c), expected,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("self_attention", [False, True])
def test_attention_dropout_matches_numpy_reference(self_attention, monkeypatch):
    # The draws are fixed, so the dropped weights and the rescaling (applied
    # to the values, not to the weights) can be checked exactly.
    target, target_lengths, source, source_lengths = _inputs()
    layer = CrossmodalTransformer(DIM, HEADS, num_layers=2, dropout=0.0,
                                  attention_dropout=0.4)
    rng = np.random.default_rng(7)
    draws = []

    def fixed_uniform(shape, dtype=None, seed=None, **unused):
        draws.append(rng.uniform(size=tuple(int(d) for d in shape)).astype("float32"))
        return keras.ops.convert_to_tensor(draws[-1])

    monkeypatch.setattr(keras.random, "uniform", fixed_uniform)
    if self_attention:
        out = layer(target, target_lengths, training=True)
        source, source_lengths = None, target_lengths
    else:
        out = layer(target, target_lengths, source, source_lengths, training=True)
    assert len(draws) == 2  # one per block
    expected = _reference(layer, target, source, source_lengths, noise=draws)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected,
                               rtol=1e-4, atol=1e-4)
    no_dropout = _reference(layer, target, source, source_lengths)
    assert not np.allclose(expected, no_dropout, atol=1e-3)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_attention_dropout_rate_must_be_below_one(rate):
    with pytest.raises(ValueError, match=rf"attention_dropout={rate}: expected a rate in \[0, 1\)"):
        CrossmodalTransformer(DIM, HEADS, num_layers=1, attention_dropout=rate)


def test_keras_round_trip(tmp_path):
    target, target_lengths, source, source_lengths = _inputs()
    t = keras.Input((5, DIM))
    tl = keras.Input((), dtype="int32")
    s = keras.Input((7, DIM))
    sl = keras.Input((), dtype="int32")
    layer = CrossmodalTransformer(DIM, HEADS, num_layers=2, ffn_multiplier=2,
                                  dropout=0.3, attention_dropout=0.2,
                                  name="crossed")
    model = keras.Model([t, tl, s, sl], layer(t, tl, s, sl))
    path = tmp_path / "crossed.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    inputs = [target, target_lengths, source, source_lengths]
    np.testing.assert_allclose(model.predict(inputs, verbose=0),
                               loaded.predict(inputs, verbose=0), atol=1e-6)
    config = loaded.get_layer("crossed").get_config()
    assert (config["dim"], config["num_heads"], config["num_layers"]) == (DIM, HEADS, 2)
    assert (config["ffn_multiplier"], config["dropout"],
            config["attention_dropout"]) == (2, 0.3, 0.2)


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match=r"num_heads=3 must divide dim=8"):
        CrossmodalTransformer(DIM, 3, num_layers=1)
