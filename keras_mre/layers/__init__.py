"""Keras layers of the MRE network (one public layer per module)."""

from keras_mre.layers.low_rank_fusion import LowRankFusion
from keras_mre.layers.lstm_encoder import LSTMEncoder
from keras_mre.layers.masked_mean_dnn_encoder import MaskedMeanDNNEncoder
from keras_mre.layers.relevance_attention import RelevanceAttention

__all__ = [
    "LSTMEncoder",
    "LowRankFusion",
    "MaskedMeanDNNEncoder",
    "RelevanceAttention",
]
