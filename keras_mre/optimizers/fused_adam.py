"""Adam whose per-variable update is one fused kernel on TensorFlow."""

import keras


@keras.saving.register_keras_serializable(package="keras_mre")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam`, with each variable's update fused on TensorFlow.

    The update is Adam's (Kingma & Ba 2015, Algorithm 1 with the
    "epsilon hat" form), exactly as `keras.optimizers.Adam` computes it:

        m <- b1 m + (1 - b1) g
        v <- b2 v + (1 - b2) g^2
        w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

    Keras' Adam writes this as about twenty small operations per variable
    (casts, powers, one pass over the variable per element-wise op). On the
    TensorFlow backend without a distribution strategy this class computes
    the step's scalars once and updates each variable with TensorFlow's
    `ResourceApplyAdam` kernel, one pass over the variable and its two
    moments: for MRE on MOSEI shapes that removes about a thousand op
    dispatches from every CPU training step. Everywhere else (other
    backends, under a `tf.distribute` strategy, `amsgrad=True`, sparse
    gradients) it is Keras' `Adam` unchanged. Gradient clipping, weight
    decay, gradient accumulation, EMA and loss scaling are the base
    optimizer's and behave as in `Adam`.

    Arguments, `get_config` and saving: those of `keras.optimizers.Adam`
    (this class adds none); `build_model(compile=True)` uses it with
    `config.learning_rate`.

    The fused path overrides `_backend_update_step`, a hook internal to
    Keras (3.15); should a Keras release stop calling it, updates silently
    become Adam's own, and `tests/optimizers/test_fused_adam.py` fails on
    the missing `ResourceApplyAdam`.
    """

    def _fused(self):
        if keras.config.backend() != "tensorflow" or self.amsgrad:
            return False
        import tensorflow as tf

        return not tf.distribute.has_strategy()

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self._fused():
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        import tensorflow as tf

        scalars = {}
        for grad, variable in zip(grads, trainable_variables):
            if isinstance(grad, tf.IndexedSlices):
                self.update_step(grad, variable, learning_rate)
                continue
            dtype = variable.dtype
            if dtype not in scalars:
                step = tf.cast(self.iterations + 1, dtype)
                beta_1 = tf.cast(self.beta_1, dtype)
                beta_2 = tf.cast(self.beta_2, dtype)
                scalars[dtype] = (
                    tf.pow(beta_1, step),
                    tf.pow(beta_2, step),
                    tf.cast(learning_rate, dtype),
                    beta_1,
                    beta_2,
                    tf.cast(self.epsilon, dtype),
                )
            beta_1_power, beta_2_power, lr, beta_1, beta_2, epsilon = scalars[dtype]
            index = self._get_variable_index(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=_handle(variable),
                m=_handle(self._momentums[index]),
                v=_handle(self._velocities[index]),
                beta1_power=beta_1_power,
                beta2_power=beta_2_power,
                lr=lr,
                beta1=beta_1,
                beta2=beta_2,
                epsilon=epsilon,
                grad=tf.cast(grad, dtype),
            )


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable."""
    if isinstance(variable, keras.Variable):
        variable = variable.value  # the backing tf.Variable
    return variable.handle
