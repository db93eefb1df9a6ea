"""Facial blendshape scores from video with MediaPipe's FaceLandmarker.

An alternative to OpenFace that installs with pip (`pip install mediapipe`):
the Tasks API `FaceLandmarker` runs on every `frame_stride`-th decoded video
frame and gives 52 blendshape scores in [0, 1] (brow, eye, jaw, mouth, cheek
and nose movements, close to action units) for the most prominent face.
Frames without a detected face are dropped and counted. Videos are decoded
with OpenCV (`cv2`, installed with mediapipe).

The landmarker model is a `face_landmarker.task` file that the user provides
(MediaPipe publishes it; nothing is downloaded at run time).

```python
from keras_mre_pipelines.mediapipe_face import MediaPipeFaceExtractor
extractor = MediaPipeFaceExtractor("face_landmarker.task")
frames = extractor("clip.mp4")        # float32 [frames with a face, 52]
```
"""

import dataclasses
import os

import numpy as np

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError


@dataclasses.dataclass
class FaceFrames:
    """Blendshapes read from one video.

    Attributes:
        features: float32 `[kept, 52]` scores of the frames with a face.
        total: frames analysed (after `frame_stride`).
        dropped_no_face: analysed frames in which no face was found.
    """

    features: np.ndarray
    total: int
    dropped_no_face: int

    @property
    def dropped(self):
        """Dropped frame counts by reason."""
        return {"no_face": self.dropped_no_face}


def _import_mediapipe():
    try:
        import cv2
        import mediapipe
        from mediapipe.tasks.python import vision
    except ImportError as error:
        raise ConfigError(
            "the 'mediapipe' vision extractor needs the mediapipe package "
            f"(pip install mediapipe): {error}"
        ) from error
    return mediapipe, vision, cv2


class MediaPipeFaceExtractor:
    """52 MediaPipe blendshape scores per video frame.

    Args:
        model_path: path of a MediaPipe `face_landmarker.task` model file.
        frame_stride: analyse every `frame_stride`-th frame (1 = all).
        min_face_detection_confidence: face detector threshold.
        min_face_presence_confidence: landmark presence threshold.
        min_tracking_confidence: threshold for tracking a face between frames
            instead of detecting it again.

    Calling the extractor on a video path returns float32 `[frames, 52]`
    for the analysed frames with a face; `read` also returns the counts. A
    video that cannot be decoded or has no face in any analysed frame raises
    `DataError`.
    """

    name = "mediapipe_face_landmarker"
    feature_dim = 52

    def __init__(
        self,
        model_path,
        frame_stride=1,
        min_face_detection_confidence=0.5,
        min_face_presence_confidence=0.5,
        min_tracking_confidence=0.5,
    ):
        if model_path is None:
            raise ConfigError(
                "MediaPipeFaceExtractor: model_path is required: the path of a "
                "face_landmarker.task file (--face-model)"
            )
        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise ConfigError(
                f"MediaPipeFaceExtractor: face landmarker model {model_path} does not exist"
            )
        if not isinstance(frame_stride, (int, np.integer)) or frame_stride < 1:
            raise ConfigError(
                f"MediaPipeFaceExtractor: frame_stride must be a positive integer, "
                f"got {frame_stride!r}"
            )
        for field, value in (
            ("min_face_detection_confidence", min_face_detection_confidence),
            ("min_face_presence_confidence", min_face_presence_confidence),
            ("min_tracking_confidence", min_tracking_confidence),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(
                    f"MediaPipeFaceExtractor: {field} must be in [0, 1], got {value!r}"
                )
        self.model_path = model_path
        self.frame_stride = int(frame_stride)
        self.min_face_detection_confidence = float(min_face_detection_confidence)
        self.min_face_presence_confidence = float(min_face_presence_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        _, vision, _ = _import_mediapipe()
        try:
            self._landmarker(vision).close()
        except (RuntimeError, ValueError, OSError) as error:
            raise ConfigError(
                f"MediaPipeFaceExtractor: {model_path} cannot be loaded as a "
                f"MediaPipe face landmarker model ({str(error).strip().splitlines()[0]})"
            ) from error

    @property
    def feature_names(self):
        """The 52 blendshape names in output column order."""
        from mediapipe.tasks.python.vision.face_landmarker import Blendshapes

        return [shape.name.lower() for shape in sorted(Blendshapes)]

    def get_config(self):
        """Constructor arguments, for provenance records."""
        return {
            "model_path": self.model_path,
            "frame_stride": self.frame_stride,
            "min_face_detection_confidence": self.min_face_detection_confidence,
            "min_face_presence_confidence": self.min_face_presence_confidence,
            "min_tracking_confidence": self.min_tracking_confidence,
        }

    def provenance(self):
        """Name, parameters, model file size, columns and library versions."""
        mediapipe, _, cv2 = _import_mediapipe()
        return {
            "extractor": self.name,
            "features": "MediaPipe FaceLandmarker blendshape scores",
            "feature_dim": self.feature_dim,
            "columns": self.feature_names,
            "parameters": self.get_config(),
            "model_bytes": os.path.getsize(self.model_path),
            "versions": {"mediapipe": mediapipe.__version__, "opencv": cv2.__version__},
        }

    def _landmarker(self, vision):
        from mediapipe.tasks.python import BaseOptions

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=self.model_path),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=1,
            min_face_detection_confidence=self.min_face_detection_confidence,
            min_face_presence_confidence=self.min_face_presence_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
            output_face_blendshapes=True,
        )
        return vision.FaceLandmarker.create_from_options(options)

    def read(self, path):
        """Runs the landmarker on the video at `path`; returns `FaceFrames`."""
        mediapipe, vision, cv2 = _import_mediapipe()
        path = os.fspath(path)
        if not os.path.exists(path):
            raise DataError(f"video {path} does not exist")
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            capture.release()
            raise DataError(f"video {path} cannot be opened as a video by OpenCV")
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not fps or not np.isfinite(fps) or fps <= 0:
            fps = 30.0
        rows = []
        analysed = 0
        decoded = 0
        last_timestamp = -1
        try:
            with self._landmarker(vision) as landmarker:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    index = decoded
                    decoded += 1
                    if index % self.frame_stride:
                        continue
                    analysed += 1
                    # VIDEO mode needs strictly increasing timestamps in ms.
                    timestamp = max(int(round(index * 1000.0 / fps)), last_timestamp + 1)
                    last_timestamp = timestamp
                    image = mediapipe.Image(
                        image_format=mediapipe.ImageFormat.SRGB,
                        data=np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)),
                    )
                    result = landmarker.detect_for_video(image, timestamp)
                    if result.face_blendshapes:
                        scores = [c.score for c in result.face_blendshapes[0]]
                        rows.append(scores)
        finally:
            capture.release()
        if decoded == 0:
            raise DataError(f"video {path}: no frame could be decoded")
        if not rows:
            raise DataError(
                f"video {path}: no face found in any of its {analysed} analysed frames"
            )
        features = np.asarray(rows, dtype=np.float32)
        if features.shape[1] != self.feature_dim:
            raise DataError(
                f"video {path}: the landmarker gave {features.shape[1]} blendshapes, "
                f"expected {self.feature_dim}; is {self.model_path} a face "
                "landmarker model with blendshapes?"
            )
        return FaceFrames(
            features=features, total=analysed, dropped_no_face=analysed - len(rows)
        )

    def __call__(self, path):
        """Blendshape scores of the frames of `path` with a face: `[frames, 52]`."""
        return self.read(path).features
