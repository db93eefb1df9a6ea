import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre.errors import RunError
from keras_mre.models import build_model
from keras_mre.models import load_model
from keras_mre.models.mre import MREModel
from keras_mre.testing import random_batch

DIMS = {"text": 6, "audio": 4, "vision": 5}


@pytest.fixture(scope="module")
def model():
    return build_model(feature_dims=DIMS, num_classes=3, hidden_dim=8, seed=0)


@pytest.fixture(scope="module")
def batch():
    return random_batch(DIMS, num_classes=3, batch=8, max_len=5, seed=1)


def test_outputs_follow_the_contract(model, batch):
    features, _ = batch
    out = model.predict(features, verbose=0)
    assert out["emotion"].shape == (8, 3)
    assert out["relevance"].shape == (8, 3)
    assert out["unimodal"].shape == (8, 3, 3)
    assert out["multimodal"].shape == (8, 3)
    assert out["embeddings"].shape == (8, 3, 8)
    np.testing.assert_allclose(out["emotion"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["relevance"].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        out["emotion"], keras.ops.convert_to_numpy(keras.ops.softmax(out["logits"])), atol=1e-6
    )
    assert isinstance(model, MREModel)
    assert model.get_layer("text_encoder").__class__.__name__ == "LSTMEncoder"
    assert model.get_layer("audio_encoder").__class__.__name__ == "MaskedMeanDNNEncoder"


def test_padding_changes_no_output(model, batch):
    features, _ = batch
    rng = np.random.default_rng(5)
    padded = {}
    for modality in DIMS:
        frames = features[modality]
        lengths = features[f"{modality}_length"]
        longer = np.concatenate(
            [frames, rng.normal(size=(8, 4, DIMS[modality])).astype("float32")], axis=1
        )
        invalid = np.arange(longer.shape[1])[None, :] >= lengths[:, None]
        longer[invalid] = rng.normal(size=longer.shape)[invalid]
        padded[modality] = longer
        padded[f"{modality}_length"] = lengths
    a = model.predict(features, verbose=0)
    b = model.predict(padded, verbose=0)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


def test_zero_length_clips_give_finite_outputs_loss_and_gradients(model, batch):
    features, labels = batch
    empty = dict(features)
    for modality in DIMS:
        empty[f"{modality}_length"] = np.zeros(8, "int32")
        empty[modality] = np.zeros_like(features[modality])
    with tf.GradientTape() as tape:
        out = model(empty, training=True)
        loss = model.compute_loss(empty, labels, out)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())
    assert np.isfinite(float(loss))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads if g is not None)


def test_time_axis_of_zero_frames_gives_finite_outputs(model):
    empty = {}
    for modality, dim in DIMS.items():
        empty[modality] = np.zeros((2, 0, dim), "float32")
        empty[f"{modality}_length"] = np.zeros(2, "int32")
    out = model(empty)
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())
    np.testing.assert_allclose(np.asarray(out["emotion"]).sum(-1), 1.0, atol=1e-5)


def test_every_trainable_weight_gets_a_gradient(batch):
    features, labels = batch
    model = build_model(feature_dims=DIMS, num_classes=3, hidden_dim=8, dropout=0.0, seed=3)
    with tf.GradientTape() as tape:
        out = model(features, training=True)
        loss = model.compute_loss(features, labels, out)
    grads = tape.gradient(loss, model.trainable_weights)
    assert len(grads) == len(model.trainable_weights) > 20
    for weight, grad in zip(model.trainable_weights, grads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


def test_fit_reports_each_loss_part_and_metrics(batch):
    features, labels = batch
    model = build_model(feature_dims=DIMS, num_classes=3, hidden_dim=8, seed=4)
    history = model.fit(features, labels, batch_size=4, epochs=2, verbose=0)
    logs = {k: v[-1] for k, v in history.history.items()}
    assert set(logs) == {"loss", "ce", "rs", "cnce", "accuracy", "f1_weighted"}
    assert logs["loss"] == pytest.approx(logs["ce"] + logs["rs"] + logs["cnce"], rel=1e-4)
    evaluated = model.evaluate(features, labels, batch_size=8, return_dict=True, verbose=0)
    assert set(evaluated) == set(logs)
    assert 0.0 <= evaluated["f1_weighted"] <= 1.0


def test_ablation_switches_and_loss_weights(batch):
    features, labels = batch
    ablated = build_model(
        feature_dims=DIMS, num_classes=3, hidden_dim=8, seed=4,
        use_rs_loss=False, use_cnce_loss=False,
    )
    assert ablated.metrics_names == ["loss", "ce", "accuracy", "f1_weighted"]

    def terms(**weights):
        m = build_model(feature_dims=DIMS, num_classes=3, hidden_dim=8, seed=4, **weights)
        out = m(features, training=False)
        total = m.compute_loss(features, labels, out, training=False)
        return float(total), {k: float(t.result()) for k, t in m.loss_trackers.items()}

    total, base = terms()
    assert total == pytest.approx(base["ce"] + base["rs"] + base["cnce"], rel=1e-5)
    _, weighted = terms(ce_weight=0.5, rs_weight=2.0, cnce_weight=0.0)
    assert weighted["ce"] == pytest.approx(0.5 * base["ce"], rel=1e-5)
    assert weighted["rs"] == pytest.approx(2.0 * base["rs"], rel=1e-5)
    assert weighted["cnce"] == 0.0
    ablated_total = ablated.compute_loss(
        features, labels, ablated(features, training=False), training=False
    )
    assert float(ablated_total) == pytest.approx(base["ce"], rel=1e-5)


def test_missing_unimodal_labels_fall_back_to_multimodal(model, batch):
    features, labels = batch
    out = model(features, training=False)
    only = {"emotion": labels["emotion"]}
    unknown = dict(only, **{f"emotion_{m}": np.full(8, -1, "int32") for m in DIMS})
    as_tensor = labels["emotion"]
    values = []
    for y in (only, unknown, as_tensor):
        model.loss_trackers["rs"].reset_state()
        model.compute_loss(features, y, out, training=False)
        values.append(float(model.loss_trackers["rs"].result()))
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert values[0] == pytest.approx(values[2], rel=1e-6)


def test_keras_file_round_trip_gives_identical_predictions(model, batch, tmp_path):
    features, labels = batch
    path = tmp_path / "mre.keras"
    model.save(path)
    loaded = load_model(path)
    assert isinstance(loaded, MREModel)
    assert loaded.config == model.config
    expected = model.predict(features, verbose=0)
    actual = loaded.predict(features, verbose=0)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    assert loaded.compiled
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables) > 2
    plain = keras.saving.load_model(path, compile=False)
    np.testing.assert_array_equal(
        plain.predict(features, verbose=0)["emotion"], expected["emotion"]
    )
    with pytest.raises(RunError, match="missing.keras: model file not found"):
        load_model(tmp_path / "missing.keras")
    assert float(loaded.optimizer.learning_rate) == pytest.approx(model.config.learning_rate)


