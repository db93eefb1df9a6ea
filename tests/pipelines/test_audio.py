"""Audio features: the 33-d librosa recipe and every bad file."""


import librosa
import numpy as np
import pytest
import soundfile

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre_pipelines.audio import AudioFeatureExtractor

SR = 22050



def _tone(frequency, seconds, sr=SR, amplitude=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def test_layout_matches_librosa_reference(tmp_path):
    signal = _tone(440.0, 1.0) + 0.05 * np.random.default_rng(0).standard_normal(SR).astype(
        np.float32
    )
    path = tmp_path / "tone.wav"
    soundfile.write(path, signal, SR)
    features = AudioFeatureExtractor()(path)
    loaded, _ = librosa.load(path, sr=SR)
    zcr = librosa.feature.zero_crossing_rate(loaded, frame_length=2048, hop_length=512)
    mfcc = librosa.feature.mfcc(y=loaded, sr=SR, n_mfcc=20, htk=True, n_fft=2048, hop_length=512)
    chroma = librosa.feature.chroma_cqt(y=loaded, sr=SR, hop_length=512, bins_per_octave=36)
    assert features.shape == (1 + SR // 512, 33)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features[:, 0], zcr[0], rtol=1e-6)
    np.testing.assert_allclose(features[:, 1:21], mfcc.T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(features[:, 21:], chroma.T, rtol=1e-5, atol=1e-6)


def test_tone_properties():
    extractor = AudioFeatureExtractor()
    features = extractor.extract_signal(_tone(440.0, 1.0))
    middle = features[5:-5]
    # A 440 Hz sine crosses zero 880 times a second.
    np.testing.assert_allclose(middle[:, 0], 2 * 440 / SR, rtol=0.05)
    # Chroma bin 9 is A.
    assert np.all(np.argmax(middle[:, 21:], axis=1) == 9)
    assert np.all(middle[:, 21 + 9] == pytest.approx(1.0))


def test_resampling_and_stereo_mixdown(tmp_path):
    rate = 16000
    mono = _tone(440.0, 1.0, sr=rate)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([mono, mono], axis=1), rate)
    features = AudioFeatureExtractor()(path)
    assert features.shape == (1 + SR // 512, 33)
    assert np.all(np.argmax(features[5:-5, 21:], axis=1) == 9)


def test_silent_stretch_inside_speech_gives_finite_features():
    signal = np.concatenate([_tone(220.0, 0.5), np.zeros(4 * SR, np.float32), _tone(330.0, 0.5)])
    features = AudioFeatureExtractor().extract_signal(signal)
    assert np.isfinite(features).all()
    # The longest constant-Q filters reach about a second into the gap.
    silent = features[90:150]
    assert np.all(silent[:, 0] == 0.0)
    assert np.all((silent[:, 21:] >= 0.0) & (silent[:, 21:] <= 1.0))


def test_parameters_are_configurable_and_recorded():
    extractor = AudioFeatureExtractor(sample_rate=16000, hop_length=256, n_mfcc=13, n_chroma=24,
                                      frame_length=1024, n_octaves=6)
    assert extractor.feature_dim == 38
    assert extractor.feature_names[:2] == ["zcr", "mfcc_0"]
    assert extractor.feature_names[-1] == "chroma_23"
    features = extractor.extract_signal(_tone(440.0, 1.0, sr=16000))
    assert features.shape == (1 + 16000 // 256, 38)
    record = extractor.provenance()
    assert record["parameters"]["hop_length"] == 256
    assert record["parameters"]["htk"] is True
    assert record["versions"]["librosa"] == librosa.__version__


def test_bad_parameters():
    with pytest.raises(ConfigError, match="hop_length must be a multiple of 2\\*\\*\\(n_octaves - 1\\) = 64"):
        AudioFeatureExtractor(hop_length=500)
    with pytest.raises(ConfigError, match="sample_rate must be a positive integer, got 0"):
        AudioFeatureExtractor(sample_rate=0)
    with pytest.raises(ConfigError, match="frame_length \\(256\\) must be >= hop_length \\(512\\)"):
        AudioFeatureExtractor(frame_length=256)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="audio file .*absent.wav does not exist"):
        AudioFeatureExtractor()(tmp_path / "absent.wav")


def test_non_audio_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are meeting notes, not audio\n")
    with pytest.raises(DataError, match="notes.wav cannot be decoded as audio"):
        AudioFeatureExtractor()(path)


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    soundfile.write(path, _tone(440.0, 1.0), SR)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match="cut.wav cannot be decoded as audio"):
        AudioFeatureExtractor()(path)


def test_silence(tmp_path):
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(SR, np.float32), SR)
    with pytest.raises(DataError, match="silence.wav is silent: peak amplitude 0 <= silence_threshold"):
        AudioFeatureExtractor()(path)


def test_shorter_than_one_frame(tmp_path):
    path = tmp_path / "blip.wav"
    soundfile.write(path, _tone(440.0, 0.05), SR)
    with pytest.raises(DataError, match="blip.wav is shorter than one frame: 1102 samples at 22050 Hz, expected at least 2048"):
        AudioFeatureExtractor()(path)


@pytest.mark.extract
def test_real_speech_from_espeak(tmp_path, test_assets):
    path = test_assets.speak("The quick brown fox jumps over the lazy dog.", tmp_path / "fox.wav")
    seconds = soundfile.info(path).duration
    features = AudioFeatureExtractor()(path)
    assert abs(features.shape[0] - seconds * SR / 512) <= 2
    assert np.isfinite(features).all()
    # Speech alternates voiced and unvoiced frames: the zero-crossing rate varies.
    assert features[:, 0].std() > 0.01
