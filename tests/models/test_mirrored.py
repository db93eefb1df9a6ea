"""A 2-replica MirroredStrategy step equals the single-device step, with SGD
and with keras-mre's FusedAdam (whose fused kernel runs on one device only).

Runs in a subprocess: the two logical CPU devices must be configured before
any TensorFlow op, and one MirroredStrategy per process is the safe rule.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    import numpy as np
    from keras_mre.models import build_model
    from keras_mre.optimizers import FusedAdam
    from keras_mre.testing import random_batch

    dims = {"text": 6, "audio": 4, "vision": 5}
    x, y = random_batch(dims, num_classes=3, batch=16, max_len=5, seed=3)

    def step(strategy, optimizer):
        with strategy.scope():
            model = build_model(
                feature_dims=dims, num_classes=3, hidden_dim=8, dropout=0.0,
                seed=7, compile=False,
            )
            model.compile(optimizer=optimizer())
        history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        weights = [np.asarray(w).tolist() for w in model.get_weights()]
        logs = {k: float(v[-1]) for k, v in history.history.items()}
        return logs, weights

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored_strategy = tf.distribute.MirroredStrategy(devices)
    result = {"devices": len(devices)}
    for name, optimizer in (("sgd", lambda: keras.optimizers.SGD(0.5)),
                            ("fused_adam", lambda: FusedAdam(0.05))):
        result[name] = {"single": step(tf.distribute.get_strategy(), optimizer),
                        "mirrored": step(mirrored_strategy, optimizer)}
    print("RESULT" + json.dumps(result))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "fused_adam"])
def test_two_replica_step_equals_single_device_step(mirrored_run, optimizer):
    result = mirrored_run
    assert result["devices"] == 2
    single_logs, single_weights = result[optimizer]["single"]
    mirrored_logs, mirrored_weights = result[optimizer]["mirrored"]
    for name in ("loss", "ce", "rs", "cnce"):
        assert mirrored_logs[name] == pytest.approx(single_logs[name], abs=1e-5), name
    changed = 0
    for a, b in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
        changed += 1
    assert changed == len(single_weights) > 0


@pytest.fixture(scope="module")
def mirrored_run():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])
