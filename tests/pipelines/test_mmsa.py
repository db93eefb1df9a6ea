"""The MMSA pickle converter: every layout, MMSA's label rules, safety, errors."""

import os
import pickle

import numpy as np
import pytest

from keras_mre import data
from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre_pipelines import mmsa
from keras_mre_pipelines import safe_pickle

FLAVOURS = ["mosei_unaligned", "mosi_aligned", "mosi_unaligned", "sims_unaligned",
            "simsv2_unaligned"]
SPLIT_SIZES = {"train": 7, "valid": 3, "test": 4}


def read_all(path, split):
    ds = data.load_dataset(path, split, batch_size=64, shuffle=False, with_ids=True)
    (features, labels, ids), = list(ds)
    return ({k: v.numpy() for k, v in features.items()}, {k: v.numpy() for k, v in labels.items()},
            [i.decode() for i in ids.numpy()])


def reference(split_data, spec):
    """What the converter must produce for one split, computed directly."""
    out = {}
    text_len = split_data["text_bert"][:, 1].sum(1).astype(int)
    for m in ("text", "audio", "vision"):
        x = np.where(np.isneginf(split_data[m]), 0, split_data[m]).astype(np.float32)
        if m == "text":
            lengths = text_len
        elif spec["lengths"]:
            lengths = np.array(split_data[f"{m}_lengths"])
        else:
            lengths = text_len
        x = x * (np.arange(x.shape[1])[None, :, None] < lengths[:, None, None])
        out[m] = x
        out[f"{m}_length"] = lengths
    return out


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_flavour_converts_exactly(tmp_path, mmsa_pickle, mmsa_layouts, flavour):
    path, content = mmsa_pickle(flavour)
    info = mmsa.convert_mmsa(path, tmp_path / "out", task="3class", progress=False)
    spec = mmsa_layouts.flavours[flavour]
    assert mmsa_layouts.split_sizes == SPLIT_SIZES
    assert info.splits == SPLIT_SIZES
    assert info.feature_dims == {m: spec[m][1] for m in ("text", "audio", "vision")}
    assert info.max_lengths == {m: spec[m][0] for m in ("text", "audio", "vision")}
    assert info.has_score and info.num_classes == 3
    sims = flavour.startswith("sims")
    assert info.provenance["dataset"] == ("sims" if sims else "mosi")
    assert info.provenance["aligned"] == (not spec["lengths"])
    assert info.unimodal_labels == {m: sims for m in ("text", "audio", "vision")}
    assert info.provenance["neg_inf_replaced"]["train"]["audio"] == 2
    for split in SPLIT_SIZES:
        features, labels, ids = read_all(tmp_path / "out", split)
        want = reference(content[split], spec)
        for key, value in want.items():
            np.testing.assert_array_equal(features[key], value, err_msg=f"{split} {key}")
        assert ids == list(content[split]["id"])
        np.testing.assert_allclose(labels["score"], content[split]["regression_labels"], rtol=1e-6)
        dataset = "sims" if sims else "mosi"
        np.testing.assert_array_equal(
            labels["emotion"], mmsa.score_to_class(content[split]["regression_labels"], dataset, "3class"))
        for m, suffix in (("text", "T"), ("audio", "A"), ("vision", "V")):
            if sims:
                np.testing.assert_array_equal(
                    labels[f"emotion_{m}"],
                    mmsa.score_to_class(content[split][f"regression_labels_{suffix}"], "sims", "3class"))
            else:
                assert (labels[f"emotion_{m}"] == -1).all()
    assert data.verify_dataset(tmp_path / "out") == SPLIT_SIZES


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("threshold", [1, None])
def test_pickle_protocols_lazy_and_eager(tmp_path, mmsa_pickle, mmsa_layouts, monkeypatch,
                                        protocol, threshold):
    content = mmsa_layouts.make("mosi_unaligned")
    # Over 64 KiB, so that protocols 4 and 5 write it outside a frame.
    content["train"]["audio"] = np.random.default_rng(0).normal(size=(7, 400, 5))
    path, content = mmsa_pickle("mosi_unaligned", protocol=protocol, content=content)
    if threshold is not None:
        monkeypatch.setattr(safe_pickle, "LAZY_THRESHOLD", threshold)
    loaded = safe_pickle.load_pickle(path)
    audio = loaded["train"]["audio"]
    if threshold == 1 and protocol >= 3:
        assert isinstance(audio, safe_pickle.LazyArray)
        np.testing.assert_array_equal(audio.rows(2, 5), content["train"]["audio"][2:5])
    np.testing.assert_array_equal(np.asarray(audio), content["train"]["audio"])
    assert list(loaded["valid"]["raw_text"]) == list(content["valid"]["raw_text"])
    assert loaded["test"]["audio_lengths"] == content["test"]["audio_lengths"]
    info = mmsa.convert_mmsa(path, tmp_path / "out", progress=False, chunk_size=3)
    features, _, _ = read_all(tmp_path / "out", "train")
    np.testing.assert_array_equal(features["vision"], reference(content["train"], mmsa_layouts.flavours["mosi_unaligned"])["vision"])
    assert info.splits == SPLIT_SIZES


