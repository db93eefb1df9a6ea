"""Extractors and the manifest command on empty, zero-length and non-finite media.

Real-media cases (videos without faces, transcripts without words, every
MMSA layout) live in tests/pipelines; this file adds the degenerate files a
user's collection always contains.
"""

import csv
import os
import re

import numpy as np
import pytest
import soundfile

from keras_mre.errors import DataError
from keras_mre_pipelines.audio import AudioFeatureExtractor
from keras_mre_pipelines.openface import AU_COLUMNS
from keras_mre_pipelines.openface import OpenFaceReader

from .conftest import assert_one_line_error

SR = 22050


def test_zero_byte_wav(tmp_path):
    path = tmp_path / "zero.wav"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"zero.wav cannot be decoded as audio"):
        AudioFeatureExtractor()(path)


def test_wav_without_samples(tmp_path):
    path = tmp_path / "none.wav"
    soundfile.write(path, np.zeros(0, np.float32), SR)
    with pytest.raises(DataError, match=r"none.wav is shorter than one frame: 0 samples at 22050 Hz"):
        AudioFeatureExtractor()(path)


def test_float_wav_with_nan_samples(tmp_path):
    path = tmp_path / "nan.wav"
    signal = np.sin(np.linspace(0, 200, SR)).astype(np.float32)
    signal[100] = np.nan
    soundfile.write(path, signal, SR, subtype="FLOAT")
    with pytest.raises(DataError, match=r"audio file .*nan.wav contains NaN or infinite samples"):
        AudioFeatureExtractor()(path)


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
def test_float_wav_with_huge_samples(tmp_path):
    path = tmp_path / "loud.wav"
    soundfile.write(path, np.full(SR, 1e30, np.float32), SR, subtype="FLOAT")
    with pytest.raises(DataError, match=r"loud.wav: \d+ of \d+ frames have non-finite features"):
        AudioFeatureExtractor()(path)


def write_openface(path, rows):
    header = ["frame", " confidence", " success", *[f" {c}" for c in AU_COLUMNS]]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_zero_byte_openface_csv(tmp_path):
    path = tmp_path / "face.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"OpenFace CSV .*face.csv is empty"):
        OpenFaceReader()(path)


def test_openface_csv_with_a_header_only(tmp_path):
    path = tmp_path / "face.csv"
    write_openface(path, [])
    with pytest.raises(DataError, match=r"face.csv has no usable frame: 0 rows"):
        OpenFaceReader()(path)


def test_openface_csv_with_non_finite_values(tmp_path):
    path = tmp_path / "face.csv"
    values = [1.0] * len(AU_COLUMNS)
    write_openface(path, [[1, 0.98, 1, *(["nan"] + values[1:])],
                          [2, 0.98, 1, *(["inf"] + values[1:])]])
    with pytest.raises(DataError, match=r"face.csv has no usable frame: 2 rows, 2 with success == 0"):
        OpenFaceReader()(path)
    write_openface(path, [[1, 0.98, 1, *(["nan"] + values[1:])], [2, 0.98, 1, *values]])
    frames = OpenFaceReader().read(path)
    assert frames.features.shape == (1, 35) and frames.dropped_unsuccessful == 1


def test_openface_csv_with_text_in_a_number_column(tmp_path):
    path = tmp_path / "face.csv"
    write_openface(path, [[1, 0.98, 1, *(["high"] + [1.0] * (len(AU_COLUMNS) - 1))]])
    with pytest.raises(DataError, match=r"face.csv row 2: could not convert string to float: 'high'"):
        OpenFaceReader()(path)


def test_extract_with_an_empty_manifest(cli, tmp_path):
    manifest = tmp_path / "clips.csv"
    manifest.write_text("")
    status, _, err = cli("extract", "--manifest", manifest, "--out", tmp_path / "out", "--quiet")
    assert_one_line_error(status, err, r"manifest .*clips.csv is empty \(expected a header line\)")
    assert not (tmp_path / "out").exists()


def test_extract_fails_on_a_zero_byte_clip_and_writes_nothing(cli, tmp_path):
    good = tmp_path / "good.wav"
    soundfile.write(good, np.sin(np.linspace(0, 3000, SR)).astype(np.float32), SR)
    (tmp_path / "empty.wav").write_bytes(b"")
    manifest = tmp_path / "clips.csv"
    manifest.write_text("id,split,audio,label\n"
                        "a,train,good.wav,happy\n"
                        "b,train,empty.wav,sad\n")
    status, _, err = cli("extract", "--manifest", manifest, "--out", tmp_path / "out", "--quiet")
    assert_one_line_error(status, err, r"'b'", r"empty.wav")
    assert not (tmp_path / "out").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out.")]


@pytest.mark.parametrize("separator", [";", "\t"])
def test_manifest_with_another_separator(tmp_path, separator):
    from keras_mre_pipelines.manifest import read_manifest

    manifest = tmp_path / "clips.csv"
    manifest.write_text(separator.join(["id", "split", "audio", "label"]) + "\n"
                        + separator.join(["a", "train", "a.wav", "happy"]) + "\n")
    expected = re.escape(f"separates its columns with {separator!r}; expected a comma-separated CSV file")
    with pytest.raises(DataError, match=r"manifest .*clips.csv " + expected):
        read_manifest(manifest)


def test_manifest_saved_with_a_byte_order_mark(tmp_path):
    from keras_mre_pipelines.manifest import read_manifest

    manifest = tmp_path / "clips.csv"
    manifest.write_bytes("id,split,audio,label\r\na,train,a.wav,happy\r\n".encode("utf-8-sig"))
    rows, modalities = read_manifest(manifest)
    assert modalities == ["audio"] and [r.id for r in rows] == ["a"]
