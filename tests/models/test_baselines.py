"""Baseline models: registry, shapes, configs, saving and learning."""

import numpy as np
import pytest

import keras

from keras_mre.data import schema
from keras_mre.errors import ConfigError
from keras_mre.models import available_models
from keras_mre.models import build_model
from keras_mre.testing import random_batch

DIMS = {"text": 12, "audio": 5, "vision": 7}
BASELINES = ("lmf", "tfn", "ef_lstm", "mult", "misa", "mfn", "graph_mfn")
SMALL = {
    "lmf": {"hidden_dim": 8, "rank": 2},
    "tfn": {"hidden_dim": 8, "fusion_dim": 4, "post_fusion_dim": 8},
    "ef_lstm": {"hidden_dim": 8, "num_steps": 4},
    "mult": {"model_dim": 8, "num_heads": 2, "num_layers": 1, "memory_layers": 1},
    "misa": {"hidden_dim": 8, "max_steps": 4},
    "mfn": {"num_steps": 4, "lstm_dim": 4, "memory_dim": 6, "attention_dim": 6,
            "gate_dim": 6},
    "graph_mfn": {"num_steps": 4, "lstm_dim": 4, "memory_dim": 6,
                  "attention_dim": 6, "gate_dim": 6, "graph_dim": 6},
}


def small_model(name, dims=DIMS, num_classes=3, **overrides):
    options = dict(SMALL[name], seed=3)
    options.update(overrides)
    return build_model(name, feature_dims=dims, num_classes=num_classes, **options)


def test_every_baseline_is_registered():
    assert set(BASELINES) <= set(available_models())


@pytest.mark.parametrize("name", BASELINES)
def test_shapes_probabilities_and_empty_clips(name):
    model = small_model(name, num_classes=4)
    features, _ = random_batch(DIMS, 4, batch=5, max_len=6, seed=1)
    out = model(features, training=False)
    probabilities = keras.ops.convert_to_numpy(out[schema.OUTPUT_PROBABILITIES])
    assert probabilities.shape == (5, 4)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    assert model.config.MODEL_NAME == name
    # Time lengths may change from batch to batch; padding must not matter.
    # MulT's temporal convolution reads the zero padding the data contract
    # promises, so it gets zeros; the others must ignore any padding value.
    pad = 0.0 if name == "mult" else 7.0
    longer = {}
    for key, value in features.items():
        if value.ndim == 3:
            value = np.concatenate([value, np.full_like(value[:, :3], pad)], axis=1)
        longer[key] = value
    padded = keras.ops.convert_to_numpy(model(longer, training=False)["emotion"])
    np.testing.assert_allclose(padded, probabilities, atol=1e-5)


@pytest.mark.parametrize("name", BASELINES)
def test_keras_round_trip_gives_identical_predictions(name, tmp_path):
    model = small_model(name)
    features, _ = random_batch(DIMS, 3, batch=6, max_len=5, seed=2)
    before = model.predict(features, verbose=0)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded.predict(features, verbose=0)
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    np.testing.assert_array_equal(before["emotion"], after["emotion"])


def test_misa_loads_without_keras_bidirectional(tmp_path, monkeypatch):
    # Keras' Bidirectional copies its wrapped layer through serialization,
    # which inside load_model matches objects by id(), so loading a saved
    # MISA failed now and then ("Forward layer and backward layer should
    # have different `go_backwards` value"). MISA builds its bidirectional
    # LSTMs from two LSTM layers instead.
    model = small_model("misa")
    features, _ = random_batch(DIMS, 3, batch=6, max_len=5, seed=2)
    before = model.predict(features, verbose=0)
    path = tmp_path / "misa.keras"
    model.save(path)

    def refuse(*args, **kwargs):
        raise AssertionError("keras.layers.Bidirectional used")

    monkeypatch.setattr(keras.layers.Bidirectional, "__init__", refuse)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        before["emotion"], loaded.predict(features, verbose=0)["emotion"]
    )


