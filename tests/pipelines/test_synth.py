"""The relevance simulator: shapes, determinism, label agreement, difficulty."""

import json

import numpy as np
import pytest

from keras_mre import data
from keras_mre.errors import ConfigError
from keras_mre_pipelines import synth


def read_split(path, split):
    ds = data.load_dataset(path, split, batch_size=512, shuffle=False, with_ids=True)
    features, labels, ids = {}, {}, []
    for f, y, i in ds:
        for k, v in f.items():
            features.setdefault(k, []).append(v.numpy())
        for k, v in y.items():
            labels.setdefault(k, []).append(v.numpy())
        ids.extend(i.numpy())
    return ({k: np.concatenate(v) for k, v in features.items()},
            {k: np.concatenate(v) for k, v in labels.items()}, ids)


def test_presets_shapes_and_metadata(tmp_path):
    info = synth.synthesize(tmp_path / "s", preset="sims", num_clips=9, seed=3, progress=False)
    assert info.feature_dims == {"text": 768, "audio": 33, "vision": 709}
    assert info.max_lengths == {"text": 39, "audio": 400, "vision": 55}
    assert info.class_names == ["neutral", "happy", "sad", "angry", "anxious"]
    assert sum(info.splits.values()) == 9 and set(info.splits) == {"train", "valid", "test"}
    assert info.unimodal_labels == {"text": True, "audio": True, "vision": True}
    assert info.provenance["agreement"] == {"text": 0.75, "audio": 0.5947, "vision": 0.8872}
    features, labels, _ = read_split(tmp_path / "s", "train")
    assert features["vision"].shape[1:] == (55, 709)
    for m, low in synth.PRESETS["sims"].min_lengths.items():
        lengths = features[f"{m}_length"]
        assert lengths.min() >= low and lengths.max() <= info.max_lengths[m]
    assert synth.PRESETS["mosei"].feature_dims == {"text": 768, "audio": 74, "vision": 35}
    assert synth.PRESETS["mosei"].max_lengths == {"text": 50, "audio": 500, "vision": 500}
    assert synth.PRESETS["sdme"].feature_dims == {"text": 768, "audio": 33, "vision": 35}


def test_deterministic_per_seed(tmp_path):
    kwargs = dict(preset="sdme", num_clips={"train": 6, "valid": 2, "test": 2}, progress=False)
    synth.synthesize(tmp_path / "a", seed=1, **kwargs)
    synth.synthesize(tmp_path / "b", seed=1, **kwargs)
    synth.synthesize(tmp_path / "c", seed=2, **kwargs)
    a, b, c = (read_split(tmp_path / x, "test") for x in "abc")
    for key in a[0]:
        np.testing.assert_array_equal(a[0][key], b[0][key])
    assert not np.array_equal(a[0]["text"], c[0]["text"])
    info_a = json.loads((tmp_path / "a" / "dataset.json").read_text())
    info_b = json.loads((tmp_path / "b" / "dataset.json").read_text())
    assert info_a == info_b


@pytest.mark.slow
def test_agreement_rates_and_fusion_beats_single_modalities(tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    synth.synthesize(tmp_path / "d", preset="sdme", seed=0,
                     num_clips={"train": 2000, "valid": 0, "test": 1000}, progress=False)
    train_x, train_y, _ = read_split(tmp_path / "d", "train")
    test_x, test_y, _ = read_split(tmp_path / "d", "test")
    for m, rate in synth.DEFAULT_AGREEMENT.items():
        agree = np.mean(np.concatenate([train_y[f"emotion_{m}"], test_y[f"emotion_{m}"]])
                        == np.concatenate([train_y["emotion"], test_y["emotion"]]))
        assert abs(agree - rate) < 0.03, (m, agree)

    def mean_frames(x, m):
        mask = np.arange(x[m].shape[1])[None, :] < x[f"{m}_length"][:, None]
        return (x[m] * mask[..., None]).sum(1) / np.maximum(mask.sum(1), 1)[:, None]

    def accuracy(modalities):
        a = np.concatenate([mean_frames(train_x, m) for m in modalities], 1)
        b = np.concatenate([mean_frames(test_x, m) for m in modalities], 1)
        clf = make_pipeline(StandardScaler(), PCA(16 * len(modalities), random_state=0),
                            LogisticRegression(max_iter=500, C=0.1))
        return clf.fit(a, train_y["emotion"]).score(b, test_y["emotion"])

    single = {m: accuracy([m]) for m in ("text", "audio", "vision")}
    fused = accuracy(["text", "audio", "vision"])
    assert fused > max(single.values()) + 0.04, (single, fused)
    assert fused > 0.6 and max(single.values()) < 0.8


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'iemocap'"):
        synth.synthesize(tmp_path / "x", preset="iemocap")
    with pytest.raises(ConfigError, match=r"agreement names unknown modality 'face'"):
        synth.synthesize(tmp_path / "x", agreement={"face": 0.5})
    with pytest.raises(ConfigError, match=r"agreement\['vision'\] must be in \[0, 1\], got 1.5"):
        synth.synthesize(tmp_path / "x", agreement={"vision": 1.5})
    with pytest.raises(ConfigError, match=r"num_clips names unknown split 'dev'"):
        synth.synthesize(tmp_path / "x", num_clips={"dev": 3})
    with pytest.raises(ConfigError, match=r"num_clips must be an integer >= 3"):
        synth.synthesize(tmp_path / "x", num_clips=1)


def test_cli_parser(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    synth.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--out", str(tmp_path / "d"), "--num-clips", "5",
                              "--seed", "4", "--agreement", "vision=0.5,audio=1", "--no-progress"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "5 classes" in out
    info = data.load_info(tmp_path / "d")
    assert info.provenance["agreement"]["vision"] == 0.5 and info.num_clips == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--out", "x", "--agreement", "vision"])