def test_cmu_label_rules_match_mmsa():
    scores = np.array([-3.2, -2.5, -1.5, -0.5, -0.4, 0.0, 0.4, 0.5, 1.5, 2.5, 3.4])
    assert mmsa.score_to_class(scores, "mosei", "binary").tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert mmsa.score_to_class(scores, "mosei", "binary_non0").tolist() == [0, 0, 0, 0, 0, -1, 1, 1, 1, 1, 1]
    # clip then round half to even: -0.5 -> -0, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    assert mmsa.score_to_class(scores, "mosi", "3class").tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2]
    assert mmsa.score_to_class(scores, "mosi", "5class").tolist() == [0, 0, 0, 2, 2, 2, 2, 2, 4, 4, 4]
    assert mmsa.score_to_class(scores, "mosi", "7class").tolist() == [0, 1, 1, 3, 3, 3, 3, 3, 5, 5, 6]
    assert mmsa.class_names("mosi", "7class")[3] == "neutral"


def test_sims_label_rules_match_mmsa():
    scores = np.array([-1.2, -0.7, -0.6, -0.1, -0.05, 0.0, 0.1, 0.2, 0.7, 0.8, 1.3])
    assert mmsa.score_to_class(scores, "sims", "binary").tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert mmsa.score_to_class(scores, "sims", "3class").tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert mmsa.score_to_class(scores, "simsv2", "5class").tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    # scores stored as float32 compare against float32 edges, as in MMSA
    assert mmsa.score_to_class(np.float32([0.1, -0.1, 0.7]), "sims", "5class").tolist() == [2, 1, 3]


def test_binary_non0_skips_and_lists_zero_scores(tmp_path, mmsa_pickle):
    path, content = mmsa_pickle("mosei_unaligned")
    info = mmsa.convert_mmsa(path, tmp_path / "out", task="binary_non0", dataset="mosei", progress=False)
    assert info.splits["train"] == SPLIT_SIZES["train"] - 1
    assert info.skipped == [{"id": "train_clip$0", "split": "train",
                             "reason": "score 0.0 has no class in task binary_non0"}]
    assert data.load_info(tmp_path / "out").skipped == info.skipped
    assert info.class_names == ["negative", "positive"]


def test_regression_task_keeps_scores(tmp_path, mmsa_pickle):
    path, content = mmsa_pickle("sims_unaligned")
    info = mmsa.convert_mmsa(path, tmp_path / "out", task="regression", progress=False)
    assert info.provenance["task"] == "regression" and info.class_names == ["negative", "positive"]
    _, labels, _ = read_all(tmp_path / "out", "test")
    np.testing.assert_allclose(labels["score"], content["test"]["regression_labels"], rtol=1e-6)


class _Marker:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _EvalMarker:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (eval, (f"open({str(self.target)!r}, 'w').write('x')",))


@pytest.mark.parametrize("payload, refused", [
    (_Marker, r"(posix|os)\.system"),
    (_EvalMarker, r"builtins\.eval"),
])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, mmsa_pickle, payload, refused):
    marker = tmp_path / "pwned"
    content = {"train": {"audio": payload(marker)}, "valid": {}, "test": {}}
    path, _ = mmsa_pickle("mosi_unaligned", content=content)
    with pytest.raises(DataError, match=rf"{path.name}: refused to load: the pickle asks for global {refused}.*nothing was executed"):
        mmsa.convert_mmsa(path, tmp_path / "out", progress=False)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    # The same file does run code with the standard unpickler: the test is real.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_subprocess_and_exec_globals_are_refused(tmp_path):
    import subprocess

    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps((subprocess.Popen, exec)))
    with pytest.raises(DataError, match=r"refused to load: the pickle asks for global subprocess\.Popen"):
        safe_pickle.load_pickle(path)
    path.write_bytes(b"\x80\x04cbuiltins\nexec\n.")
    with pytest.raises(DataError, match=r"global builtins\.exec"):
        safe_pickle.load_pickle(path)


