"""Choosing a visual feature extractor by name.

Two extractors produce per-frame facial features:

- `openface`: reads OpenFace 2.x `FeatureExtraction` CSVs (35-d action units,
  `keras_mre_pipelines.openface.OpenFaceReader`). The manifest's `vision`
  column then holds CSV paths.
- `mediapipe`: runs MediaPipe's FaceLandmarker on videos (52 blendshape
  scores, `keras_mre_pipelines.mediapipe_face.MediaPipeFaceExtractor`). The
  `vision` column then holds video paths and a `face_landmarker.task` model
  is required.

Both have `read(path)` returning the frames with `.features` `[T, D]` and
`.dropped` (dropped frame counts by reason), `feature_dim`, `get_config()`
and `provenance()`.
"""

from keras_mre.errors import ConfigError

VISION_EXTRACTORS = ("openface", "mediapipe")


def make_vision_extractor(kind, *, face_model=None, min_confidence=0.8, frame_stride=1):
    """Builds the visual extractor called `kind`.

    Args:
        kind: `"openface"` or `"mediapipe"`.
        face_model: path of the MediaPipe `face_landmarker.task` model
            (`mediapipe` only; required there).
        min_confidence: OpenFace tracking confidence below which frames are
            dropped (`openface` only).
        frame_stride: analyse every n-th video frame (`mediapipe` only).

    Returns:
        An `OpenFaceReader` or a `MediaPipeFaceExtractor`.
    """
    if kind == "openface":
        from keras_mre_pipelines.openface import OpenFaceReader

        if face_model is not None:
            raise ConfigError(
                "vision='openface' reads OpenFace CSVs and takes no face_model; "
                "use vision='mediapipe' to run a face landmarker model on videos"
            )
        return OpenFaceReader(min_confidence=min_confidence)
    if kind == "mediapipe":
        from keras_mre_pipelines.mediapipe_face import MediaPipeFaceExtractor

        return MediaPipeFaceExtractor(face_model, frame_stride=frame_stride)
    raise ConfigError(
        f"vision extractor must be one of {list(VISION_EXTRACTORS)}, got {kind!r}"
    )
