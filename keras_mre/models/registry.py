"""Registry of model builders, looked up by name.

A model module registers its builder once, at import time:

```python
@register_model("lmf", LMFConfig)
def build_lmf(config):
    return LMFModel(config)
```

Every module inside the `keras_mre.models` package is imported the first time
the registry is queried, so dropping a new module there is enough to make its
model available to `build_model`, the configs and the command line.
"""

import importlib
import pkgutil

from keras_mre.errors import ConfigError

_BUILDERS = {}
_CONFIGS = {}
_LOADED = False
_INFRASTRUCTURE = {"registry", "emotion_model"}


def register_model(name, config_cls):
    """Decorator registering `builder(config) -> keras.Model` under `name`.

    Args:
        name: registry name, equal to `config_cls.MODEL_NAME`.
        config_cls: the `ModelConfig` subclass holding the model's
            hyper-parameters.

    Returns:
        A decorator that registers the builder and returns it unchanged.
    """
    if config_cls.MODEL_NAME != name:
        raise ConfigError(
            f"register_model({name!r}): {config_cls.__name__}.MODEL_NAME is "
            f"{config_cls.MODEL_NAME!r}"
        )

    def decorator(builder):
        _BUILDERS[name] = builder
        _CONFIGS[name] = config_cls
        return builder

    return decorator


def _load_model_modules():
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    package = importlib.import_module("keras_mre.models")
    for info in pkgutil.walk_packages(package.__path__, "keras_mre.models."):
        if info.name.rsplit(".", 1)[-1] in _INFRASTRUCTURE:
            continue
        importlib.import_module(info.name)


def available_models():
    """Sorted names of every registered model."""
    _load_model_modules()
    return sorted(_BUILDERS)


def _check_name(name):
    _load_model_modules()
    if name not in _BUILDERS:
        raise ConfigError(
            f"model={name!r}: unknown model; available: "
            f"{', '.join(sorted(_BUILDERS))}"
        )


def get_config_class(name):
    """The `ModelConfig` subclass registered under `name`."""
    _check_name(name)
    return _CONFIGS[name]


def get_builder(name):
    """The builder function registered under `name`."""
    _check_name(name)
    return _BUILDERS[name]
