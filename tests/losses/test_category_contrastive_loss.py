import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.errors import ConfigError
from keras_mre.losses import CategoryContrastiveLoss


def numpy_eq7(labels, embeddings, tau, epsilon=1e-12):
    """Eq 6-7 written pair by pair, as a scalar for the batch.

    Phi is the cosine similarity; a (near) zero embedding has Phi = 0.
    """
    x = embeddings.astype("float64")
    norms = np.sqrt((x**2).sum(-1, keepdims=True))
    x = np.where(norms**2 > epsilon, x / np.maximum(norms, 1e-300), 0.0)
    n, modalities, _ = x.shape
    total = 0.0
    for s1 in range(modalities):
        for s2 in range(s1 + 1, modalities):
            for a, b in ((s1, s2), (s2, s1)):
                positives, negatives = [], []
                for i in range(n):
                    logits = np.array([x[i, a] @ x[j, b] / tau for j in range(n)])
                    p = np.exp(logits - logits.max())
                    p = p / p.sum()  # eq 6
                    for j in range(n):
                        if labels[i] == labels[j]:
                            positives.append(np.log(p[j]))
                        else:
                            negatives.append(np.log(max(1 - p[j], 1e-7)))
                term = -np.mean(positives)
                if negatives:
                    term -= np.mean(negatives)
                total += 0.5 * term
    return total


def case(batch=7, modalities=3, width=5, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(batch, modalities, width)).astype("float32")
    labels = rng.integers(0, classes, size=batch).astype("int32")
    return labels, embeddings


@pytest.mark.parametrize("modalities, tau", [(2, 0.5), (3, 0.1), (4, 1.0)])
def test_batch_mean_matches_numpy_eq7(modalities, tau):
    labels, embeddings = case(modalities=modalities)
    loss = CategoryContrastiveLoss(temperature=tau)
    np.testing.assert_allclose(
        float(loss(labels, embeddings)), numpy_eq7(labels, embeddings, tau), rtol=1e-5
    )
    per_sample = CategoryContrastiveLoss(temperature=tau, reduction=None)(labels, embeddings)
    assert per_sample.shape == (7,)
    np.testing.assert_allclose(
        float(np.mean(per_sample)), numpy_eq7(labels, embeddings, tau), rtol=1e-5
    )


def test_single_class_batch_and_singleton_class_are_finite():
    _, embeddings = case()
    one_class = np.zeros(7, "int32")
    value = float(CategoryContrastiveLoss()(one_class, embeddings))
    assert np.isfinite(value)
    np.testing.assert_allclose(value, numpy_eq7(one_class, embeddings, 0.1), rtol=1e-5)
    singleton = np.array([0, 1, 1, 1, 2, 2, 2], "int32")
    value = float(CategoryContrastiveLoss()(singleton, embeddings))
    np.testing.assert_allclose(value, numpy_eq7(singleton, embeddings, 0.1), rtol=1e-5)
    one_sample = CategoryContrastiveLoss()(np.array([1]), embeddings[:1])
    assert np.isfinite(float(one_sample))


def test_gradients_finite_and_bounded_for_zero_embeddings():
    labels, embeddings = case()
    embeddings[2, 1] = 0.0
    variable = tf.Variable(embeddings)
    with tf.GradientTape() as tape:
        value = CategoryContrastiveLoss()(labels, variable)
    grad = np.asarray(tape.gradient(value, variable))
    assert np.isfinite(grad).all()
    assert np.abs(grad).max() < 100
    assert np.abs(grad).sum() > 0


def test_zero_embedding_has_similarity_zero():
    labels, embeddings = case()
    embeddings[2, 1] = 0.0
    np.testing.assert_allclose(
        float(CategoryContrastiveLoss()(labels, embeddings)),
        numpy_eq7(labels, embeddings, 0.1),
        rtol=1e-5,
    )


@pytest.mark.parametrize("scale_low", [1e-3, 0.05, 0.5])
def test_invariant_to_embedding_scale_and_no_gradient_to_it(scale_low):
    # MRE feeds S^ = H * bag with relevance weights H in (0, 1): the loss must
    # not depend on H, however small, or it can lower itself by shrinking H.
    labels, embeddings = case(batch=8, seed=3)
    rng = np.random.default_rng(4)
    scales = rng.uniform(scale_low, 1.0, size=(8, 3, 1)).astype("float32")
    loss = CategoryContrastiveLoss(temperature=0.1)
    np.testing.assert_allclose(
        float(loss(labels, embeddings * scales)),
        float(loss(labels, embeddings)),
        rtol=1e-5,
    )
    variable = tf.Variable(scales)
    with tf.GradientTape() as tape:
        value = loss(labels, embeddings * variable)
    grad = np.asarray(tape.gradient(value, variable))
    assert np.abs(grad).max() < 1e-4


def test_aligned_embeddings_lose_less():
    labels = np.array([0, 0, 1, 1, 2, 2], "int32")
    prototypes = np.eye(3, 4)[labels]
    aligned = np.stack([prototypes, prototypes], axis=1).astype("float32")
    shuffled = np.stack([prototypes, prototypes[::-1]], axis=1).astype("float32")
    loss = CategoryContrastiveLoss(temperature=0.2)
    assert float(loss(labels, aligned)) < float(loss(labels, shuffled))


def test_usable_through_compile():
    labels, embeddings = case(batch=8)
    inputs = keras.Input((3, 5))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss=CategoryContrastiveLoss(temperature=0.3))
    value = model.evaluate(embeddings, labels, batch_size=8, verbose=0)
    np.testing.assert_allclose(value, numpy_eq7(labels, embeddings, 0.3), rtol=1e-5)


def test_config_and_keras_file_round_trip(tmp_path):
    loss = CategoryContrastiveLoss(temperature=0.25, epsilon=1e-3, name="cnce")
    assert CategoryContrastiveLoss.from_config(loss.get_config()).get_config() == (
        loss.get_config()
    )
    inputs = keras.Input((2, 4))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(optimizer="sgd", loss=loss)
    model.save(tmp_path / "cnce.keras")
    restored = keras.saving.load_model(tmp_path / "cnce.keras").loss
    assert isinstance(restored, CategoryContrastiveLoss)
    assert restored.temperature == 0.25 and restored.epsilon == 1e-3


def test_bad_arguments_raise():
    with pytest.raises(ConfigError, match="temperature=0"):
        CategoryContrastiveLoss(temperature=0)
    with pytest.raises(ConfigError, match="epsilon=-1"):
        CategoryContrastiveLoss(epsilon=-1)
    with pytest.raises(ConfigError, match="M >= 2"):
        CategoryContrastiveLoss()(np.zeros(3), np.zeros((3, 1, 4), "float32"))
