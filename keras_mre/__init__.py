"""keras-mre: Multimodal Relevance Estimation (MRE) in Keras 3.

```python
import keras_mre
info = keras_mre.data.load_info("data/sdme")
model = keras_mre.build_model(
    feature_dims=info.feature_dims, num_classes=info.num_classes
)
model.fit(keras_mre.data.load_dataset("data/sdme", "train", batch_size=64))
```
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "build_model": ("keras_mre.models", "build_model"),
    "available_models": ("keras_mre.models", "available_models"),
    "MREConfig": ("keras_mre.config", "MREConfig"),
    "layers": ("keras_mre.layers", None),
    "losses": ("keras_mre.losses", None),
    "models": ("keras_mre.models", None),
    "metrics": ("keras_mre.metrics", None),
    "optimizers": ("keras_mre.optimizers", None),
    "data": ("keras_mre.data", None),
    "training": ("keras_mre.training", None),
    "evaluation": ("keras_mre.evaluation", None),
    "export": ("keras_mre.export", None),
    "serving": ("keras_mre.serving", None),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_mre' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
