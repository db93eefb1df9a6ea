"""Model hyper-parameters as dataclasses.

`ModelConfig` holds what every model of the package shares (feature dims,
classes, width, dropout, optimiser settings); `MREConfig` adds the MRE
network's own settings. Configs are plain data: they round-trip through
`to_dict` / `from_dict` and JSON files, and `validate` turns every bad value
into a `ConfigError` that names the parameter and the value given.

```python
config = MREConfig(feature_dims={"text": 768, "audio": 33, "vision": 35})
config.to_json("run/config.json")
same = config_from_dict(json.load(open("run/config.json")))
```
"""

import dataclasses
import json
import math
import pathlib
import types
import typing
from typing import ClassVar

from keras_mre.data.schema import length_key
from keras_mre.errors import ConfigError

DEFAULT_FEATURE_DIMS = {"text": 768, "audio": 33, "vision": 35}
# Choices of `LSTMEncoder(implementation=...)` and of `lstm_implementation`.
LSTM_IMPLEMENTATIONS = ("auto", "xla", "generic")
# Choices of `LSTMEncoder(projection_dtype=...)` and of `lstm_projection_dtype`.
LSTM_PROJECTION_DTYPES = (None, "float32", "bfloat16", "float16")


def _type_name(value):
    return type(value).__name__


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_field_type(name, value, hint):
    """Raises ConfigError unless `value` matches the annotation `hint`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        inner = [a for a in args if a is not type(None)]
        _check_field_type(name, value, inner[0])
        return
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = _is_int(value)
    elif hint is float:
        ok = _is_number(value)
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is dict:
        ok = isinstance(value, dict)
    elif origin is list:
        ok = isinstance(value, (list, tuple))
    else:
        ok = True
    if not ok:
        expected = "a finite number" if hint is float else getattr(hint, "__name__", hint)
        raise ConfigError(
            f"{name}={value!r}: expected {expected}, got {_type_name(value)}"
        )


@dataclasses.dataclass
class ModelConfig:
    """Hyper-parameters shared by every model of the package.

    Args:
        feature_dims: ordered mapping modality name -> feature dimension. Its
            order is the modality order everywhere (inputs, the relevance
            output, unimodal logits). At least two modalities.
        num_classes: number of emotion classes, at least 2.
        class_names: optional class names, `num_classes` of them.
        hidden_dim: the common width `d` every modality is mapped to.
        dropout: dropout rate in `[0, 1)` (paper: 0.2).
        learning_rate: Adam learning rate used by `build_model(compile=True)`.
            Default 1e-3, not the paper's 5e-5: the paper does not say how
            long it trained, and at 5e-5 the network demonstrably fails to
            train in a useful number of steps. On a 512-clip synthetic task
            where one modality carries the label (the learning test), 15
            epochs of batch 32 (240 steps) reach 46 % test accuracy (chance
            33 %) at 5e-5 and 99 % at 1e-3. Pass `learning_rate=5e-5` to
            follow the paper.
        batch_size: global batch size the training workflow uses (paper: 64).
        seed: when set, `build_model` seeds Keras' random generators with it
            before creating weights, so two builds give equal weights.
    """

    MODEL_NAME: ClassVar[str] = ""

    feature_dims: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_FEATURE_DIMS)
    )
    num_classes: int = 5
    class_names: list[str] | None = None
    hidden_dim: int = 128
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 64
    seed: int | None = None

    def __post_init__(self):
        if isinstance(self.feature_dims, dict):
            self.feature_dims = dict(self.feature_dims)
        if isinstance(self.class_names, tuple):
            self.class_names = list(self.class_names)
        self.validate()

    @property
    def modalities(self):
        """Modality names in model order."""
        return list(self.feature_dims)

    def _check_positive_int(self, name):
        value = getattr(self, name)
        if value <= 0:
            raise ConfigError(f"{name}={value!r}: expected a positive integer")

    def _check_non_negative(self, *names):
        for name in names:
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"{name}={value!r}: expected a number >= 0")

    def _check_divides(self, name, width_name):
        value, width = getattr(self, name), getattr(self, width_name)
        if width % value:
            raise ConfigError(
                f"{name}={value!r}: must divide {width_name}={width}"
            )

    def _check_choice(self, name, choices):
        value = getattr(self, name)
        if value not in choices:
            raise ConfigError(f"{name}={value!r}: expected one of {choices}")

    def _check_rate(self, name):
        value = getattr(self, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name}={value!r}: expected a rate in [0, 1)")

    def validate(self):
        """Checks every field; raises ConfigError naming the first bad one."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            _check_field_type(field.name, getattr(self, field.name), hints[field.name])
        if len(self.feature_dims) < 2:
            raise ConfigError(
                f"feature_dims={self.feature_dims!r}: expected at least 2 "
                "modalities"
            )
        for modality, dim in self.feature_dims.items():
            if not isinstance(modality, str) or not modality.isidentifier():
                raise ConfigError(
                    f"feature_dims key {modality!r}: expected a modality name "
                    "made of letters, digits and underscores"
                )
            if not _is_int(dim) or dim <= 0:
                raise ConfigError(
                    f"feature_dims[{modality!r}]={dim!r}: expected a positive "
                    "integer"
                )
        lengths = {length_key(m) for m in self.feature_dims}
        clashes = sorted(lengths & set(self.feature_dims))
        if clashes:
            raise ConfigError(
                f"feature_dims key {clashes[0]!r}: clashes with the length input "
                "of another modality"
            )
        if self.num_classes < 2:
            raise ConfigError(
                f"num_classes={self.num_classes!r}: expected at least 2"
            )
        if self.class_names is not None:
            if len(self.class_names) != self.num_classes or not all(
                isinstance(n, str) for n in self.class_names
            ):
                raise ConfigError(
                    f"class_names={self.class_names!r}: expected "
                    f"{self.num_classes} strings (num_classes)"
                )
        self._check_positive_int("hidden_dim")
        self._check_positive_int("batch_size")
        self._check_rate("dropout")
        if self.learning_rate <= 0:
            raise ConfigError(
                f"learning_rate={self.learning_rate!r}: expected a positive "
                "number"
            )

    def to_dict(self):
        """JSON-safe dict of every field plus `"model": MODEL_NAME`."""
        out = {"model": self.MODEL_NAME}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, dict):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, list):
                value = list(value)
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, d):
        """Builds a config from `to_dict` output.

        Raises:
            ConfigError: `d` is not a dict, names another model, holds an
                unknown key, or a value of the wrong type or range.
        """
        if isinstance(d, ModelConfig):
            d = d.to_dict()
        if not isinstance(d, dict):
            raise ConfigError(
                f"config: expected a dict, got {_type_name(d)}"
            )
        d = dict(d)
        model = d.pop("model", cls.MODEL_NAME)
        if model != cls.MODEL_NAME:
            raise ConfigError(
                f"model={model!r}: {cls.__name__} holds model "
                f"{cls.MODEL_NAME!r}"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown config key {unknown[0]!r} (value {d[unknown[0]]!r}) "
                f"for model {cls.MODEL_NAME!r}; known keys: {', '.join(names)}"
            )
        hints = typing.get_type_hints(cls)
        for name, value in d.items():
            _check_field_type(name, value, hints[name])
            if hints[name] is float and _is_int(value):
                d[name] = float(value)
        return cls(**d)

    def replace(self, **overrides):
        """A copy with `overrides` applied (validated like `from_dict`)."""
        d = self.to_dict()
        d.update(overrides)
        return type(self).from_dict(d)

    def to_json(self, path):
        """Writes `to_dict()` as JSON to `path`."""
        pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path):
        """Reads a config written by `to_json`."""
        path = pathlib.Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if cls is ModelConfig:
            return config_from_dict(d)
        return cls.from_dict(d)


