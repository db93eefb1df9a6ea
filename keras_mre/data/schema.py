"""Feature and label names shared by the data pipeline, the models and export.

This module is the one place that knows how keys are spelled. Everything that
reads or writes a batch builds its keys through these helpers.
"""

DEFAULT_MODALITIES = ("text", "audio", "vision")

LABEL_KEY = "emotion"
SCORE_KEY = "score"
ID_KEY = "id"
UNKNOWN_LABEL = -1

OUTPUT_PROBABILITIES = "emotion"
OUTPUT_RELEVANCE = "relevance"
OUTPUT_UNIMODAL = "unimodal"


def length_key(modality):
    """Key of the valid-frame count of `modality`: `"<m>_length"`."""
    return f"{modality}_length"


def mean_key(modality):
    """Key of the stored mean of `modality`'s frames: `"<m>_mean"`."""
    return f"{modality}_mean"


def unimodal_label_key(modality):
    """Key of the unimodal class label of `modality`: `"emotion_<m>"`."""
    return f"{LABEL_KEY}_{modality}"


def feature_keys(modalities):
    """All model input keys for `modalities`, frames then lengths."""
    keys = []
    for modality in modalities:
        keys.append(modality)
        keys.append(length_key(modality))
    return keys
