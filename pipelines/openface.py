"""Facial action units from OpenFace 2.x `FeatureExtraction` CSV files.

OpenFace writes one row per video frame. The 35-d visual recipe keeps the 17
action-unit intensities `AU01_r … AU45_r` followed by the 18 presence flags
`AU01_c … AU45_c` (AU28 has a presence flag only). Frames where OpenFace lost
the face (`success == 0`) or tracked it with low `confidence` are dropped and
counted. Column names may carry a leading space, as some OpenFace versions
write them.

```python
from keras_mre_pipelines.openface import OpenFaceReader
frames = OpenFaceReader(min_confidence=0.8)("clip.csv")   # float32 [frames, 35]
```
"""

import csv
import dataclasses
import os

import numpy as np

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError

AU_INTENSITY_COLUMNS = tuple(
    f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
)
AU_PRESENCE_COLUMNS = tuple(
    f"AU{n:02d}_c" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28, 45)
)
AU_COLUMNS = AU_INTENSITY_COLUMNS + AU_PRESENCE_COLUMNS


@dataclasses.dataclass
class OpenFaceFrames:
    """Frames read from one OpenFace CSV.

    Attributes:
        features: float32 `[kept, 35]` action units of the kept frames.
        total: rows in the file.
        dropped_unsuccessful: rows with `success == 0` or a non-finite
            action-unit value.
        dropped_low_confidence: successful rows below `min_confidence`.
    """

    features: np.ndarray
    total: int
    dropped_unsuccessful: int
    dropped_low_confidence: int

    @property
    def dropped(self):
        """Dropped frame counts by reason."""
        return {
            "unsuccessful": self.dropped_unsuccessful,
            "low_confidence": self.dropped_low_confidence,
        }


class OpenFaceReader:
    """Reads the 35 action-unit columns of OpenFace 2.x CSV files.

    Args:
        min_confidence: frames whose `confidence` is below this value are
            dropped (OpenFace's tracking confidence is in [0, 1]).

    Calling the reader on a path returns float32 `[frames, 35]`; `read`
    also returns how many frames were dropped and why. A file without any
    usable frame, or without the action-unit columns, raises `DataError`.
    """

    name = "openface"

    def __init__(self, min_confidence=0.8):
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ConfigError(
                f"OpenFaceReader: min_confidence must be in [0, 1], got {min_confidence!r}"
            )
        self.min_confidence = float(min_confidence)

    feature_dim = len(AU_COLUMNS)
    feature_names = list(AU_COLUMNS)

    def get_config(self):
        """Constructor arguments, for provenance records."""
        return {"min_confidence": self.min_confidence}

    def provenance(self):
        """Name, parameters and column layout of this reader."""
        return {
            "extractor": self.name,
            "features": "OpenFace 2.x FeatureExtraction AUxx_r (17) + AUxx_c (18)",
            "feature_dim": self.feature_dim,
            "columns": list(AU_COLUMNS),
            "parameters": self.get_config(),
            "versions": {"numpy": np.__version__},
        }

    def read(self, path):
        """Reads `path`; returns `OpenFaceFrames`. Raises DataError."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise DataError(f"OpenFace CSV {path} does not exist")
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except UnicodeDecodeError:
            raise DataError(
                f"OpenFace CSV {path} is not a text file (a video? videos need "
                "vision='mediapipe')"
            ) from None
        except (OSError, csv.Error) as error:
            raise DataError(f"OpenFace CSV {path} cannot be read ({error})") from error
        if not rows:
            raise DataError(f"OpenFace CSV {path} is empty")
        header = [name.strip() for name in rows[0]]
        index = {name: i for i, name in enumerate(header)}
        missing = [c for c in AU_COLUMNS if c not in index]
        if missing:
            shown = ", ".join(missing[:4]) + (" …" if len(missing) > 4 else "")
            raise DataError(
                f"OpenFace CSV {path} lacks {len(missing)} of the 35 action-unit "
                f"columns ({shown}); expected OpenFace 2.x FeatureExtraction output "
                "with AUs enabled"
            )
        for column in ("success", "confidence"):
            if column not in index:
                raise DataError(f"OpenFace CSV {path} has no {column!r} column")
        body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
        wanted = [index[c] for c in AU_COLUMNS]
        success_at, confidence_at = index["success"], index["confidence"]
        features = np.empty((len(body), len(AU_COLUMNS)), np.float32)
        success = np.empty(len(body), bool)
        confidence = np.empty(len(body), np.float32)
        for number, row in enumerate(body):
            if len(row) != len(header):
                raise DataError(
                    f"OpenFace CSV {path} row {number + 2}: {len(row)} fields, "
                    f"expected {len(header)}"
                )
            try:
                features[number] = [float(row[i]) for i in wanted]
                success[number] = float(row[success_at]) != 0.0
                confidence[number] = float(row[confidence_at])
            except ValueError as error:
                raise DataError(
                    f"OpenFace CSV {path} row {number + 2}: {error}"
                ) from None
        finite = np.isfinite(features).all(axis=1)
        unsuccessful = ~success | ~finite
        low = ~unsuccessful & ~(confidence >= self.min_confidence)
        keep = ~unsuccessful & ~low
        if not keep.any():
            raise DataError(
                f"OpenFace CSV {path} has no usable frame: {len(body)} rows, "
                f"{int(unsuccessful.sum())} with success == 0, {int(low.sum())} "
                f"below min_confidence {self.min_confidence}"
            )
        return OpenFaceFrames(
            features=features[keep],
            total=len(body),
            dropped_unsuccessful=int(unsuccessful.sum()),
            dropped_low_confidence=int(low.sum()),
        )

    def __call__(self, path):
        """Action units of the kept frames of `path`: float32 `[frames, 35]`."""
        return self.read(path).features
