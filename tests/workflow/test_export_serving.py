"""SavedModel export for TF Serving, and the gRPC PredictionService client."""

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_mre import export
from keras_mre import serving
from keras_mre import training
from keras_mre.errors import ConfigError
from keras_mre.errors import RunError
from keras_mre.errors import ServingError

DIMS = {"text": 12, "audio": 6, "vision": 5}


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("export"))
    version_dir = export.export_saved_model(trained_run, base, name="mre", version=3, verbose=False)
    return base, version_dir


def _features(batch=3, frames=(7, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    features = {}
    for (m, d), t in zip(DIMS.items(), frames):
        features[m] = rng.normal(size=(batch, t, d)).astype(np.float32)
        features[f"{m}_length"] = rng.integers(1, t + 1, batch).astype(np.int32)
    return features


def test_layout_and_atomic_write(exported):
    base, version_dir = exported
    assert version_dir == os.path.join(base, "mre", "3")
    assert sorted(os.listdir(os.path.join(base, "mre"))) == ["3"]
    assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
    description = export.read_signature_description(version_dir)
    assert description["class_names"] == ["class0", "class1", "class2"]
    assert description["inputs"]["audio"] == {"dtype": "float32", "shape": [None, None, 6]}


def test_saved_model_matches_predict(exported, trained_run):
    import tensorflow as tf

    _, version_dir = exported
    model = training.load_run(trained_run).load_model()
    features = _features()
    expected = model.predict(features, verbose=0)
    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    out = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in features.items()}).items()}
    np.testing.assert_allclose(out["probabilities"], expected["emotion"], atol=1e-5)
    np.testing.assert_allclose(out["relevance"], expected["relevance"], atol=1e-5)
    for index, m in enumerate(DIMS):
        np.testing.assert_allclose(out[f"relevance_{m}"], expected["relevance"][:, index], atol=1e-5)
    ids = expected["emotion"].argmax(axis=-1)
    np.testing.assert_array_equal(out["class_id"], ids)
    assert [n.decode() for n in out["class_name"]] == [f"class{i}" for i in ids]


def test_bfloat16_projection_trains_exports_and_serves(small_data, tmp_path):
    import tensorflow as tf

    run_dir = str(tmp_path / "run")
    training.train(small_data, run_dir, epochs=1, batch_size=16, seed=3, verbose=0,
                   config={"hidden_dim": 16, "lstm_projection_dtype": "bfloat16"})
    run = training.load_run(run_dir)
    assert run.model_config.lstm_projection_dtype == "bfloat16"
    assert run.record["model_config"]["lstm_projection_dtype"] == "bfloat16"
    model = run.load_model()
    assert model.get_layer("text_encoder").projection_dtype == "bfloat16"
    version_dir = export.export_saved_model(run_dir, str(tmp_path / "export"), verbose=False)
    features = _features()
    expected = model.predict(features, verbose=0)
    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    out = signature(**{k: tf.constant(v) for k, v in features.items()})
    np.testing.assert_allclose(out["probabilities"].numpy(), expected["emotion"], atol=1e-5)
    graph = signature.graph.as_graph_def()
    matmul_types = {
        node.attr["T"].type
        for function in graph.library.function
        for node in function.node_def
        if node.op in ("MatMul", "BatchMatMulV2")
    }
    assert tf.bfloat16.as_datatype_enum in matmul_types


def test_saved_model_cli_shows_signature(exported):
    _, version_dir = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "show", "--dir", version_dir, "--tag_set", "serve", "--signature_def", "serving_default"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for name, shape in (("text", "(-1, -1, 12)"), ("audio", "(-1, -1, 6)"), ("vision", "(-1, -1, 5)")):
        assert f"inputs['{name}']" in text
        assert f"inputs['{name}_length']" in text
        assert shape in text
    for name in ("probabilities", "class_id", "class_name", "relevance", "relevance_text"):
        assert f"outputs['{name}']" in text
    assert "DT_STRING" in text and "DT_INT32" in text
    assert "tensorflow/serving/predict" in text


