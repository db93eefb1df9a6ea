"""Base class of every emotion model: inputs, loss, metrics, saving."""

import keras
from keras import ops

from keras_mre import distribute
from keras_mre.config import ModelConfig
from keras_mre.data import schema
from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre.metrics import WeightedF1Score


def pooled_modalities(config):
    """Modalities a model with this config reads only through their mean
    over valid frames.

    For these, `load_dataset(..., pool=...)` may average the frames once per
    clip in the input pipeline: the model's outputs are the same on the
    pooled `[B, 1, D]` input as on the full sequence. Configs with
    `sequence_modalities` (MRE, LMF, TFN) pool every other modality; the
    other models read whole sequences and pool none.
    """
    sequence = getattr(config, "sequence_modalities", None)
    if sequence is None:
        return ()
    return tuple(m for m in config.modalities if m not in sequence)


class EmotionModel(keras.Model):
    """Functional Keras model with the package's input, label and loss contract.

    Subclasses build their graph on the inputs of `make_inputs(config)` and
    pass it here, keras-hub style:

    ```python
    class MyModel(EmotionModel):
        config_class = MyConfig

        def __init__(self, config=None, **kwargs):
            config = self.resolve_config(config)
            inputs = self.make_inputs(config)
            ...
            super().__init__(config, inputs, {"emotion": probabilities}, **kwargs)
    ```

    Inputs: a dict `{<m>: [batch, time, D_m] float32, <m>_length: [batch]
    int32}` for every modality `m` of `config.feature_dims` (time may differ
    per modality and per batch). Keys and feature sizes are checked before
    any TensorFlow op runs (`ConfigError`); extra keys are ignored.

    Outputs: a dict with at least `"emotion"`, class probabilities
    `[batch, C]`; a model that also outputs `"logits"` gets its
    cross-entropy computed from them.

    Labels `y`: the dict `{"emotion": [batch] int, "emotion_<m>": [batch]
    int (-1 unknown), "score": ...}` (extra keys ignored) or the `emotion`
    tensor alone.

    Loss (`compute_loss`): `ce_weight * CE(emotion)` plus the terms of the
    subclass hook `auxiliary_losses`, plus any regularisation losses. `fit`
    and `evaluate` report `loss`, `ce`, every auxiliary term by name, then
    `accuracy` and `f1_weighted` (support-weighted F1). The reported terms
    are the weighted values that enter the total. The model computes its
    own losses and metrics: `compile` needs only the optimizer, and `loss`
    or `metrics` arguments given to `compile` are not used.

    Saving: `get_config` holds `config.to_dict()`, so `.keras` files reload
    with `keras.saving.load_model` once `keras_mre.models` is imported.
    """

    config_class = ModelConfig

    def __init__(self, config, inputs, outputs, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.config = config
        self._ce_from_logits = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, name="ce"
        )
        self._ce_from_probabilities = keras.losses.SparseCategoricalCrossentropy(
            name="ce"
        )
        self.loss_trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("ce",) + tuple(self.auxiliary_loss_names())
        }
        self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(
            name="accuracy"
        )
        self.f1_metric = WeightedF1Score(config.num_classes, name="f1_weighted")

    # === Construction helpers ===

    @classmethod
    def resolve_config(cls, config):
        """`config` (None, dict or config object) as a `cls.config_class`."""
        if config is None:
            return cls.config_class()
        if isinstance(config, dict):
            return cls.config_class.from_dict(config)
        if not isinstance(config, cls.config_class):
            raise ConfigError(
                f"config: expected {cls.config_class.__name__}, got "
                f"{type(config).__name__}"
            )
        config.validate()
        return config

    @staticmethod
    def make_inputs(config):
        """`keras.Input` dict: `<m>` `[None, None, D_m]` and `<m>_length`."""
        inputs = {}
        for modality, dim in config.feature_dims.items():
            inputs[modality] = keras.Input(
                shape=(None, dim), dtype="float32", name=modality
            )
            length = schema.length_key(modality)
            inputs[length] = keras.Input(shape=(), dtype="int32", name=length)
        return inputs

    def input_signature(self):
        """Export signature: dict of `tf.TensorSpec` named like the inputs."""
        import tensorflow as tf

        signature = {}
        for modality, dim in self.config.feature_dims.items():
            signature[modality] = tf.TensorSpec(
                (None, None, dim), tf.float32, name=modality
            )
            length = schema.length_key(modality)
            signature[length] = tf.TensorSpec((None,), tf.int32, name=length)
        return signature

    def pooled_modalities(self):
        """Modalities this model reads only through their mean over valid
        frames; see `pooled_modalities(config)`."""
        return pooled_modalities(self.config)

    def auxiliary_loss_names(self):
        """Names of the terms `auxiliary_losses` returns (none by default)."""
        return ()

    def auxiliary_losses(self, x, y, y_pred, sample_weight=None, training=True):
        """Extra loss terms `{name: scalar}`, weighted, added to the total.

        Values must be reduced the way `keras.losses.Loss` reduces (mean over
        the replica's batch divided by the replica count) so that totals
        agree under `tf.distribute`.
        """
        return {}

    # === Input checks ===

    def _check_inputs(self, inputs):
        checked = {}
        expected = schema.feature_keys(self.config.modalities)
        for modality, dim in self.config.feature_dims.items():
            for key in (modality, schema.length_key(modality)):
                if key not in inputs:
                    raise ConfigError(
                        f"inputs: missing key {key!r}; the model expects "
                        f"{', '.join(expected)} (got {', '.join(map(str, inputs))})"
                    )
            frames = inputs[modality]
            shape = getattr(frames, "shape", None)
            if shape is None or len(shape) != 3:
                raise ConfigError(
                    f"inputs[{modality!r}]: expected frames [batch, time, {dim}], "
                    f"got shape {None if shape is None else tuple(shape)}"
                )
            if shape[-1] is not None and shape[-1] != dim:
                raise ConfigError(
                    f"inputs[{modality!r}]: feature dim {shape[-1]} does not "
                    f"match feature_dims[{modality!r}]={dim}"
                )
            length = inputs[schema.length_key(modality)]
            length_shape = getattr(length, "shape", None)
            if length_shape is not None and len(length_shape) not in (1, 2):
                raise ConfigError(
                    f"inputs[{schema.length_key(modality)!r}]: expected shape "
                    f"[batch], got {tuple(length_shape)}"
                )
            checked[modality] = frames
            checked[schema.length_key(modality)] = length
        return checked

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, dict):
            inputs = self._check_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        # Also here: on JAX, fit/evaluate/predict reach `call` through
        # `stateless_call`, not `__call__`.
        if isinstance(inputs, dict):
            inputs = self._check_inputs(inputs)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    # === Loss and metrics ===

    @staticmethod
    def _labels(y):
        if isinstance(y, dict):
            if schema.LABEL_KEY not in y:
                raise DataError(
                    f"labels: missing key {schema.LABEL_KEY!r} (got "
                    f"{', '.join(map(str, y))})"
                )
            y = y[schema.LABEL_KEY]
        return ops.reshape(ops.cast(y, "int32"), (-1,))

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        labels = self._labels(y)
        if "logits" in y_pred:
            ce = self._ce_from_logits(labels, y_pred["logits"], sample_weight)
        else:
            ce = self._ce_from_probabilities(
                labels, y_pred[schema.OUTPUT_PROBABILITIES], sample_weight
            )
        terms = {"ce": getattr(self.config, "ce_weight", 1.0) * ce}
        terms.update(
            self.auxiliary_losses(x, y, y_pred, sample_weight, training=training)
        )
        replicas = distribute.num_replicas()
        for name, value in terms.items():
            self.loss_trackers[name].update_state(value * replicas)
        total = ops.sum(ops.stack(list(terms.values())))
        for loss in self.losses:
            total = total + self._aggregate_additional_loss(loss)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        labels = self._labels(y)
        probabilities = y_pred[schema.OUTPUT_PROBABILITIES]
        self.accuracy_metric.update_state(labels, probabilities, sample_weight)
        self.f1_metric.update_state(labels, probabilities, sample_weight)
        return self.get_metrics_result()

    @property
    def metrics(self):
        metrics = []
        if self.compiled and self._loss_tracker is not None:
            metrics.append(self._loss_tracker)
        metrics.extend(self.loss_trackers.values())
        metrics.extend([self.accuracy_metric, self.f1_metric])
        return metrics

    # === Serialization ===

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(config=config["config"], name=config.get("name"))
