"""The models on Keras' JAX and PyTorch backends: training, metrics, and
`.keras` files that load and predict the same under TensorFlow.

Each backend's test runs where its framework is installed: JAX is in
`requirements-dev.txt`; PyTorch is not (its default wheels are large), so
its test is skipped unless `torch` is importable."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

DIMS = {"text": 6, "audio": 3, "vision": 4}
# Small MulT: its compile time on JAX grows with the number of blocks.
# MRE covers LSTMEncoder, the relevance module and both extra losses;
# Graph-MFN the recurrent MFN cell (with its per-step gate dropout drawn
# before the scan) and the Dynamic Fusion Graph.
_MFN = {"num_steps": 3, "lstm_dim": 4, "memory_dim": 6, "attention_dim": 6,
        "gate_dim": 6}
MODELS = {
    "mre": {},
    "mult": {"model_dim": 8, "num_heads": 2, "num_layers": 1, "memory_layers": 1},
    "graph_mfn": dict(_MFN, graph_dim=6),
}
# PyTorch compiles nothing ahead, so its case takes every model.
MODELS_BY_BACKEND = {
    "jax": MODELS,
    "torch": dict(
        MODELS,
        lmf={"hidden_dim": 8, "rank": 2},
        tfn={"hidden_dim": 8, "fusion_dim": 4, "post_fusion_dim": 8},
        ef_lstm={"hidden_dim": 8, "num_steps": 4},
        misa={"hidden_dim": 8, "max_steps": 4},
        mfn=_MFN,
    ),
}

_BACKEND_SCRIPT = r"""
import json, sys
import numpy as np
import keras
import keras_mre

out_dir, dims, models = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
assert keras.config.backend() == sys.argv[4], keras.config.backend()
data = dict(np.load(f"{out_dir}/batch.npz"))
x = {k: v for k, v in data.items() if k != "emotion"}
y = {"emotion": data["emotion"]}
results = {}
for name, overrides in models.items():
    model = keras_mre.build_model(name, feature_dims=dims, num_classes=3, seed=0,
                                  batch_size=8, **overrides)
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    first = model.evaluate(x, y, verbose=0, return_dict=True)
    again = model.evaluate(x, y, verbose=0, return_dict=True)  # metrics reset
    predicted = model.predict(dict(x, id=np.arange(16)), verbose=0)["emotion"]
    model.save(f"{out_dir}/{name}.keras")
    results[name] = {
        "loss": [float(v) for v in history.history["loss"]],
        "evaluate": [first, again],
        "predicted": np.asarray(predicted).tolist(),
    }
print(json.dumps(results))
"""


def _batch(path):
    rng = np.random.default_rng(0)
    lengths = {"text": [5, 0, 3, 5, 1, 4, 5, 2] * 2, "audio": [7] * 16, "vision": [4, 0] * 8}
    batch = {"emotion": np.tile([0, 1, 2, 1], 4).astype("int32")}
    for m, d in DIMS.items():
        frames = rng.normal(size=(16, max(lengths[m]) + 1, d)).astype("float32")
        for i, n in enumerate(lengths[m]):
            frames[i, n:] = 0.0
        batch[m] = frames
        batch[f"{m}_length"] = np.asarray(lengths[m], "int32")
    np.savez(path, **batch)
    return batch


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_train_on_backend_and_their_files_predict_the_same_on_tensorflow(
    backend, tmp_path
):
    pytest.importorskip(backend)
    import keras_mre

    models = MODELS_BY_BACKEND[backend]
    batch = _batch(tmp_path / "batch.npz")
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
               CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", _BACKEND_SCRIPT, str(tmp_path), json.dumps(DIMS),
         json.dumps(models), backend],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    x = {k: v for k, v in batch.items() if k != "emotion"}
    assert sorted(results) == sorted(models)
    for name in models:
        result = results[name]
        assert all(np.isfinite(result["loss"])), (name, result["loss"])
        first, again = result["evaluate"]
        assert first == pytest.approx(again), name  # metric state resets between runs
        predicted = np.asarray(result["predicted"])
        assert predicted.shape == (16, 3)
        np.testing.assert_allclose(predicted.sum(-1), 1.0, atol=1e-5)
        # The same file, loaded under this process's TensorFlow backend.
        loaded = keras_mre.models.load_model(tmp_path / f"{name}.keras")
        np.testing.assert_allclose(
            loaded.predict(x, verbose=0)["emotion"], predicted, atol=1e-4, err_msg=name
        )
