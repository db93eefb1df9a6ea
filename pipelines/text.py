"""Token-level text features from a keras-hub BERT backbone.

The transcript is tokenized with the preset's own tokenizer, packed as
`[CLS] tokens [SEP]` and truncated to `max_length` tokens; the features are the
backbone's last hidden state for the real (non-padding) tokens, `[CLS]` and
`[SEP]` included. The backbone stays frozen.

```python
from keras_mre_pipelines.text import TextFeatureExtractor
encoder = TextFeatureExtractor("path/to/bert_preset_dir", max_length=50)
features = encoder(["I am glad.", "Leave me alone."])  # list of [tokens, hidden]
```

`preset` is either a local preset directory (keras-hub's own format, or a
Hugging Face BERT checkpoint folder with `config.json`, `vocab.txt` and
`model.safetensors`) or a keras-hub preset name such as
`bert_base_en_uncased`, which is downloaded on first use and so needs a
network connection.
"""

import os

import numpy as np

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError


class TextFeatureExtractor:
    """Frozen BERT last hidden states per token.

    Args:
        preset: keras-hub preset name or local preset directory holding a
            BERT backbone and its tokenizer.
        max_length: packed sequence length including `[CLS]` and `[SEP]`;
            longer transcripts are truncated.
        batch_size: transcripts encoded per forward pass.

    Calling the extractor on a list of strings returns one float32 array
    `[tokens, hidden_dim]` per string, with `2 <= tokens <= max_length`.
    An empty (or blank) transcript raises `DataError`.
    """

    name = "keras_hub_bert"

    def __init__(self, preset, max_length=50, batch_size=32):
        if not isinstance(max_length, (int, np.integer)) or max_length < 3:
            raise ConfigError(
                f"TextFeatureExtractor: max_length must be an integer >= 3, "
                f"got {max_length!r}"
            )
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(
                f"TextFeatureExtractor: batch_size must be a positive integer, "
                f"got {batch_size!r}"
            )
        self.preset = os.fspath(preset)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.backbone, self.preprocessor = _load_preset(
            self.preset, self.max_length
        )

    @property
    def feature_dim(self):
        """Width of each token feature: the backbone's hidden size."""
        return int(self.backbone.hidden_dim)

    def get_config(self):
        """Constructor arguments, for provenance records."""
        return {
            "preset": self.preset,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
        }

    def provenance(self):
        """Name, parameters, backbone shape and library versions."""
        import keras
        import keras_hub

        backbone = self.backbone
        return {
            "extractor": self.name,
            "features": "last hidden state per token ([CLS] and [SEP] "
            "included)",
            "feature_dim": self.feature_dim,
            "parameters": self.get_config(),
            "backbone": {
                "class": type(backbone).__name__,
                "num_layers": int(backbone.num_layers),
                "hidden_dim": int(backbone.hidden_dim),
                "vocabulary_size": int(backbone.vocabulary_size),
            },
            "versions": {
                "keras_hub": keras_hub.__version__,
                "keras": keras.__version__,
                "backend": keras.backend.backend(),
            },
        }

    def check(self, text, source=None):
        """Returns `text` stripped; raises DataError if it is not usable.

        `source` (for example a clip id) is named in the error message.
        """
        where = f" of {source}" if source else ""
        if not isinstance(text, str):
            raise DataError(
                f"transcript{where} must be a string, got {type(text).__name__}"
            )
        stripped = text.strip()
        if not stripped:
            raise DataError(f"transcript{where} is empty")
        return stripped

    def __call__(self, texts, sources=None):
        """Encodes `texts` in batches.

        Args:
            texts: list of transcripts.
            sources: optional names (clip ids) used in error messages, one
                per text.

        Returns:
            list of float32 arrays `[tokens, hidden_dim]`, one per text.
        """
        texts = list(texts)
        if sources is None:
            sources = [f"text {i}" for i in range(len(texts))]
        cleaned = [self.check(t, s) for t, s in zip(texts, sources)]
        outputs = []
        for start in range(0, len(cleaned), self.batch_size):
            outputs.extend(self._encode(cleaned[start : start + self.batch_size]))
        return outputs

    def _encode(self, texts):
        inputs = self.preprocessor(texts)
        hidden = self.backbone.predict_on_batch(inputs)
        if isinstance(hidden, dict):
            hidden = hidden["sequence_output"]
        hidden = np.asarray(hidden, dtype=np.float32)
        lengths = np.asarray(inputs["padding_mask"]).astype(bool).sum(axis=1)
        return [hidden[i, : lengths[i]].copy() for i in range(len(texts))]


def _load_preset(preset, max_length):
    """Loads the BERT backbone and its packing preprocessor from `preset`."""
    import keras_hub

    looks_local = os.path.isabs(preset) or os.sep in preset or preset.startswith(".")
    if looks_local and not os.path.isdir(preset):
        raise ConfigError(f"text encoder preset directory {preset} does not exist")
    try:
        backbone = keras_hub.models.BertBackbone.from_preset(preset)
        preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
            preset, sequence_length=max_length
        )
    except (OSError, ValueError, KeyError, ImportError) as error:
        hint = (
            ""
            if os.path.isdir(preset)
            else "; named presets are downloaded on first use, so offline "
            "pass a local preset directory"
        )
        message = str(error).strip().splitlines()
        detail = message[0] if message else type(error).__name__
        raise ConfigError(
            f"text encoder preset {preset!r} could not be loaded as a BERT "
            f"backbone and tokenizer ({detail}){hint}"
        ) from error
    backbone.trainable = False
    return backbone, preprocessor
