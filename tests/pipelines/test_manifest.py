"""Manifest extraction: validation, bad clips, the CLI hook and an end-to-end run
on real speech, real transcripts and real OpenFace / face-video media."""

import argparse
import csv
import json
import re
import shutil

import numpy as np
import pytest
import soundfile

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre_pipelines.audio import AudioFeatureExtractor
from keras_mre_pipelines.manifest import add_parser
from keras_mre_pipelines.manifest import extract_manifest
from keras_mre_pipelines.manifest import read_manifest
from keras_mre_pipelines.openface import OpenFaceReader



COLUMNS = ["id", "split", "text", "audio", "vision", "label"]
SENTENCES = {
    "happy": ["I am so happy to see you again today.", "What wonderful news, thank you so much!"],
    "sad": ["I miss my old friends very much.", "Nothing has gone right for me this week."],
    "angry": ["Stop doing that right now, I mean it!", "This is the third time you broke my phone."],
}


def _write_manifest(path, rows, columns=COLUMNS):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    import keras_hub

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        {w.strip(".,!").lower() for s in sum(SENTENCES.values(), []) for w in s.split()}
    )
    directory = tmp_path_factory.mktemp("tiny_bert")
    keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), num_layers=1, num_heads=2, hidden_dim=8,
        intermediate_dim=16, max_sequence_length=64,
    ).save_to_preset(str(directory))
    keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(
        str(directory)
    )
    return directory


@pytest.fixture(scope="module")
def media(tmp_path_factory, test_assets):
    """Real speech (espeak-ng) for every sentence, plus the real OpenFace CSV."""
    assets = test_assets
    fetched = assets.fetch()
    folder = tmp_path_factory.mktemp("media")
    speech = {}
    for label, sentences in SENTENCES.items():
        for k, sentence in enumerate(sentences):
            speech[(label, k)] = assets.speak(
                sentence, folder / f"{label}{k}.wav", pitch=30 + 20 * k, speed=150 + 20 * k
            )
    shutil.copy(fetched.openface_csv, folder / "face.csv")
    return folder, speech, fetched


def _clip_rows(speech):
    rows = []
    splits = ["train", "train", "valid", "test", "train", "test"]
    for n, ((label, k), path) in enumerate(sorted(speech.items())):
        rows.append({
            "id": f"{label}{k}", "split": splits[n], "text": SENTENCES[label][k],
            "audio": path.name, "vision": "face.csv", "label": label,
        })
    return rows


# Manifest validation -------------------------------------------------------


@pytest.mark.parametrize(
    "rows, columns, message",
    [
        ([{"id": "a", "split": "train", "text": "hi"}], ["id", "split", "text"],
         "lacks the column\\(s\\) \\['label'\\]"),
        ([{"id": "a", "split": "train", "label": "x"}], ["id", "split", "label"],
         "has none of the modality columns"),
        ([], COLUMNS, "has a header but no clip rows"),
        ([{"id": "a", "split": "train", "text": "hi", "label": "x"},
          {"id": "a", "split": "test", "text": "yo", "label": "y"}], COLUMNS,
         "line 3: id 'a' repeats line 2"),
        ([{"id": "a", "split": "train", "text": "hi", "label": " "}], COLUMNS,
         "line 2: column 'label' is empty"),
        ([{"id": "a", "split": "my split", "text": "hi", "label": "x"}], COLUMNS,
         "line 2: split 'my split' must be letters, digits and '_'"),
        ([{"id": "a", "split": "train", "text": "hi", "label": "x"}],
         ["id", "split", "text", "label", "label_audio"],
         "has 'label_audio' but no 'audio' column"),
    ],
)
def test_manifest_validation(tmp_path, rows, columns, message):
    path = _write_manifest(tmp_path / "clips.csv", rows, columns)
    with pytest.raises(DataError, match=message):
        read_manifest(path)


def test_manifest_paths_and_extra_fields(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "clips.csv"
    path.write_text(
        " id , split,text,audio,vision,label,label_audio\n"
        "c1,train, Hello there ,../a.wav,/abs/v.csv,happy,\n"
        "c2,test,Bye,b.wav,,sad,angry\n"
    )
    rows, modalities = read_manifest(path)
    assert modalities == ["text", "audio", "vision"]
    assert rows[0].inputs == {"text": " Hello there ", "audio": str(tmp_path / "a.wav"),
                              "vision": "/abs/v.csv"}
    assert rows[1].inputs["vision"] == ""
    assert rows[0].unimodal_labels == {} and rows[1].unimodal_labels == {"audio": "angry"}
    assert rows[1].line == 3
    path.write_text("id,split,text,label\nc1,train,hi,x,extra\n")
    with pytest.raises(DataError, match="line 2: more fields than the 4 columns"):
        read_manifest(path)
    with pytest.raises(DataError, match="manifest .*missing.csv does not exist"):
        read_manifest(tmp_path / "missing.csv")


def test_option_errors(tmp_path, tiny_preset):
    path = _write_manifest(tmp_path / "clips.csv", [
        {"id": "a", "split": "train", "text": "hi", "label": "x"}], ["id", "split", "text", "label"])
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="on_error must be one of \\['fail', 'skip'\\], got 'ignore'"):
        extract_manifest(path, out, text_encoder=tiny_preset, on_error="ignore")
    with pytest.raises(ConfigError, match="workers must be a positive integer, got 0"):
        extract_manifest(path, out, text_encoder=tiny_preset, workers=0)
    with pytest.raises(ConfigError, match="max_lengths names 'audio', the manifest has \\['text'\\]"):
        extract_manifest(path, out, text_encoder=tiny_preset, max_lengths={"audio": 4})
    with pytest.raises(DataError, match="line 2 column 'label': class 'x' is not in class_names \\['y'\\]"):
        extract_manifest(path, out, text_encoder=tiny_preset, class_names=["y"])


