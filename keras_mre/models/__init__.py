"""Models of keras-mre: the MRE network and the baselines, built by name.

```python
model = build_model("mre", feature_dims={"text": 768, "audio": 33}, num_classes=3)
```
"""

import keras

from keras_mre.config import ModelConfig
from keras_mre.config import config_from_dict
from keras_mre.errors import ConfigError
from keras_mre.errors import RunError
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.emotion_model import pooled_modalities
from keras_mre.models.registry import available_models
from keras_mre.models.registry import get_builder
from keras_mre.models.registry import get_config_class
from keras_mre.models.registry import register_model
from keras_mre.optimizers import FusedAdam

__all__ = [
    "EmotionModel",
    "available_models",
    "build_model",
    "load_model",
    "pooled_modalities",
    "register_model",
    "resolve_config",
]


def resolve_config(config=None, **overrides):
    """Turns any accepted config form into a validated `ModelConfig`.

    Args:
        config: None (the MRE defaults), a registered model name, a
            `ModelConfig` or a dict as written by `ModelConfig.to_dict`.
        **overrides: config fields replacing those of `config`.

    Raises:
        ConfigError: unknown model name, unknown field or bad value.
    """
    if config is None:
        config = "mre"
    if isinstance(config, str):
        config = get_config_class(config)()
    if isinstance(config, ModelConfig):
        base = config.to_dict()
    elif isinstance(config, dict):
        base = dict(config)
    else:
        raise ConfigError(
            f"config={config!r}: expected None, a model name, a ModelConfig "
            "or a dict"
        )
    if "model" in overrides and overrides["model"] != base.get("model", "mre"):
        raise ConfigError(
            f"model={overrides['model']!r}: conflicts with config for model "
            f"{base.get('model', 'mre')!r}"
        )
    base.update(overrides)
    return config_from_dict(base)


def build_model(config=None, /, *, compile=True, **overrides):
    """Builds (and by default compiles) a registered model.

    Args:
        config: None (MRE with its defaults), a model name such as `"mre"`,
            a `ModelConfig` or a dict as written by `ModelConfig.to_dict`.
        compile: compile with `keras_mre.optimizers.FusedAdam(
            config.learning_rate)` (Keras' Adam, each variable's update
            fused into one kernel on TensorFlow); the model's own
            `compute_loss` supplies the losses.
        **overrides: config fields, e.g. `feature_dims=...`,
            `num_classes=5`. Unknown names raise `ConfigError`.

    Returns:
        A `keras.Model` (an `EmotionModel`) whose `config` attribute is the
        resolved config. It is created inside the current
        `tf.distribute` strategy scope when called inside one.
    """
    config = resolve_config(config, **overrides)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    model = get_builder(config.MODEL_NAME)(config)
    if compile:
        model.compile(optimizer=FusedAdam(learning_rate=config.learning_rate))
        # Built now, so a saved untrained model holds the full optimizer state.
        model.optimizer.build(model.trainable_variables)
    return model


def load_model(path, compile=True):
    """Loads a `.keras` file saved from any registered model.

    Imports every model module first, so the saved classes are known.

    Raises:
        RunError: `path` does not exist.
    """
    import pathlib

    if not pathlib.Path(path).exists():
        raise RunError(f"{path}: model file not found")
    available_models()
    return keras.saving.load_model(path, compile=compile)


# Import every model module now, so that `keras.saving.load_model` knows the
# classes of any saved keras-mre model as soon as `keras_mre.models` is loaded.
available_models()