@pytest.fixture
def broken(mmsa_layouts):
    def make(flavour, change):
        content = mmsa_layouts.make(flavour)
        change(content)
        return content

    return make


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("test"), r"no split 'test'; found keys \['train', 'valid'\]"),
    (lambda c: c["valid"].pop("vision"), r"split 'valid' has no key 'vision'; found \["),
    (lambda c: c["train"].pop("regression_labels"), r"split 'train' has no key 'regression_labels'"),
    (lambda c: c["train"].update(audio=c["train"]["audio"][:, :, 0]),
     r"split 'train' key 'audio' has shape \(7, 12\), expected \[7, frames, dim\]"),
    (lambda c: c["test"].update(vision=c["test"]["vision"][:2]),
     r"split 'test' key 'vision' has shape \(2, 10, 20\), expected \[4, frames, dim\]"),
    (lambda c: c["train"].update(text=c["train"]["text"].astype(object)),
     r"split 'train' key 'text' has dtype object, expected numbers"),
    (lambda c: c["valid"].update(audio=c["valid"]["audio"][:, :, :3]),
     r"key 'audio' has different feature dims per split: \{'train': 5, 'valid': 3, 'test': 5\}"),
    (lambda c: c["train"]["regression_labels"].__setitem__(2, np.nan),
     r"split 'train' key 'regression_labels' row 2 is nan"),
    (lambda c: c["train"].update(regression_labels=np.array(["a"] * 7, dtype=object)),
     r"key 'regression_labels' has dtype object, expected numbers"),
    (lambda c: c["train"].update(audio_lengths=[-1] * 7),
     r"split 'train' row 0: audio length -1 is negative"),
    (lambda c: c["train"].update(vision_lengths=[3] * 6),
     r"split 'train' key 'vision_lengths' has shape \(6,\), expected \[7\]"),
    (lambda c: c["test"].update(text_bert=c["test"]["text_bert"][:, :2]),
     r"split 'test' key 'text_bert' has shape \(4, 2, 8\), expected \[4, 3, L\]"),
    (lambda c: c.update(train=[1, 2]), r"split 'train' must be a dict of arrays, got list"),
])
def test_bad_pickles(tmp_path, mmsa_pickle, broken, change, message):
    path, _ = mmsa_pickle("mosi_unaligned", content=broken("mosi_unaligned", change))
    with pytest.raises(DataError, match=message):
        mmsa.convert_mmsa(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_nan_feature_names_clip(tmp_path, mmsa_pickle, broken):
    content = broken("mosi_unaligned", lambda c: c["valid"]["vision"].__setitem__((1, 0, 3), np.nan))
    content["valid"]["vision_lengths"][1] = 10
    path, _ = mmsa_pickle("mosi_unaligned", content=content)
    with pytest.raises(DataError, match=r"clip 'valid_clip\$1' field 'vision': non-finite value nan at frame 0, column 3"):
        mmsa.convert_mmsa(path, tmp_path / "out", progress=False)


def test_not_a_pickle_and_missing_file(tmp_path):
    text = tmp_path / "notes.pkl"
    text.write_text("hello, this is not a pickle\n")
    with pytest.raises(DataError, match=r"notes.pkl: not a readable pickle of numpy arrays"):
        mmsa.convert_mmsa(text, tmp_path / "out", progress=False)
    with pytest.raises(DataError, match=r"nowhere.pkl: pickle file not found"):
        mmsa.convert_mmsa(tmp_path / "nowhere.pkl", tmp_path / "out", progress=False)
    top = tmp_path / "list.pkl"
    top.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match=r"top level must be a dict with splits \['train', 'valid', 'test'\], got list"):
        mmsa.convert_mmsa(top, tmp_path / "out", progress=False)


def test_truncated_pickle(tmp_path, mmsa_pickle, monkeypatch):
    path, _ = mmsa_pickle("mosi_unaligned")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"truncated pickle|not a readable pickle"):
        mmsa.convert_mmsa(path, tmp_path / "out", progress=False)
    monkeypatch.setattr(safe_pickle, "LAZY_THRESHOLD", 1)
    with pytest.raises(DataError, match=r"truncated pickle|not a readable pickle"):
        mmsa.convert_mmsa(path, tmp_path / "out", progress=False)


def test_bad_task_and_dataset(tmp_path, mmsa_pickle):
    path, _ = mmsa_pickle("sims_unaligned")
    with pytest.raises(ConfigError, match=r"task '7class' is not defined for sims"):
        mmsa.convert_mmsa(path, tmp_path / "out", task="7class", progress=False)
    with pytest.raises(ConfigError, match=r"unknown task 'ordinal'"):
        mmsa.convert_mmsa(path, tmp_path / "out", task="ordinal")
    with pytest.raises(ConfigError, match=r"unknown dataset 'iemocap'"):
        mmsa.convert_mmsa(path, tmp_path / "out", dataset="iemocap")


def test_cli_parser(tmp_path, mmsa_pickle, capsys):
    import argparse

    path, _ = mmsa_pickle("mosi_unaligned")
    parser = argparse.ArgumentParser()
    convert = parser.add_subparsers(dest="command").add_parser("convert")
    mmsa.add_parser(convert.add_subparsers(dest="source"))
    args = parser.parse_args(["convert", "mmsa", str(path), "--out", str(tmp_path / "o"),
                              "--task", "5class", "--no-progress"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "mosi 5class, 5 classes, train 7, valid 3, test 4 clips; 6 -inf values set to 0" in out
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "mmsa", str(path), "--out", "x", "--task", "9class"])