# Real media ----------------------------------------------------------------


@pytest.mark.extract
@pytest.mark.slow
def test_end_to_end_real_media(media, tmp_path):
    import keras_mre
    from keras_mre.data import load_dataset
    from keras_mre.data import load_info

    folder, speech, fetched = media
    rows = _clip_rows(speech)
    rows[0]["label_audio"] = "sad"
    rows[1]["label_text"] = "happy"
    manifest = _write_manifest(folder / "clips.csv", rows, COLUMNS + ["label_text", "label_audio"])
    out = tmp_path / "data"
    info = extract_manifest(
        manifest, out, text_encoder=fetched.minilm_preset, vision="openface", workers=2,
        max_lengths={"audio": 120}, progress=False,
    )
    assert info.modalities == ["text", "audio", "vision"]
    assert info.feature_dims == {"text": 384, "audio": 33, "vision": 35}
    assert info.class_names == ["angry", "happy", "sad"]
    assert info.splits == {"train": 3, "valid": 1, "test": 2}
    assert info.skipped == []
    assert info.unimodal_labels == {"text": True, "audio": True, "vision": False}
    assert info.max_lengths["audio"] == 120 and info.max_lengths["vision"] == 100
    assert info.max_lengths["text"] <= 50
    stored = json.loads((out / "dataset.json").read_text())
    extractors = stored["provenance"]["extractors"]
    assert extractors["audio"]["parameters"]["hop_length"] == 512
    assert extractors["text"]["backbone"]["num_layers"] == 6
    assert extractors["vision"]["extractor"] == "openface"
    assert stored["provenance"]["clips"] == {"listed": 6, "extracted": 6, "skipped": 0}

    # What was stored is what the extractors give, padded to max length.
    features, labels, ids = next(iter(load_dataset(out, "train", batch_size=8, shuffle=False,
                                                   with_ids=True)))
    first = [i.decode() for i in ids.numpy()].index("angry0")
    audio = AudioFeatureExtractor()(speech[("angry", 0)])
    n = min(len(audio), 120)
    assert int(features["audio_length"][first]) == n
    np.testing.assert_allclose(features["audio"][first, :n].numpy(), audio[:n], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(features["vision"][first].numpy(), OpenFaceReader()(fetched.openface_csv))
    order = [i.decode() for i in ids.numpy()]
    assert sorted(order) == ["angry0", "angry1", "sad0"]
    angry0, angry1, sad0 = (order.index(i) for i in ("angry0", "angry1", "sad0"))
    assert [int(labels["emotion"][i]) for i in (angry0, angry1, sad0)] == [0, 0, 2]
    assert [int(labels["emotion_audio"][i]) for i in (angry0, angry1, sad0)] == [2, -1, -1]
    assert [int(labels["emotion_text"][i]) for i in (angry0, angry1, sad0)] == [-1, 1, -1]

    info = load_info(out)
    model = keras_mre.build_model(feature_dims=info.feature_dims, num_classes=info.num_classes)
    outputs = model.predict(load_dataset(out, "test", batch_size=4), verbose=0)
    assert outputs["emotion"].shape == (2, 3)
    np.testing.assert_allclose(outputs["emotion"].sum(axis=1), 1.0, rtol=1e-5)


def _bad_clip_manifest(folder, speech, tmp_path):
    rows = _clip_rows(speech)[:2]
    good = rows[0]
    sr = 22050
    soundfile.write(tmp_path / "silence.wav", np.zeros(sr, np.float32), sr)
    soundfile.write(tmp_path / "blip.wav", 0.5 * np.sin(np.arange(800) / 5).astype(np.float32), sr)
    (tmp_path / "notes.wav").write_text("not audio\n")
    with open(folder / "face.csv", newline="") as handle:
        table = list(csv.reader(handle))
    success = [h.strip() for h in table[0]].index("success")
    for row in table[1:]:
        row[success] = "0"
    with open(tmp_path / "lost.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(table)
    shutil.copy(folder / "face.csv", tmp_path / "face.csv")
    for name, path in speech.items():
        shutil.copy(path, tmp_path / path.name)

    def bad(clip_id, **changes):
        return dict(good, id=clip_id, **changes)

    rows += [
        bad("missing_audio", audio="nowhere.wav"),
        bad("not_audio", audio="notes.wav"),
        bad("silent", audio="silence.wav"),
        bad("too_short", audio="blip.wav"),
        bad("no_transcript", text="   "),
        bad("no_face_frames", vision="lost.csv"),
    ]
    return _write_manifest(tmp_path / "clips.csv", rows)


CAUSES = {
    "missing_audio": "audio: audio file .*nowhere.wav does not exist",
    "not_audio": "audio: audio file .*notes.wav cannot be decoded as audio",
    "silent": "audio: audio .*silence.wav is silent",
    "too_short": "audio: audio .*blip.wav is shorter than one frame",
    "no_transcript": "text: transcript is empty",
    "no_face_frames": "vision: OpenFace CSV .*lost.csv has no usable frame",
}


@pytest.mark.extract
def test_bad_clips_are_skipped_and_listed(media, tiny_preset, tmp_path, capsys):
    folder, speech, _ = media
    manifest = _bad_clip_manifest(folder, speech, tmp_path)
    info = extract_manifest(manifest, tmp_path / "data", text_encoder=tiny_preset,
                            on_error="skip", progress=True)
    assert info.num_clips == 2
    reasons = {entry["id"]: entry["reason"] for entry in info.skipped}
    assert set(reasons) == set(CAUSES)
    for clip_id, cause in CAUSES.items():
        assert re.search(cause, reasons[clip_id]), (clip_id, reasons[clip_id])
    assert all(entry["split"] == "train" for entry in info.skipped)
    stored = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert {entry["id"] for entry in stored["skipped"]} == set(CAUSES)
    summary = capsys.readouterr().err
    assert "extracted 2 of 8 clips" in summary
    assert "skipped 6 clips:" in summary
    assert "train/silent: audio: audio" in summary


@pytest.mark.extract
@pytest.mark.parametrize("clip_id", sorted(CAUSES))
def test_bad_clip_fails_naming_the_clip(media, tiny_preset, tmp_path, clip_id):
    folder, speech, _ = media
    manifest = _bad_clip_manifest(folder, speech, tmp_path)
    rows = [r for r in csv.DictReader(open(manifest)) if r["id"] in ("angry0", clip_id)]
    _write_manifest(manifest, rows)
    with pytest.raises(DataError, match=f"clip '{clip_id}' \\(manifest line 3\\) {CAUSES[clip_id]}"):
        extract_manifest(manifest, tmp_path / "data", text_encoder=tiny_preset, progress=False)
    assert not (tmp_path / "data").exists()


@pytest.mark.extract
def test_nothing_left(media, tiny_preset, tmp_path):
    folder, speech, _ = media
    manifest = _bad_clip_manifest(folder, speech, tmp_path)
    rows = [r for r in csv.DictReader(open(manifest)) if r["id"] in ("silent", "too_short")]
    _write_manifest(manifest, rows)
    with pytest.raises(DataError, match="no clip could be extracted \\(2 skipped; first: clip 'silent'"):
        extract_manifest(manifest, tmp_path / "data", text_encoder=tiny_preset, on_error="skip",
                         progress=False)


@pytest.mark.extract
def test_mediapipe_videos_through_the_cli(media, tiny_preset, tmp_path, capsys):
    folder, speech, fetched = media
    rows = _clip_rows(speech)[:3]
    for row in rows:
        row["audio"] = str(speech[(row["label"], int(row["id"][-1]))])
        row["vision"] = str(fetched.face_video)
    rows[2]["vision"] = str(fetched.no_face_video)
    manifest = _write_manifest(tmp_path / "clips.csv", rows)
    parser = argparse.ArgumentParser(prog="keras-mre")
    add_parser(parser.add_subparsers())
    out = tmp_path / "data"
    args = parser.parse_args([
        "extract", "--manifest", str(manifest), "--out", str(out), "--text-encoder",
        str(tiny_preset), "--vision", "mediapipe", "--face-model", str(fetched.face_landmarker),
        "--frame-stride", "6", "--on-error", "skip", "--quiet",
    ])
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "extracted 2 of 3 clips" in printed
    assert "vision 52-d" in printed
    assert "no face found in any of its 16 analysed frames" in printed
    stored = json.loads((out / "dataset.json").read_text())
    assert stored["feature_dims"]["vision"] == 52
    assert stored["provenance"]["extractors"]["vision"]["parameters"]["frame_stride"] == 6
    assert stored["max_lengths"]["vision"] == 12

    args = parser.parse_args(["extract", "--manifest", str(manifest), "--out", str(out),
                              "--text-encoder", str(tiny_preset), "--quiet"])
    with pytest.raises(DataError, match="already exists; pass overwrite=True"):
        args.handler(args)
    args = parser.parse_args(["extract", "--manifest", str(manifest), "--out", str(out),
                              "--max-lengths", "audio:4"])
    with pytest.raises(ConfigError, match="--max-lengths: expected MODALITY=FRAMES"):
        args.handler(args)