@pytest.mark.parametrize("return_sequences", [False, True])
def test_misa_bidirectional_lstm_matches_keras_bidirectional(return_sequences):
    from keras_mre.models.misa import _bidirectional_lstm

    frames = np.random.default_rng(4).normal(size=(3, 6, 5)).astype("float32")
    inputs = keras.Input((6, 5))
    ours = keras.Model(
        inputs,
        [t for t in _bidirectional_lstm(inputs, 4, "bi", return_sequences) if t is not None],
    )
    reference = keras.layers.Bidirectional(
        keras.layers.LSTM(4, return_sequences=return_sequences, return_state=True)
    )
    expected = reference(frames)
    ours.get_layer("bi_forward").set_weights(reference.forward_layer.get_weights())
    ours.get_layer("bi_backward").set_weights(reference.backward_layer.get_weights())
    got = ours(frames)
    expected = [expected[0], expected[1], expected[3]]  # sequence or h, h_fw, h_bw
    if not return_sequences:
        expected = expected[1:]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", BASELINES)
def test_two_modalities_and_other_names(name):
    dims = {"speech": 4, "face": 6}
    model = small_model(name, dims=dims)
    features, _ = random_batch(dims, 3, batch=4, max_len=5, seed=3)
    out = model(features)
    assert tuple(out["emotion"].shape) == (4, 3)


def test_config_round_trip_and_bad_values():
    for name in BASELINES:
        model = small_model(name)
        config = model.config
        assert type(config).from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="rank=0"):
        build_model("lmf", rank=0)
    for name in ("lmf", "tfn"):
        with pytest.raises(ConfigError, match="lstm_implementation='fast'"):
            build_model(name, lstm_implementation="fast")
        with pytest.raises(ConfigError, match="lstm_projection_dtype='half'"):
            build_model(name, lstm_projection_dtype="half")
        model = build_model(name, lstm_projection_dtype="bfloat16", compile=False)
        assert model.get_layer("text_encoder").projection_dtype == "bfloat16"
    with pytest.raises(ConfigError, match="num_heads=4: must divide model_dim=30"):
        build_model("mult", num_heads=4)
    with pytest.raises(ConfigError, match="fusion_dim=200"):
        build_model("tfn", fusion_dim=200)
    with pytest.raises(ConfigError, match="num_steps=0"):
        build_model("ef_lstm", num_steps=0)
    with pytest.raises(ConfigError, match="fusion_heads=3: must divide hidden_dim=128"):
        build_model("misa", fusion_heads=3)
    with pytest.raises(ConfigError, match="diff_weight=-1"):
        build_model("misa", diff_weight=-1.0)
    with pytest.raises(ConfigError, match="unknown config key 'rank'"):
        build_model("mult", rank=4)
    with pytest.raises(ConfigError, match="graph_mfn supports 1 to 6 modalities"):
        build_model("graph_mfn", feature_dims={f"m{i}": 2 for i in range(7)})


def test_missing_input_key_names_the_key():
    model = small_model("tfn")
    features, _ = random_batch(DIMS, 3, batch=2, max_len=3)
    del features["audio_length"]
    with pytest.raises(ConfigError, match="missing key 'audio_length'"):
        model(features)


def test_misa_reports_its_auxiliary_losses():
    model = small_model("misa")
    features, labels = random_batch(DIMS, 3, batch=8, max_len=5, seed=4)
    history = model.fit(features, labels, epochs=1, batch_size=8, verbose=0)
    for name in ("ce", "diff", "sim", "recon"):
        assert np.isfinite(history.history[name][0])
    assert history.history["sim"][0] > 0.0


