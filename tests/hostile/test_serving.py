"""Hostile requests to the exported SavedModel and through the gRPC client.

The SavedModel checks batch sizes, lengths and finiteness in its own graph
(what TF Serving returns to any client as INVALID_ARGUMENT); dtypes, ranks
and missing inputs are TensorFlow's own answers against the signature.
`keras_mre.serving.PredictionClient` checks a request before it leaves and
raises a one-line ServingError naming the input.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_mre import serving
from keras_mre.errors import ServingError

from .conftest import DIMS
from .conftest import features

OUTPUTS = {"probabilities", "class_id", "class_name", "relevance",
           *(f"relevance_{m}" for m in DIMS)}


def call(function, request):
    return {k: v.numpy() for k, v in function(**{k: tf.constant(v) for k, v in request.items()}).items()}


@pytest.fixture
def client(grpc_server):
    with serving.PredictionClient(grpc_server.target, "mre", timeout=60) as c:
        yield c


# ------------------------------------------------------------ the SavedModel


def test_saved_model_batch_0(serving_function):
    out = call(serving_function, features(batch=0))
    assert set(out) == OUTPUTS
    assert out["probabilities"].shape == (0, 3)
    assert out["class_name"].shape == (0,)


def test_saved_model_batch_10000(serving_function):
    out = call(serving_function, features(batch=10000, frames=2))
    assert out["probabilities"].shape == (10000, 3)
    assert np.isfinite(out["probabilities"]).all()
    # Identical rows give identical answers: no cross-talk inside a batch.
    assert (out["class_id"] == out["class_id"][0]).all()


def test_saved_model_wrong_dtype(serving_function):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expected to be a float tensor but is a double tensor"):
        call(serving_function, features(dtype=np.float64))


def test_saved_model_missing_input(serving_function):
    request = features()
    request.pop("audio")
    with pytest.raises(TypeError, match=r"missing a required argument: 'audio'"):
        call(serving_function, request)


def test_saved_model_wrong_rank(serving_function):
    request = features()
    request["text"] = request["text"][0]
    with pytest.raises(tf.errors.InvalidArgumentError):
        call(serving_function, request)


def test_saved_model_frames_longer_than_the_data_sets_max_length(serving_function):
    # The data set keeps 5 frames per modality; a server gets whatever a client sends.
    out = call(serving_function, features(batch=2, frames=300))
    assert np.isfinite(out["probabilities"]).all()


def test_saved_model_zero_frames_in_every_modality(serving_function):
    out = call(serving_function, features(batch=2, frames=0))
    assert np.isfinite(out["probabilities"]).all()
    np.testing.assert_allclose(out["probabilities"].sum(axis=-1), 1.0, atol=1e-5)


def _with(**changes):
    def change(request):
        for name, edit in changes.items():
            request[name] = edit(request[name])
        return request
    return change


@pytest.mark.parametrize("change, message", [
    (_with(audio=lambda a: np.where(np.arange(a.shape[1])[None, :, None] == 1, np.nan, a)),
     r"keras-mre request: input audio: holds NaN or infinite values"),
    (_with(vision=lambda v: np.full_like(v, np.inf)),
     r"keras-mre request: input vision: holds NaN or infinite values"),
    (_with(audio_length=lambda n: n - 5),
     r"keras-mre request: input audio_length: lengths must not be negative"),
    (_with(text_length=lambda n: n + 1),
     r"keras-mre request: input text_length: lengths must not exceed the frames sent in text"),
    (_with(vision=lambda v: v[:1]),
     r"keras-mre request: input vision must hold as many clips as text"),
    (_with(audio_length=lambda n: np.concatenate([n, n])),
     r"keras-mre request: input audio_length must hold one length per clip of audio"),
], ids=["nan-frame", "inf-frames", "negative-length", "length-over-frames",
        "batch-mismatch", "lengths-count"])
def test_saved_model_names_the_bad_input(serving_function, change, message):
    assert list(DIMS)[0] == "text"  # the first modality, which the others must match
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call(serving_function, change(features()))


def test_saved_model_accepts_lengths_up_to_the_frames_sent(serving_function):
    request = features(batch=3, frames=4)
    for m in DIMS:
        request[f"{m}_length"] = np.array([0, 2, 4], np.int32)
    out = call(serving_function, request)
    assert np.isfinite(out["probabilities"]).all()


# --------------------------------------------------------------- gRPC client


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(audio=r["audio"].astype(str)), r"input 'audio': expected float32, got <U32"),
    (lambda r: r.update(text_length=r["text_length"].astype(np.float32)),
     r"input 'text_length': expected int32 \(integers\), got float32"),
    (lambda r: r.update(vision=r["vision"][:, :, 0]), r"input 'vision': expected rank 3 \[\?, \?, 3\], got shape \[2, 3\]"),
    (lambda r: r.update(vision_length=np.int32(3)), r"input 'vision_length': expected rank 1 \[\?\], got shape \[\]"),
    (lambda r: r.pop("audio_length"), r"missing input\(s\) \['audio_length'\]; the signature expects"),
    (lambda r: r.update(face=np.zeros((2, 3, 1), np.float32)), r"unexpected input\(s\) \['face'\]"),
    (lambda r: r.update(audio=np.ones((2, 3, 5), np.float32)), r"input 'audio': dim 2 must be 4 \[\?, \?, 4\]"),
    (lambda r: r.update(text=np.ones((3, 3, 6), np.float32)), r"input 'text_length' has batch size 2 but 'text' has 3|input 'text' has batch size 3"),
])
def test_grpc_client_rejects_bad_requests(client, change, message):
    request = features()
    change(request)
    with pytest.raises(ServingError, match=message):
        client.predict(request)


def test_grpc_request_that_is_not_a_dict(client):
    with pytest.raises(ServingError, match=r"features must be a dict of arrays, got list"):
        client.predict([features()])


def test_grpc_batch_0_and_batch_10000(client):
    empty = client.predict(features(batch=0))
    assert empty["probabilities"].shape == (0, 3)
    large = client.predict(features(batch=10000, frames=2))
    assert large["probabilities"].shape == (10000, 3)
    assert large["class_name"].shape == (10000,)


def test_grpc_request_larger_than_the_message_limit(client, tiny_export):
    # 10,000 clips of 50 frames: 26 MB. Accepted by default (2 GB, as TF
    # Serving), refused with a clear error by a server with gRPC's usual 4 MiB.
    big = features(batch=10000, frames=50)
    assert client.predict(big)["probabilities"].shape == (10000, 3)
    with serving.LocalPredictionServer(tiny_export.model_base, "mre",
                                       max_message_bytes=4 * 2**20) as small:
        with serving.PredictionClient(small.target, "mre", timeout=60) as small_client:
            with pytest.raises(ServingError, match=r"Predict to .* \(model 'mre'\) failed: RESOURCE_EXHAUSTED: .*Received message larger than max \(\d+ vs\. 4194304\)"):
                small_client.predict(big)
    for bad in (0, 2**31, 1.5):
        with pytest.raises(ServingError, match=r"max_message_bytes must be an integer in 1\.\.2147483647, got "):
            serving.LocalPredictionServer(tiny_export.model_base, "mre", max_message_bytes=bad)


def test_grpc_rejects_bad_lengths(client):
    request = features()
    request["audio_length"] = np.array([-5, 99], np.int32)
    with pytest.raises(ServingError, match=r"input 'audio_length': lengths must lie in 0\.\.3 \(the frames sent in 'audio'\), got -5\.\.99"):
        client.predict(request)


def test_grpc_rejects_non_finite_frames(client):
    request = features()
    request["audio"][0, 0, 0] = np.nan
    with pytest.raises(ServingError, match=r"input 'audio': holds NaN or infinite values"):
        client.predict(request)


def test_grpc_unknown_model_and_version(grpc_server):
    with pytest.raises(ServingError, match=r"model 'emotions'.*NOT_FOUND: Servable not found"):
        serving.PredictionClient(grpc_server.target, "emotions", timeout=30).predict(features())
