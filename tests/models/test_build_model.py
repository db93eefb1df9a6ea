import keras
import numpy as np
import pytest

import keras_mre
from keras_mre.config import MREConfig
from keras_mre.config import ModelConfig
from keras_mre.errors import ConfigError
from keras_mre.models import EmotionModel
from keras_mre.models import available_models
from keras_mre.models import build_model
from keras_mre.models import register_model
from keras_mre.models import registry
from keras_mre.models.mre import MREModel
from keras_mre.testing import random_batch

SMALL = {"feature_dims": {"text": 6, "audio": 4}, "num_classes": 3, "hidden_dim": 8}


def test_default_build_is_compiled_mre_with_paper_shapes():
    model = keras_mre.build_model()
    assert isinstance(model, MREModel)
    assert model.compiled
    assert type(model.optimizer) is keras_mre.optimizers.FusedAdam  # an Adam
    assert float(model.optimizer.learning_rate) == pytest.approx(model.config.learning_rate)
    assert model.config == MREConfig()
    assert model.input["text"].shape == (None, None, 768)
    assert model.input["vision_length"].dtype == "int32"


def test_every_config_form_gives_the_same_config():
    expected = MREConfig(**SMALL)
    forms = [
        build_model(**SMALL, compile=False),
        build_model("mre", **SMALL, compile=False),
        build_model(expected, compile=False),
        build_model(expected.to_dict(), compile=False),
        build_model(MREConfig(), **SMALL, compile=False),
    ]
    for model in forms:
        assert model.config == expected
        assert not model.compiled


def test_seed_makes_builds_reproducible():
    a = build_model(**SMALL, seed=11, compile=False)
    b = build_model(**SMALL, seed=11, compile=False)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_available_models_lists_mre():
    assert "mre" in available_models()
    assert "mre" in keras_mre.available_models()


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((), {"num_clases": 3}, "unknown config key 'num_clases' \\(value 3\\)"),
        ((), {"num_classes": 1}, "num_classes=1"),
        ((), {"hidden_dim": -8}, "hidden_dim=-8"),
        (("nope",), {}, "model='nope': unknown model"),
        ((42,), {}, "config=42"),
        (("mre",), {"model": "other"}, "model='other': conflicts"),
    ],
)
def test_bad_arguments_raise_config_error(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_model(*args, compile=False, **kwargs)


def test_register_model_adds_a_buildable_model(monkeypatch):
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.setattr(registry, "_CONFIGS", dict(registry._CONFIGS))

    import dataclasses
    from typing import ClassVar

    @dataclasses.dataclass
    class TinyConfig(ModelConfig):
        MODEL_NAME: ClassVar[str] = "tiny"

    class TinyModel(EmotionModel):
        config_class = TinyConfig

        def __init__(self, config=None, **kwargs):
            config = self.resolve_config(config)
            inputs = self.make_inputs(config)
            pooled = [
                keras.ops.mean(inputs[m], axis=1) for m in config.modalities
            ]
            logits = keras.layers.Dense(config.num_classes)(
                keras.layers.Concatenate()(pooled)
            )
            outputs = {"emotion": keras.layers.Softmax()(logits), "logits": logits}
            super().__init__(config, inputs, outputs, **kwargs)

    @register_model("tiny", TinyConfig)
    def build_tiny(config):
        return TinyModel(config)

    assert "tiny" in available_models()
    model = build_model("tiny", **SMALL)
    assert isinstance(model, TinyModel)
    assert model.config.to_dict()["model"] == "tiny"
    features, labels = random_batch(SMALL["feature_dims"], 3, batch=4, max_len=3)
    out = model(features)
    total = model.compute_loss(features, labels, out)
    assert np.isfinite(float(total))
    assert model.metrics_names == ["loss", "ce", "accuracy", "f1_weighted"]
    with pytest.raises(ConfigError, match="unknown config key 'rank'"):
        build_model("tiny", rank=3)


def test_register_model_rejects_mismatched_name():
    with pytest.raises(ConfigError, match="MREConfig.MODEL_NAME is 'mre'"):
        register_model("other", MREConfig)
