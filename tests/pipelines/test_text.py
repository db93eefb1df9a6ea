"""Text features: a tiny random BERT preset and the pretrained MiniLM."""


import numpy as np
import pytest

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre_pipelines.text import TextFeatureExtractor



VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "i am so happy glad sad angry today you the a leave me alone".split()
)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    import keras_hub

    directory = tmp_path_factory.mktemp("tiny_bert")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCABULARY),
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=32,
    )
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCABULARY, lowercase=True)
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory, backbone


def test_tiny_preset_token_features_match_backbone(tiny_preset):
    directory, backbone = tiny_preset
    encoder = TextFeatureExtractor(directory, max_length=6, batch_size=2)
    assert encoder.feature_dim == 8
    texts = ["I am so happy", "sad", "you you you you you you you you", "Leave me"]
    features = encoder(texts)
    # [CLS] + words + [SEP], cut to max_length.
    assert [f.shape for f in features] == [(6, 8), (3, 8), (6, 8), (4, 8)]
    assert all(f.dtype == np.float32 and np.isfinite(f).all() for f in features)

    ids = {w: i for i, w in enumerate(VOCABULARY)}
    token_ids = np.zeros((1, 6), "int32")
    token_ids[0, :4] = [ids["[CLS]"], ids["leave"], ids["me"], ids["[SEP]"]]
    mask = token_ids != 0
    expected = backbone.predict_on_batch(
        {"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids),
         "padding_mask": mask}
    )["sequence_output"]
    np.testing.assert_allclose(features[3], expected[0, :4], atol=1e-5)


def test_batching_does_not_change_features(tiny_preset):
    directory, _ = tiny_preset
    texts = ["i am glad", "the angry you", "a sad day today", "me"]
    one = TextFeatureExtractor(directory, max_length=8, batch_size=1)(texts)
    four = TextFeatureExtractor(directory, max_length=8, batch_size=4)(texts)
    for a, b in zip(one, four):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_provenance_records_preset_and_versions(tiny_preset):
    directory, _ = tiny_preset
    record = TextFeatureExtractor(directory, max_length=7).provenance()
    assert record["parameters"] == {"preset": str(directory), "max_length": 7, "batch_size": 32}
    assert record["backbone"]["num_layers"] == 1
    assert record["feature_dim"] == 8
    assert "keras_hub" in record["versions"]


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_transcript_names_the_clip(tiny_preset, text):
    directory, _ = tiny_preset
    encoder = TextFeatureExtractor(directory)
    with pytest.raises(DataError, match="transcript of clip_7 is empty"):
        encoder(["i am glad", text], sources=["clip_6", "clip_7"])


def test_bad_arguments(tiny_preset, tmp_path):
    directory, _ = tiny_preset
    with pytest.raises(ConfigError, match="max_length must be an integer >= 3, got 2"):
        TextFeatureExtractor(directory, max_length=2)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        TextFeatureExtractor(directory, batch_size=0)
    with pytest.raises(ConfigError, match="preset directory .*nowhere does not exist"):
        TextFeatureExtractor(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="could not be loaded as a BERT backbone"):
        TextFeatureExtractor(tmp_path)


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.extract
def test_pretrained_minilm_puts_similar_sentences_closer(test_assets):
    assets = test_assets.fetch()
    encoder = TextFeatureExtractor(assets.minilm_preset, max_length=50)
    assert encoder.feature_dim == 384
    sentences = [
        "I am so happy and excited about this wonderful news.",
        "This great news makes me really glad and thrilled.",
        "The train to the airport leaves from platform four.",
        "I feel sad and lonely since my friend moved away.",
        "Ever since my best friend left, I have been unhappy and alone.",
        "Add two cups of flour and bake the bread for an hour.",
    ]
    features = encoder(sentences)
    assert [f.shape[1] for f in features] == [384] * 6
    pooled = [f.mean(axis=0) for f in features]
    assert _cosine(pooled[0], pooled[1]) > _cosine(pooled[0], pooled[2]) + 0.1
    assert _cosine(pooled[3], pooled[4]) > _cosine(pooled[3], pooled[5]) + 0.1
    assert _cosine(pooled[1], pooled[0]) > _cosine(pooled[1], pooled[5])
