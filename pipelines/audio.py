"""Frame-level acoustic features with librosa (the 33-d recipe).

Each analysis frame gets the zero-crossing rate (1 value), 20 MFCCs computed
with the HTK mel scale, and 12 constant-Q chroma values: 33 values per frame at
22050 Hz with a hop of 512 samples (about 43 frames per second). Audio is read
with librosa (any format soundfile or audioread decodes), mixed down to mono
and resampled to the target rate.

```python
from keras_mre_pipelines.audio import AudioFeatureExtractor
extractor = AudioFeatureExtractor()
frames = extractor("clip.wav")        # float32 [frames, 33]
```
"""

import os
import warnings

import numpy as np

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError


class AudioFeatureExtractor:
    """Zero-crossing rate + HTK MFCC + chroma CQT per frame.

    Args:
        sample_rate: rate the audio is resampled to before analysis, in Hz.
        hop_length: samples between successive frames. Must be a multiple of
            `2 ** (n_octaves - 1)` for the constant-Q transform (512 is).
        frame_length: window length in samples of the zero-crossing rate and
            of the MFCC's FFT. A clip shorter than this is rejected.
        n_mfcc: number of MFCC coefficients.
        htk: whether the mel filter bank uses the HTK formula.
        n_chroma: number of chroma bins; the constant-Q transform uses
            `3 * n_chroma` bins per octave (36 for the default 12).
        n_octaves: octaves analysed by the constant-Q transform.
        silence_threshold: peak absolute amplitude (full scale = 1.0) at or
            below which a clip counts as silent and is rejected.

    Calling the extractor on a path returns a float32 array of shape
    `[frames, 1 + n_mfcc + n_chroma]`, every value finite. Problems with the
    file raise `DataError` naming the path and the cause.
    """

    name = "librosa"

    def __init__(
        self,
        sample_rate=22050,
        hop_length=512,
        frame_length=2048,
        n_mfcc=20,
        htk=True,
        n_chroma=12,
        n_octaves=7,
        silence_threshold=1e-4,
    ):
        for field, value in (
            ("sample_rate", sample_rate),
            ("hop_length", hop_length),
            ("frame_length", frame_length),
            ("n_mfcc", n_mfcc),
            ("n_chroma", n_chroma),
            ("n_octaves", n_octaves),
        ):
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ConfigError(
                    f"AudioFeatureExtractor: {field} must be a positive "
                    f"integer, got {value!r}"
                )
        if hop_length % (2 ** (n_octaves - 1)) != 0:
            raise ConfigError(
                f"AudioFeatureExtractor: hop_length must be a multiple of "
                f"2**(n_octaves - 1) = {2 ** (n_octaves - 1)} for the "
                f"constant-Q transform, got {hop_length}"
            )
        if frame_length < hop_length:
            raise ConfigError(
                f"AudioFeatureExtractor: frame_length ({frame_length}) must be "
                f">= hop_length ({hop_length})"
            )
        if not silence_threshold >= 0:
            raise ConfigError(
                "AudioFeatureExtractor: silence_threshold must be >= 0, "
                f"got {silence_threshold!r}"
            )
        self.sample_rate = int(sample_rate)
        self.hop_length = int(hop_length)
        self.frame_length = int(frame_length)
        self.n_mfcc = int(n_mfcc)
        self.htk = bool(htk)
        self.n_chroma = int(n_chroma)
        self.n_octaves = int(n_octaves)
        self.silence_threshold = float(silence_threshold)

    @property
    def feature_dim(self):
        """Values per frame: `1 + n_mfcc + n_chroma`."""
        return 1 + self.n_mfcc + self.n_chroma

    @property
    def feature_names(self):
        """Name of each column of the output, in order."""
        return (
            ["zcr"]
            + [f"mfcc_{i}" for i in range(self.n_mfcc)]
            + [f"chroma_{i}" for i in range(self.n_chroma)]
        )

    def get_config(self):
        """Constructor arguments, for provenance records."""
        return {
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "frame_length": self.frame_length,
            "n_mfcc": self.n_mfcc,
            "htk": self.htk,
            "n_chroma": self.n_chroma,
            "n_octaves": self.n_octaves,
            "silence_threshold": self.silence_threshold,
        }

    def provenance(self):
        """Name, parameters, layout and library versions of this extractor."""
        import librosa
        import soundfile

        return {
            "extractor": self.name,
            "features": "zero_crossing_rate + mfcc(htk) + chroma_cqt",
            "feature_dim": self.feature_dim,
            "parameters": self.get_config(),
            "versions": {
                "librosa": librosa.__version__,
                "soundfile": soundfile.__version__,
                "numpy": np.__version__,
            },
        }

    def load(self, path):
        """Reads `path` as mono float32 at `sample_rate`; raises DataError."""
        import librosa

        path = os.fspath(path)
        if not os.path.exists(path):
            raise DataError(f"audio file {path} does not exist")
        if os.path.isdir(path):
            raise DataError(f"audio file {path} is a directory, not a file")
        try:
            with warnings.catch_warnings():
                # librosa warns before falling back to audioread; the
                # fallback's own failure is reported below.
                warnings.simplefilter("ignore")
                signal, _ = librosa.load(path, sr=self.sample_rate, mono=True)
        except Exception as error:  # decoders raise many unrelated types
            if "not finite" in str(error):
                # A float WAV holding NaN or Inf decodes, then fails librosa's
                # buffer check: say what is wrong with it.
                raise DataError(f"audio file {path} contains NaN or infinite samples") from None
            raise DataError(
                f"audio file {path} cannot be decoded as audio by soundfile "
                f"or audioread "
                f"({_describe(error)})"
            ) from error
        return np.asarray(signal, dtype=np.float32)

    def extract_signal(self, signal, source="<signal>"):
        """Features of a mono signal already at `sample_rate`.

        Args:
            signal: 1-d float array.
            source: name used in error messages (usually the file path).

        Returns:
            float32 array `[frames, feature_dim]`.
        """
        import librosa

        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim != 1:
            raise DataError(
                f"audio {source}: expected a mono 1-d signal, got shape "
                f"{signal.shape}"
            )
        if signal.size < self.frame_length:
            raise DataError(
                f"audio {source} is shorter than one frame: {signal.size} "
                f"samples at {self.sample_rate} Hz, expected at least "
                f"{self.frame_length}"
            )
        if not np.all(np.isfinite(signal)):
            raise DataError(f"audio {source} contains NaN or infinite samples")
        peak = float(np.max(np.abs(signal)))
        if peak <= self.silence_threshold:
            raise DataError(
                f"audio {source} is silent: peak amplitude {peak:.3g} <= "
                f"silence_threshold {self.silence_threshold:.3g}"
            )
        zcr = librosa.feature.zero_crossing_rate(
            signal, frame_length=self.frame_length, hop_length=self.hop_length
        )
        mfcc = librosa.feature.mfcc(
            y=signal,
            sr=self.sample_rate,
            n_mfcc=self.n_mfcc,
            htk=self.htk,
            n_fft=self.frame_length,
            hop_length=self.hop_length,
        )
        with warnings.catch_warnings():
            # The constant-Q transform downsamples per octave and warns when
            # the lowest octaves hold fewer samples than its FFT; the result
            # is still well defined (zero padded).
            warnings.filterwarnings("ignore", message="n_fft=.*is too large")
            chroma = librosa.feature.chroma_cqt(
                y=signal,
                sr=self.sample_rate,
                hop_length=self.hop_length,
                n_chroma=self.n_chroma,
                n_octaves=self.n_octaves,
                bins_per_octave=3 * self.n_chroma,
            )
        frames = min(zcr.shape[1], mfcc.shape[1], chroma.shape[1])
        features = np.concatenate(
            [zcr[:, :frames], mfcc[:, :frames], chroma[:, :frames]], axis=0
        ).T.astype(np.float32)
        if not np.all(np.isfinite(features)):
            bad = int(np.sum(~np.all(np.isfinite(features), axis=1)))
            raise DataError(
                f"audio {source}: {bad} of {frames} frames have non-finite "
                "features"
            )
        return features

    def __call__(self, path):
        """Features of the audio file at `path`: float32 `[frames, dim]`."""
        return self.extract_signal(self.load(path), source=os.fspath(path))


def _describe(error):
    """`Type: first line of the message` of an exception."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
