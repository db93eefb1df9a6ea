"""The MMSA MOSEI MulT setting `benchmarks/vs_mmsa.py` gives keras-mre's MulT."""

import importlib.util
import pathlib

import pytest

from keras_mre.models import build_model

ROOT = pathlib.Path(__file__).resolve().parents[2]

# MMSA 2.2.1's config_regression.json, mult, mosei (the fields used).
MMSA_ARGS = {
    "dst_feature_dim_nheads": [30, 6], "nlevels": 4,
    "conv1d_kernel_size_l": 5, "conv1d_kernel_size_a": 1, "conv1d_kernel_size_v": 3,
    "attn_dropout": 0.4, "attn_dropout_a": 0.0, "attn_dropout_v": 0.0,
    "embed_dropout": 0.0, "res_dropout": 0.0, "relu_dropout": 0.0,
    "text_dropout": 0.3, "output_dropout": 0.5,
}


@pytest.fixture(scope="module")
def vs_mmsa():
    spec = importlib.util.spec_from_file_location(
        "vs_mmsa", ROOT / "benchmarks" / "vs_mmsa.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_setting_matches_mmsa_and_builds(vs_mmsa):
    vs_mmsa.check_mmsa_mult_setting(MMSA_ARGS)
    model = build_model(
        "mult", feature_dims={"text": 6, "audio": 4, "vision": 3}, num_classes=3,
        **vs_mmsa.MMSA_MOSEI_MULT,
    )
    transformers = {layer.name: layer for layer in model.layers
                    if "_to_" in layer.name or layer.name.endswith("_memory")}
    # MMSA drops attention weights only where text is the source and in the
    # self-attention transformers.
    dropped = sorted(n for n, t in transformers.items() if t.attention_dropout)
    assert dropped == ["audio_memory", "text_memory", "text_to_audio",
                       "text_to_vision", "vision_memory"]


@pytest.mark.parametrize("field, value", [("attn_dropout_a", 0.1),
                                          ("conv1d_kernel_size_l", 3),
                                          ("res_dropout", 0.1)])
def test_a_changed_mmsa_setting_is_refused(vs_mmsa, field, value):
    args = dict(MMSA_ARGS, **{field: value})
    with pytest.raises(RuntimeError, match="differs from MMSA_MOSEI_MULT"):
        vs_mmsa.check_mmsa_mult_setting(args)