def test_misa_difference_and_cmd_losses_match_numpy():
    from keras_mre.models.misa import _central_moment_discrepancy
    from keras_mre.models.misa import _difference_loss

    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 4)).astype("float32")
    b = rng.normal(size=(16, 3)).astype("float32")

    def normed(x):
        x = x - x.mean(0)
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)

    expected = np.mean((normed(a).T @ normed(b)) ** 2)
    got = keras.ops.convert_to_numpy(_difference_loss(a, b))
    np.testing.assert_allclose(got, expected, rtol=1e-4)

    c = rng.normal(size=(16, 4)).astype("float32") * 2 + 1
    expected = np.linalg.norm(a.mean(0) - c.mean(0))
    for k in range(2, 6):
        expected += np.linalg.norm(
            ((a - a.mean(0)) ** k).mean(0) - ((c - c.mean(0)) ** k).mean(0)
        )
    got = keras.ops.convert_to_numpy(_central_moment_discrepancy(a, c, 5))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    same = keras.ops.convert_to_numpy(_central_moment_discrepancy(a, a, 5))
    assert same < 1e-4


def make_task(n, num_classes, seed, informative, max_len=8):
    """Only the `informative` modality's frames depend on the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype("int32")
    prototypes = np.random.default_rng(7).normal(size=(num_classes, DIMS[informative]))
    features = {}
    for modality, dim in DIMS.items():
        lengths = rng.integers(2, max_len + 1, n).astype("int32")
        frames = rng.normal(size=(n, max_len, dim))
        if modality == informative:
            frames = 0.7 * frames + 1.5 * prototypes[labels][:, None, :]
        frames[np.arange(max_len)[None, :] >= lengths[:, None]] = 0.0
        features[modality] = frames.astype("float32")
        features[schema.length_key(modality)] = lengths
    return features, {"emotion": labels}


LEARN = {
    "lmf": {"hidden_dim": 16},
    "tfn": {"hidden_dim": 16, "fusion_dim": 8, "post_fusion_dim": 16},
    "ef_lstm": {"hidden_dim": 16, "num_steps": 4},
    "mult": {"model_dim": 12, "num_heads": 2, "num_layers": 1, "memory_layers": 1},
    "misa": {"hidden_dim": 16, "max_steps": 4},
    "mfn": {"num_steps": 4, "lstm_dim": 8, "memory_dim": 16},
    "graph_mfn": {"num_steps": 4, "lstm_dim": 8, "memory_dim": 16, "graph_dim": 16},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_learns_a_task_carried_by_one_modality(name):
    informative = "vision"
    train_x, train_y = make_task(384, 3, seed=0, informative=informative)
    test_x, test_y = make_task(192, 3, seed=1, informative=informative)
    model = build_model(name, feature_dims=DIMS, num_classes=3, seed=1, **LEARN[name])
    model.fit(train_x, train_y, epochs=12, batch_size=32, verbose=0)
    predictions = model.predict(test_x, verbose=0)["emotion"].argmax(-1)
    accuracy = float((predictions == test_y["emotion"]).mean())
    assert accuracy >= 0.8, accuracy


POOLED = {"mre": ("audio", "vision"), "lmf": ("audio", "vision"), "tfn": ("audio", "vision")}


@pytest.mark.parametrize("name", ("mre",) + BASELINES)
def test_pooled_modalities_give_the_same_outputs_pooled_once(name):
    from keras_mre.models import pooled_modalities

    model = (build_model("mre", feature_dims=DIMS, num_classes=3, hidden_dim=8, seed=3)
             if name == "mre" else small_model(name))
    expected = POOLED.get(name, ())
    assert model.pooled_modalities() == expected
    assert pooled_modalities(model.config) == expected
    if name in ("mre", "lmf"):
        custom = build_model(name, feature_dims=DIMS, num_classes=3, hidden_dim=8,
                             sequence_modalities=["text", "vision"])
        assert custom.pooled_modalities() == ("audio",)
    if not expected:
        return
    features, _ = random_batch(DIMS, 3, batch=5, max_len=6, seed=2)
    pooled = dict(features)
    for m in expected:  # what load_dataset(..., pool=...) yields
        lengths = features[f"{m}_length"]
        pooled[m] = features[m].sum(1, keepdims=True) / np.maximum(lengths, 1)[:, None, None]
        pooled[f"{m}_length"] = np.minimum(lengths, 1)
    full = model(features, training=False)
    once = model(pooled, training=False)
    for key in (schema.OUTPUT_PROBABILITIES, "logits"):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(once[key]), keras.ops.convert_to_numpy(full[key]),
            rtol=1e-4, atol=1e-5, err_msg=key,
        )


MMSA_STYLE_MULT = {
    "conv_kernel_sizes": {"text": 5, "audio": 1},
    "attention_dropout": 0.4,
    "source_attention_dropout": {"audio": 0.0, "vision": 0.25},
    "transformer_dropout": 0.0,
    "input_dropout": {"text": 0.3},
    "dropout": 0.5,
}


def test_mult_per_modality_kernels_and_dropouts(tmp_path):
    model = small_model("mult", **MMSA_STYLE_MULT)
    layers = {layer.name: layer for layer in model.layers}
    kernels = {m: layers[f"{m}_projection"].kernel_size[0] for m in DIMS}
    assert kernels == {"text": 5, "audio": 1, "vision": 3}
    attention = {name: layer.attention_dropout for name, layer in layers.items()
                 if "_to_" in name or name.endswith("_memory")}
    assert attention == {
        "audio_to_text": 0.0, "vision_to_text": 0.25,
        "text_to_audio": 0.4, "vision_to_audio": 0.25,
        "text_to_vision": 0.4, "audio_to_vision": 0.0,
        "text_memory": 0.4, "audio_memory": 0.4, "vision_memory": 0.4,
    }
    assert {layer.dropout for layer in layers.values()
            if "_to_" in layer.name or layer.name.endswith("_memory")} == {0.0}
    assert layers["text_dropout"].rate == 0.3
    assert "audio_dropout" not in layers and "vision_dropout" not in layers
    assert layers["residual_dropout"].rate == 0.5
    # Without transformer_dropout the transformers use `dropout`, as before.
    plain = small_model("mult", dropout=0.35)
    assert {layer.dropout for layer in plain.layers
            if layer.name.endswith("_memory")} == {0.35}
    # Input dropout acts in training only: text features change the training
    # output from call to call, and inference is deterministic.
    features, _ = random_batch(DIMS, 3, batch=4, max_len=6, seed=2)
    quiet = small_model("mult", input_dropout={"text": 0.5}, dropout=0.0,
                        attention_dropout=0.0)
    first = keras.ops.convert_to_numpy(quiet(features, training=True)["emotion"])
    second = keras.ops.convert_to_numpy(quiet(features, training=True)["emotion"])
    assert not np.allclose(first, second)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(quiet(features, training=False)["emotion"]),
        keras.ops.convert_to_numpy(quiet(features, training=False)["emotion"]),
    )
    config = model.config
    assert type(config).from_dict(config.to_dict()) == config
    path = tmp_path / "mult.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.config == config
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(features, training=False)["emotion"]),
        keras.ops.convert_to_numpy(model(features, training=False)["emotion"]),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"conv_kernel_sizes": {"txt": 3}},
         r"conv_kernel_sizes=\{'txt': 3\}: 'txt' is not a modality of feature_dims"),
        ({"conv_kernel_sizes": {"text": 0}},
         r"conv_kernel_sizes\['text'\]=0: expected a positive integer"),
        ({"source_attention_dropout": {"audio": 1.0}},
         r"source_attention_dropout\['audio'\]=1.0: expected a rate in \[0, 1\)"),
        ({"input_dropout": {"vision": "high"}},
         r"input_dropout\['vision'\]='high': expected a rate in \[0, 1\)"),
        ({"transformer_dropout": -0.1},
         r"transformer_dropout=-0.1: expected a rate in \[0, 1\)"),
        ({"input_dropout": [0.3]},
         r"input_dropout=\[0.3\]: expected dict, got list"),
    ],
)
def test_mult_per_modality_bad_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_model("mult", **overrides)