def test_tf_saved_model_export_keeps_names_and_predictions(model, batch, tmp_path):
    features, _ = batch
    export_dir = str(tmp_path / "export")
    model.export(export_dir, format="tf_saved_model", verbose=False)
    restored = tf.saved_model.load(export_dir)
    signature = restored.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert set(inputs) == set(features)
    assert inputs["audio"].shape.as_list() == [None, None, 4]
    assert inputs["audio_length"].dtype == tf.int32
    served = restored.serve(features)
    expected = model.predict(features, verbose=0)
    for key in ("emotion", "relevance", "unimodal"):
        np.testing.assert_allclose(np.asarray(served[key]), expected[key], atol=1e-6)
    shorter = {k: (v[:, :3] if v.ndim == 3 else np.minimum(v, 3)) for k, v in features.items()}
    assert restored.serve(shorter)["emotion"].shape == (8, 3)
    explicit_dir = str(tmp_path / "explicit")
    model.export(
        explicit_dir,
        format="tf_saved_model",
        input_signature=[model.input_signature()],
        verbose=False,
    )
    explicit = tf.saved_model.load(explicit_dir)
    assert explicit.serve(features)["emotion"].shape == (8, 3)


@pytest.mark.parametrize(
    "dims",
    [
        {"face": 3, "voice": 2},
        {"text": 5, "audio": 2, "vision": 3, "physio": 4},
    ],
)
def test_any_number_of_modalities(dims):
    model = build_model(feature_dims=dims, num_classes=4, hidden_dim=8, seed=5)
    features, labels = random_batch(dims, num_classes=4, batch=6, max_len=3, seed=2)
    with tf.GradientTape() as tape:
        out = model(features, training=True)
        loss = model.compute_loss(features, labels, out)
    grads = tape.gradient(loss, model.trainable_weights)
    assert np.isfinite(float(loss))
    assert all(g is not None for g in grads)
    assert out["relevance"].shape == (6, len(dims))
    assert out["unimodal"].shape == (6, len(dims), 4)


def test_missing_input_key_raises_config_error(model, batch):
    features, _ = batch
    broken = {k: v for k, v in features.items() if k != "audio_length"}
    with pytest.raises(ConfigError, match="missing key 'audio_length'"):
        model.predict(broken, verbose=0)


def test_wrong_feature_dim_raises_config_error(model, batch):
    features, labels = batch
    broken = dict(features, vision=np.zeros((8, 5, 7), "float32"))
    message = r"feature dim 7 does not match feature_dims\['vision'\]=5"
    with pytest.raises(ConfigError, match=message):
        model(broken)
    with pytest.raises(ConfigError, match="feature dim 7"):
        model.fit(broken, labels, epochs=1, verbose=0)
    with pytest.raises(ConfigError, match=r"expected frames \[batch, time, 6\]"):
        model(dict(features, text=np.zeros((8, 6), "float32")))


def test_missing_label_raises_data_error(model, batch):
    features, labels = batch
    broken = {k: v for k, v in labels.items() if k != "emotion"}
    with pytest.raises(DataError, match="missing key 'emotion'"):
        model.evaluate(features, broken, verbose=0)


def test_extra_input_keys_are_ignored(model, batch):
    features, _ = batch
    extra = dict(features, id=np.arange(8))
    np.testing.assert_array_equal(
        model.predict(extra, verbose=0)["emotion"], model.predict(features, verbose=0)["emotion"]
    )
