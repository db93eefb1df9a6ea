"""Keras layers of keras-mre (one public layer per module).

MRE: `MaskedMeanDNNEncoder`, `LSTMEncoder`, `RelevanceAttention`,
`LowRankFusion`. Baselines: `TensorFusion`, `CrossmodalTransformer`,
`DynamicFusionGraph`, `MemoryFusionCell`, `SegmentPooling`,
`TrimPadding`.
"""

from keras_mre.layers.crossmodal_transformer import CrossmodalTransformer
from keras_mre.layers.dynamic_fusion_graph import DynamicFusionGraph
from keras_mre.layers.low_rank_fusion import LowRankFusion
from keras_mre.layers.lstm_encoder import LSTMEncoder
from keras_mre.layers.masked_mean_dnn_encoder import MaskedMeanDNNEncoder
from keras_mre.layers.memory_fusion_cell import MemoryFusionCell
from keras_mre.layers.relevance_attention import RelevanceAttention
from keras_mre.layers.segment_pooling import SegmentPooling
from keras_mre.layers.tensor_fusion import TensorFusion
from keras_mre.layers.trim_padding import TrimPadding

__all__ = [
    "CrossmodalTransformer",
    "DynamicFusionGraph",
    "LSTMEncoder",
    "LowRankFusion",
    "MaskedMeanDNNEncoder",
    "MemoryFusionCell",
    "RelevanceAttention",
    "SegmentPooling",
    "TensorFusion",
    "TrimPadding",
]
