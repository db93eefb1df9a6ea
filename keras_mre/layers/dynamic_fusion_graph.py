"""Dynamic Fusion Graph of Graph-MFN (Zadeh et al. 2018, CMU-MOSEI paper)."""

import itertools

import keras
from keras import ops


def _subsets(count):
    """Non-empty subsets of `range(count)` as sorted tuples, smallest first."""
    result = []
    for size in range(1, count + 1):
        result.extend(itertools.combinations(range(count), size))
    return result


@keras.saving.register_keras_serializable(package="keras_mre")
class DynamicFusionGraph(keras.layers.Layer):
    """Fuses M unimodal vectors through a graph over all modality subsets.

    Every non-empty subset `S` of the modalities is a vertex. A unimodal
    vertex holds its input vector. A vertex with `|S| >= 2` is computed from
    its `|S|` sub-vertices `S \\ {j}`, each scaled by an efficacy `alpha` in
    (0, 1): `v_S = D_S([alpha_1 v_{S\\{1}}; ...])` (`D_S`: two dense layers,
    ReLU). The output `T = D_T([alpha v_S for every S])` reads every vertex.
    The efficacies of all edges come from one network over the unimodal
    inputs, `alpha = sigmoid(D_alpha([v_1; ...; v_M]))`, so the graph's
    shape changes with each sample. The graph has `2^M - 1` vertices, so `M`
    is limited to 6.

    Args:
        input_dims: list of int, the width of each unimodal input.
        hidden_dim: int, width of every multimodal vertex.
        output_dim: int, width of `T`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: list of `M` tensors, the m-th `[batch, input_dims[m]]`.

    Returns:
        `[batch, output_dim]`.
    """

    def __init__(self, input_dims, hidden_dim, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.input_dims = [int(d) for d in input_dims]
        if not 1 <= len(self.input_dims) <= 6:
            raise ValueError(
                f"DynamicFusionGraph supports 1 to 6 modalities, got "
                f"{len(self.input_dims)}"
            )
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self._vertices = _subsets(len(self.input_dims))
        self._multimodal = [s for s in self._vertices if len(s) > 1]
        edges = sum(len(s) for s in self._multimodal) + len(self._vertices)
        self.efficacy_hidden = keras.layers.Dense(
            self.hidden_dim, activation="relu", name="efficacy_hidden"
        )
        self.efficacy = keras.layers.Dense(
            edges, activation="sigmoid", name="efficacy"
        )
        self.vertex_hidden = []
        self.vertex_out = []
        for subset in self._multimodal:
            tag = "_".join(str(m) for m in subset)
            self.vertex_hidden.append(
                keras.layers.Dense(
                    self.hidden_dim, activation="relu", name=f"vertex_{tag}_hidden"
                )
            )
            self.vertex_out.append(
                keras.layers.Dense(
                    self.hidden_dim, activation="relu", name=f"vertex_{tag}"
                )
            )
        self.output_hidden = keras.layers.Dense(
            self.hidden_dim, activation="relu", name="output_hidden"
        )
        self.output_layer = keras.layers.Dense(self.output_dim, name="output")

    def _width(self, subset):
        if len(subset) == 1:
            return self.input_dims[subset[0]]
        return self.hidden_dim

    def build(self, input_shape):
        total = sum(self.input_dims)
        self.efficacy_hidden.build((None, total))
        self.efficacy.build((None, self.hidden_dim))
        for index, subset in enumerate(self._multimodal):
            width = sum(
                self._width(tuple(m for m in subset if m != j)) for j in subset
            )
            self.vertex_hidden[index].build((None, width))
            self.vertex_out[index].build((None, self.hidden_dim))
        width = sum(self._width(s) for s in self._vertices)
        self.output_hidden.build((None, width))
        self.output_layer.build((None, self.hidden_dim))
        self.built = True

    def call(self, inputs):
        if len(inputs) != len(self.input_dims):
            raise ValueError(
                f"DynamicFusionGraph got {len(inputs)} inputs, expected "
                f"{len(self.input_dims)}"
            )
        alpha = self.efficacy(
            self.efficacy_hidden(ops.concatenate(list(inputs), axis=-1))
        )
        vertex = {(m,): inputs[m] for m in range(len(inputs))}
        edge = 0
        for index, subset in enumerate(self._multimodal):
            parts = []
            for j in subset:
                child = tuple(m for m in subset if m != j)
                parts.append(vertex[child] * alpha[:, edge : edge + 1])
                edge += 1
            hidden = self.vertex_hidden[index](ops.concatenate(parts, axis=-1))
            vertex[subset] = self.vertex_out[index](hidden)
        parts = []
        for subset in self._vertices:
            parts.append(vertex[subset] * alpha[:, edge : edge + 1])
            edge += 1
        return self.output_layer(
            self.output_hidden(ops.concatenate(parts, axis=-1))
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dims=self.input_dims,
            hidden_dim=self.hidden_dim,
            output_dim=self.output_dim,
        )
        return config
