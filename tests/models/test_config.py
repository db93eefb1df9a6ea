import json

import pytest

from keras_mre.config import MREConfig
from keras_mre.config import ModelConfig
from keras_mre.config import config_from_dict
from keras_mre.errors import ConfigError


def test_defaults_follow_the_paper():
    config = MREConfig()
    assert config.feature_dims == {"text": 768, "audio": 33, "vision": 35}
    assert config.modalities == ["text", "audio", "vision"]
    assert config.dropout == 0.2
    assert config.batch_size == 64
    assert (config.ce_weight, config.rs_weight) == (1.0, 1.0)
    # Not stated (tau) or not kept (weight 1) from the paper: chosen on the
    # simulator's valid split, see MREConfig.
    assert (config.cnce_weight, config.temperature) == (0.3, 1.0)
    assert config.use_rs_loss and config.use_cnce_loss
    assert config.sequence_modalities == ["text"]
    assert config.MODEL_NAME == "mre"


def test_dict_and_json_round_trip(tmp_path):
    config = MREConfig(
        feature_dims={"vision": 709, "audio": 33, "text": 768},
        num_classes=3,
        class_names=["negative", "neutral", "positive"],
        rank=8,
        seed=3,
    )
    d = config.to_dict()
    assert d["model"] == "mre"
    assert list(d["feature_dims"]) == ["vision", "audio", "text"]
    json.dumps(d)
    assert MREConfig.from_dict(d) == config
    assert config_from_dict(d) == config
    path = tmp_path / "config.json"
    config.to_json(path)
    assert MREConfig.from_json(path) == config
    assert ModelConfig.from_json(path) == config
    assert list(MREConfig.from_json(path).feature_dims) == ["vision", "audio", "text"]


def test_replace_validates():
    config = MREConfig().replace(hidden_dim=64, learning_rate=1)
    assert config.hidden_dim == 64 and config.learning_rate == 1.0
    with pytest.raises(ConfigError, match="hidden_dim=0"):
        MREConfig().replace(hidden_dim=0)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"num_classes": 1}, "num_classes=1: expected at least 2"),
        ({"hidden_dim": 0}, "hidden_dim=0: expected a positive integer"),
        ({"batch_size": -4}, "batch_size=-4"),
        ({"rank": 0}, "rank=0"),
        ({"dnn_layers": 0}, "dnn_layers=0"),
        ({"attention_heads": 0}, "attention_heads=0"),
        ({"attention_heads": 3}, "attention_heads=3: must divide hidden_dim=128"),
        ({"dropout": 1.0}, r"dropout=1.0: expected a rate in \[0, 1\)"),
        ({"dropout": -0.1}, "dropout=-0.1"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"rs_weight": -1.0}, "rs_weight=-1.0"),
        ({"lstm_implementation": "cudnn"}, "lstm_implementation='cudnn': expected one of"),
        ({"lstm_projection_dtype": "int8"}, "lstm_projection_dtype='int8': expected one of"),
        ({"lstm_projection_dtype": 16}, "lstm_projection_dtype=16: expected"),
        ({"feature_dims": {"text": 768}}, "at least 2 modalities"),
        ({"feature_dims": {"text": 768, "audio": 0}}, r"feature_dims\['audio'\]=0"),
        ({"feature_dims": {"text": 768, "audio": 3.5}}, r"feature_dims\['audio'\]=3.5"),
        ({"feature_dims": {"text": 4, "bad key": 3}}, "feature_dims key 'bad key'"),
        ({"feature_dims": {"text": 4, "text_length": 3}}, "'text_length': clashes"),
        ({"class_names": ["a", "b"]}, "class_names=.*expected 5 strings"),
        ({"num_classes": "5"}, "num_classes='5': expected int, got str"),
        ({"num_classes": True}, "num_classes=True: expected int, got bool"),
        ({"use_rs_loss": "yes"}, "use_rs_loss='yes': expected bool"),
        ({"seed": 1.5}, "seed=1.5"),
        ({"feature_dims": [768, 33]}, "feature_dims=.*expected dict"),
    ],
)
def test_bad_values_raise_config_error_naming_parameter(overrides, match):
    with pytest.raises(ConfigError, match=match):
        MREConfig.from_dict(dict(MREConfig().to_dict(), **overrides))
    with pytest.raises(ValueError, match=match):
        MREConfig(**overrides)


def test_unknown_key_raises_with_its_name_and_value():
    with pytest.raises(ConfigError, match="unknown config key 'hiden_dim' \\(value 64\\)"):
        MREConfig.from_dict({"hiden_dim": 64})
    with pytest.raises(ConfigError, match="unknown config key"):
        config_from_dict({"model": "mre", "ranks": 3})


def test_model_name_selects_the_class():
    with pytest.raises(ConfigError, match="model='nope': unknown model; available: .*mre"):
        config_from_dict({"model": "nope"})
    with pytest.raises(ConfigError, match="model='lmf': MREConfig holds model 'mre'"):
        MREConfig.from_dict({"model": "lmf"})
    assert isinstance(config_from_dict({}), MREConfig)
    with pytest.raises(ConfigError, match="expected a dict, got list"):
        config_from_dict([1, 2])


def test_bad_json_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        MREConfig.from_json(tmp_path / "missing.json")
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json: not valid JSON"):
        MREConfig.from_json(path)
