import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.errors import ConfigError
from keras_mre.losses import RelevantSemanticLoss


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def numpy_eq5(labels, relevance, unimodal, multimodal):
    """Eq 5 sample by sample, unknown unimodal labels -> multimodal label."""
    out = []
    for i in range(len(labels)):
        y_m = labels[i, 0]
        total = -log_softmax(multimodal[i])[y_m]
        for s in range(relevance.shape[1]):
            y_s = labels[i, 1 + s] if labels[i, 1 + s] >= 0 else y_m
            total += (1 + relevance[i, s]) * -log_softmax(unimodal[i, s])[y_s]
        out.append(total)
    return np.array(out)


def make_case(batch=6, modalities=3, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    relevance = rng.dirichlet(np.ones(modalities), size=batch).astype("float32")
    unimodal = rng.normal(size=(batch, modalities, classes)).astype("float32")
    multimodal = rng.normal(size=(batch, classes)).astype("float32")
    labels = rng.integers(0, classes, size=(batch, 1 + modalities)).astype("int32")
    labels[::2, 1] = -1
    labels[1, 1:] = -1
    return labels, relevance, unimodal, multimodal


def test_matches_numpy_eq5_per_sample():
    labels, relevance, unimodal, multimodal = make_case()
    loss = RelevantSemanticLoss(reduction=None)
    y_pred = {"relevance": relevance, "unimodal": unimodal, "multimodal": multimodal}
    np.testing.assert_allclose(
        np.asarray(loss(labels, y_pred)),
        numpy_eq5(labels, relevance, unimodal, multimodal),
        rtol=1e-5,
    )
    mean = RelevantSemanticLoss()(labels, y_pred)
    np.testing.assert_allclose(
        float(mean), numpy_eq5(labels, relevance, unimodal, multimodal).mean(), rtol=1e-5
    )


def test_packed_tensor_equals_dict():
    labels, relevance, unimodal, multimodal = make_case(modalities=4, classes=2)
    loss = RelevantSemanticLoss(reduction=None)
    packed = RelevantSemanticLoss.pack(relevance, unimodal, multimodal)
    assert packed.shape == (6, 4 + 4 * 2 + 2)
    y_dict = {"relevance": relevance, "unimodal": unimodal, "multimodal": multimodal}
    np.testing.assert_allclose(
        np.asarray(loss(labels, packed)), np.asarray(loss(labels, y_dict)), rtol=1e-6
    )


def test_multimodal_labels_only_fall_back_everywhere():
    labels, relevance, unimodal, multimodal = make_case()
    only = labels[:, 0]
    fallback = labels.copy()
    fallback[:, 1:] = -1
    y_pred = {"relevance": relevance, "unimodal": unimodal, "multimodal": multimodal}
    loss = RelevantSemanticLoss(reduction=None)
    np.testing.assert_allclose(
        np.asarray(loss(only, y_pred)), np.asarray(loss(fallback, y_pred)), rtol=1e-6
    )


@pytest.mark.parametrize("relevance_gradient", [False, True])
def test_relevance_gradient_flag(relevance_gradient):
    labels, relevance, unimodal, multimodal = make_case()
    relevance = tf.Variable(relevance)
    unimodal = tf.Variable(unimodal)
    loss = RelevantSemanticLoss(relevance_gradient=relevance_gradient)
    with tf.GradientTape() as tape:
        value = loss(
            labels,
            {"relevance": relevance, "unimodal": unimodal, "multimodal": multimodal},
        )
    grad_h, grad_u = tape.gradient(value, [relevance, unimodal])
    assert float(tf.reduce_max(tf.abs(grad_u))) > 0
    if relevance_gradient:
        assert grad_h is not None and float(tf.reduce_max(tf.abs(grad_h))) > 0
        # d/dH_s of the mean loss is CE_s / batch.
        ce = -np.take_along_axis(
            log_softmax(np.asarray(unimodal)),
            np.where(labels[:, 1:] >= 0, labels[:, 1:], labels[:, :1])[..., None],
            -1,
        )[..., 0]
        np.testing.assert_allclose(np.asarray(grad_h), ce / len(labels), rtol=1e-5)
    else:
        assert grad_h is None or float(tf.reduce_max(tf.abs(grad_h))) == 0


def test_usable_through_compile():
    labels, relevance, unimodal, multimodal = make_case(batch=8, modalities=2, classes=3)
    packed = np.asarray(RelevantSemanticLoss.pack(relevance, unimodal, multimodal))
    inputs = keras.Input((packed.shape[1],))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss=RelevantSemanticLoss())
    value = model.evaluate(packed, labels, batch_size=8, verbose=0)
    np.testing.assert_allclose(
        value, numpy_eq5(labels, relevance, unimodal, multimodal).mean(), rtol=1e-5
    )


def test_config_and_keras_file_round_trip(tmp_path):
    loss = RelevantSemanticLoss(relevance_gradient=True, name="rs", reduction="sum")
    clone = RelevantSemanticLoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    inputs = keras.Input((2 + 2 * 3 + 3,))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(optimizer="sgd", loss=loss)
    model.save(tmp_path / "rs.keras")
    loaded = keras.saving.load_model(tmp_path / "rs.keras")
    restored = loaded.loss
    assert isinstance(restored, RelevantSemanticLoss)
    assert restored.relevance_gradient is True


def test_bad_inputs_raise():
    labels, relevance, unimodal, multimodal = make_case()
    loss = RelevantSemanticLoss()
    with pytest.raises(ConfigError, match="missing key 'multimodal'"):
        loss(labels, {"relevance": relevance, "unimodal": unimodal})
    packed = RelevantSemanticLoss.pack(relevance, unimodal, multimodal)
    with pytest.raises(ConfigError, match="packed y_pred needs labels"):
        loss(labels[:, 0], packed)
    with pytest.raises(ConfigError, match="width 18"):
        loss(labels, packed[:, :-1])