@dataclasses.dataclass
class MREConfig(ModelConfig):
    """Hyper-parameters of the MRE network (paper section 3, defaults 5.1).

    Args:
        rank: rank R of the low-rank fusion (eq 1-2).
        dnn_layers: depth of the frame-mean DNN encoders (paper: 3).
        sequence_modalities: modalities encoded by an LSTM over their frames
            (paper: text). Every other modality gets the masked mean and DNN.
            Names absent from `feature_dims` are ignored.
        attention_heads: heads of the eq 3 self-attention; must divide
            `hidden_dim`.
        ce_weight, rs_weight, cnce_weight: weights of the three terms of eq 8.
            The paper sets all three to 1; `cnce_weight` defaults to 0.3.
        temperature: tau of the category contrastive loss (eq 6); the paper
            does not state it. Default 1.0. Both defaults were chosen on the
            valid split of the simulator (`benchmarks/results/
            mre_loss_sweep.md`, 3 seeds): `cnce_weight=0.3, temperature=1.0`
            scored 76.2 % valid against 73.8 % for weight 1, tau 0.1, whose
            contrastive gradient outweighs the cross-entropy's.
        use_rs_loss, use_cnce_loss: the Table 5 ablation switches.
        relevance_gradient: whether the relevance weights H receive gradient
            through the `(1 + H)` factor of eq 5 (see RelevantSemanticLoss).
        lstm_implementation: `LSTMEncoder` implementation, `"auto"` (XLA
            kernel in training on TensorFlow, generic otherwise), `"xla"` or
            `"generic"`.
        lstm_projection_dtype: dtype of the text LSTM's input projection
            (`LSTMEncoder(projection_dtype=...)`): None (the model's own,
            float32) or `"bfloat16"` / `"float16"`, which run that product
            at lower precision: MRE and LMF training steps 1.05-1.27x faster on
            a CPU with bfloat16 instructions (`docs/performance.md`).
    """

    MODEL_NAME: ClassVar[str] = "mre"

    rank: int = 4
    dnn_layers: int = 3
    sequence_modalities: list[str] = dataclasses.field(
        default_factory=lambda: ["text"]
    )
    attention_heads: int = 1
    ce_weight: float = 1.0
    rs_weight: float = 1.0
    cnce_weight: float = 0.3
    temperature: float = 1.0
    use_rs_loss: bool = True
    use_cnce_loss: bool = True
    relevance_gradient: bool = False
    lstm_implementation: str = "auto"
    lstm_projection_dtype: str | None = None

    def __post_init__(self):
        if isinstance(self.sequence_modalities, tuple):
            self.sequence_modalities = list(self.sequence_modalities)
        super().__post_init__()

    def validate(self):
        super().validate()
        self._check_positive_int("rank")
        self._check_positive_int("dnn_layers")
        self._check_positive_int("attention_heads")
        self._check_divides("attention_heads", "hidden_dim")
        self._check_non_negative("ce_weight", "rs_weight", "cnce_weight")
        self._check_choice("lstm_implementation", LSTM_IMPLEMENTATIONS)
        self._check_choice("lstm_projection_dtype", LSTM_PROJECTION_DTYPES)
        if self.temperature <= 0:
            raise ConfigError(
                f"temperature={self.temperature!r}: expected a positive number"
            )
        if not all(isinstance(m, str) for m in self.sequence_modalities):
            raise ConfigError(
                f"sequence_modalities={self.sequence_modalities!r}: expected "
                "modality names"
            )


def config_from_dict(d):
    """Builds the config of the model named by `d["model"]` (default "mre").

    Raises:
        ConfigError: unknown model name, unknown key or bad value.
    """
    if isinstance(d, ModelConfig):
        return d
    if not isinstance(d, dict):
        raise ConfigError(f"config: expected a dict, got {_type_name(d)}")
    from keras_mre.models.registry import get_config_class

    return get_config_class(d.get("model", MREConfig.MODEL_NAME)).from_dict(d)