def test_graph_uses_only_core_tensorflow_ops(exported):
    # A fresh interpreter that never imports tensorflow_text knows every op.
    _, version_dir = exported
    code = f"""
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
import sys
saved = saved_model_pb2.SavedModel.FromString(open({os.path.join(version_dir, 'saved_model.pb')!r}, 'rb').read())
ops = set()
for mg in saved.meta_graphs:
    ops.update(n.op for n in mg.graph_def.node)
    for f in mg.graph_def.library.function:
        ops.update(n.op for n in f.node_def)
assert "tensorflow_text" not in sys.modules
missing = sorted(o for o in ops if op_def_registry.get(o) is None)
print(len(ops), missing)
sys.exit(1 if missing else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_existing_export_is_refused_then_overwritten(trained_run, tmp_path):
    first = export.export_saved_model(trained_run, str(tmp_path), version=1, verbose=False)
    marker = os.path.join(first, "marker")
    open(marker, "w").close()
    with pytest.raises(RunError, match=r"mre/1: export exists; pass --overwrite"):
        export.export_saved_model(trained_run, str(tmp_path), version=1, verbose=False)
    assert os.path.exists(marker)
    again = export.export_saved_model(trained_run, str(tmp_path), version=1, overwrite=True, verbose=False)
    assert again == first and not os.path.exists(marker)
    assert sorted(os.listdir(os.path.join(str(tmp_path), "mre"))) == ["1"]
    # An overwrite killed between its two renames left version 1 aside and
    # none in place: the next export puts it back first, so without
    # --overwrite it is refused as existing, not silently replaced.
    from keras_mre._processes import this_host

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    aside = os.path.join(str(tmp_path), "mre", f".old-1-{this_host()}-{finished.pid}")
    open(os.path.join(again, "marker"), "w").close()
    os.replace(again, aside)
    with pytest.warns(RuntimeWarning, match=r"put back the version a killed overwrite had moved aside: \.old-1-.* -> 1$"):
        with pytest.raises(RunError, match=r"mre/1: export exists"):
            export.export_saved_model(trained_run, str(tmp_path), version=1, verbose=False)
    assert os.path.exists(marker)
    assert sorted(os.listdir(os.path.join(str(tmp_path), "mre"))) == ["1"]


def test_leftovers_of_killed_exports_are_cleared_and_reported(tmp_path):
    from keras_mre._processes import this_host

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid now names no running process
    host, dead, alive = this_host(), finished.pid, os.getppid()
    base = tmp_path / "mre"
    made = {
        f".tmp-1-{host}-{dead}": "removed",
        f".tmp-2-{host}-{alive}": "kept",  # an export still running
        f".tmp-3-{host}x-{dead}": "kept",  # another host's
        f".tmp-4-{dead}": "kept",  # no host: an unknown writer
        f".old-5-{host}-{dead}": "restored",  # killed between the two renames
        f".old-6-{host}-{dead}": "removed",  # version 6 did arrive
    }
    for name in made:
        (base / name).mkdir(parents=True)
        (base / name / "saved_model.pb").write_bytes(name.encode())
    (base / "6").mkdir()
    (base / "6" / "saved_model.pb").write_bytes(b"new")
    with pytest.warns(RuntimeWarning) as caught:
        export._clean_killed_exports(str(base))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message == (
        f"{base}: removed 2 temporary directories left by killed exports: "
        f".old-6-{host}-{dead}, .tmp-1-{host}-{dead}; put back the version a "
        f"killed overwrite had moved aside: .old-5-{host}-{dead} -> 5"
    )
    left = sorted(os.listdir(base))
    assert left == sorted(["5", "6"] + [n for n, what in made.items() if what == "kept"])
    assert (base / "5" / "saved_model.pb").read_bytes() == f".old-5-{host}-{dead}".encode()
    assert (base / "6" / "saved_model.pb").read_bytes() == b"new"
    # Nothing left to clear: no warning.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export._clean_killed_exports(str(base))


def test_export_bad_arguments(trained_run, tmp_path):
    with pytest.raises(ConfigError, match="export version 0: expected a positive integer"):
        export.export_saved_model(trained_run, str(tmp_path), version=0)
    with pytest.raises(ConfigError, match="export name '../x'"):
        export.export_saved_model(trained_run, str(tmp_path), name="../x")
    with pytest.raises(RunError, match="not a keras-mre run"):
        export.export_saved_model(str(tmp_path), str(tmp_path / "out"))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with open(os.path.join(trained_run, "config.json")) as src:
        (unfinished / "config.json").write_text(src.read())
    with pytest.raises(RunError, match="no model.keras; the run has not finished"):
        export.export_saved_model(str(unfinished), str(tmp_path / "out"))


@pytest.fixture(scope="module")
def server(exported):
    base, _ = exported
    with serving.LocalPredictionServer(os.path.join(base, "mre"), "mre") as srv:
        yield srv


def test_grpc_predict_matches_saved_model(server, exported):
    _, version_dir = exported
    features = _features(batch=2, seed=1)
    direct = export.load_exported(version_dir)
    import tensorflow as tf

    expected = {k: v.numpy() for k, v in direct(**{k: tf.constant(v) for k, v in features.items()}).items()}
    with serving.PredictionClient(server.target, "mre", timeout=30) as client:
        assert client.inputs["text"] == {"dtype": "float32", "shape": [None, None, 12]}
        assert client.inputs["text_length"] == {"dtype": "int32", "shape": [None]}
        out = client.predict(features)
    assert set(out) == set(expected)
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"], atol=1e-6)
    np.testing.assert_allclose(out["relevance"], expected["relevance"], atol=1e-6)
    np.testing.assert_array_equal(out["class_name"], expected["class_name"])


def test_grpc_request_over_four_megabytes(server, exported):
    # gRPC's default limit is 4 MB; a MOSEI-shaped batch of 32 is 12 MB.
    _, version_dir = exported
    features = _features(batch=200, frames=(7, 1000, 4), seed=3)
    assert sum(v.nbytes for v in features.values()) > 4 * 2**20
    import tensorflow as tf

    direct = export.load_exported(version_dir)(**{k: tf.constant(v) for k, v in features.items()})
    with serving.PredictionClient(server.target, "mre", timeout=60) as client:
        out = client.predict(features)
    np.testing.assert_allclose(out["probabilities"], direct["probabilities"].numpy(), atol=1e-6)


def test_grpc_client_converts_compatible_dtypes(server):
    features = _features(batch=1, seed=2)
    features = {k: v.astype(np.float64) if v.dtype == np.float32 else v.tolist()
                for k, v in features.items()}
    with serving.PredictionClient(server.target, "mre", timeout=30) as client:
        out = client.predict(features)
    assert out["probabilities"].shape == (1, 3)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.pop("audio_length"), r"missing input\(s\) \['audio_length'\]"),
        (lambda f: f.update(extra=np.zeros(3)), r"unexpected input\(s\) \['extra'\]"),
        (lambda f: f.update(text=f["text"][0]), r"input 'text': expected rank 3 \[\?, \?, 12\], got shape \[7, 12\]"),
        (lambda f: f.update(audio=np.zeros((3, 5, 7), np.float32)), r"input 'audio': dim 2 must be 6"),
        (lambda f: f.update(text_length=np.array([1.5, 2.0, 3.0])), r"input 'text_length': expected int32 \(integers\), got float64"),
        (lambda f: f.update(vision=np.array([["a"]])), r"input 'vision': expected float32, got <U1"),
        (lambda f: f.update(vision_length=np.array([1, 2], np.int32)), r"batch size 2 but 'audio' has 3"),
        (lambda f: f.update(audio_length=np.array([2**40, 1, 1])), r"input 'audio_length': values out of the int32 range"),
        (lambda f: f.update(text_length=np.array([8, 1, 1], np.int32)), r"input 'text_length': lengths must lie in 0..7"),
        (lambda f: f.update(vision_length=np.array([-1, 1, 1], np.int32)), r"input 'vision_length': lengths must lie in 0..4"),
        (lambda f: f["audio"].__setitem__((0, 0, 0), np.nan), r"input 'audio': holds NaN or infinite values"),
    ],
)
def test_client_validation_errors(server, change, message):
    features = _features()
    change(features)
    with serving.PredictionClient(server.target, "mre", timeout=30) as client:
        with pytest.raises(ServingError, match=message):
            client.predict(features)


def test_client_errors_from_server(server, exported):
    base, _ = exported
    with pytest.raises(ServingError, match="model 'other'.* NOT_FOUND: Servable not found"):
        serving.PredictionClient(server.target, "other", timeout=30).predict(_features())
    with pytest.raises(ServingError, match="has no signature 'classify'"):
        serving.PredictionClient(server.target, "mre", signature="classify", timeout=30).predict(_features())
    # With a client-side spec the request reaches the server, which rejects it.
    spec = dict(serving.PredictionClient.from_export(server.target, "mre", os.path.join(base, "mre")).inputs)
    spec["text"] = {"dtype": "float32", "shape": [None, None, 4]}
    bad = _features()
    bad["text"] = np.zeros((3, 7, 4), np.float32)
    with pytest.raises(ServingError, match="Predict to .* failed: INVALID_ARGUMENT"):
        serving.PredictionClient(server.target, "mre", inputs=spec, timeout=30).predict(bad)


def test_unreachable_server_times_out():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = serving.PredictionClient(f"127.0.0.1:{port}", "mre", timeout=1.0,
                                      inputs={"x": {"dtype": "float32", "shape": [None]}})
    with pytest.raises(ServingError, match=r"Predict to 127.0.0.1:\d+ \(model 'mre'\) failed: (UNAVAILABLE|DEADLINE_EXCEEDED)"):
        client.predict({"x": np.zeros(2, np.float32)})
    with pytest.raises(ServingError, match="timeout must be positive"):
        serving.PredictionClient("127.0.0.1:1", "mre", timeout=0)
