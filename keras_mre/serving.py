"""gRPC client for TensorFlow Serving's PredictionService, and a local server.

`PredictionClient` talks to a running TF Serving (or any PredictionService)
serving a model exported by `keras_mre.export`:

```python
from keras_mre.serving import PredictionClient
with PredictionClient("localhost:8500", "mre") as client:
    out = client.predict({"text": text, "text_length": text_len, ...})
    out["class_name"], out["relevance"]
```

Requests are checked against the served signature before they are sent
(names, dtypes, ranks, fixed dims, one batch size), so a wrong input ends in
a `ServingError` naming the input instead of a server-side stack trace. The
signature comes from the server's `GetModelMetadata` on first use, or from
`inputs=` / `PredictionClient.from_export(...)`.

`LocalPredictionServer` runs a PredictionService in this process, backed by
an exported SavedModel; it answers `Predict` and `GetModelMetadata` like TF
Serving does for these models and exists for tests and local trials.
"""

import os
from concurrent import futures

import numpy as np

from keras_mre.errors import ServingError

DEFAULT_SIGNATURE = "serving_default"
_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "string": np.object_,
}


def _dtype_name(tf_dtype):
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(tf_dtype)
    return "string" if dtype == tf.string else dtype.name


def spec_from_signature_def(signature_def):
    """`{name: {"dtype", "shape"}}` of the inputs of a `SignatureDef` proto."""
    spec = {}
    for name, info in signature_def.inputs.items():
        shape = None
        if not info.tensor_shape.unknown_rank:
            shape = [None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim]
        spec[name] = {"dtype": _dtype_name(info.dtype), "shape": shape}
    return spec


def validate_features(features, spec):
    """Check and convert a request against an input spec.

    Args:
        features: Dict input name -> array-like.
        spec: Dict input name -> {"dtype": "float32" | "int32" | ...,
            "shape": list with None for free dims, or None}.

    Returns:
        Dict name -> numpy array of the expected dtype.

    Raises:
        ServingError: a missing or unexpected input, a value that cannot be
            represented in the expected dtype, a wrong rank, a wrong fixed
            dim, inputs with different batch sizes, NaN or infinite frames,
            or a `<m>_length` outside `0..frames` of `<m>`.
    """
    if not isinstance(features, dict):
        raise ServingError(f"features must be a dict of arrays, got {type(features).__name__}")
    missing = sorted(set(spec) - set(features))
    unexpected = sorted(set(features) - set(spec))
    if missing:
        raise ServingError(f"missing input(s) {missing}; the signature expects {sorted(spec)}")
    if unexpected:
        raise ServingError(f"unexpected input(s) {unexpected}; the signature expects {sorted(spec)}")
    arrays = {}
    batch = None
    for name in sorted(spec):
        expected = spec[name]
        dtype = _DTYPES.get(expected["dtype"])
        if dtype is None:
            raise ServingError(f"input {name!r}: unsupported dtype {expected['dtype']!r}")
        value = np.asarray(features[name])
        kind = np.dtype(dtype).kind
        if kind == "f" and value.dtype.kind not in "fiu":
            raise ServingError(f"input {name!r}: expected {expected['dtype']}, got {value.dtype}")
        if kind in "iu" and value.dtype.kind not in "iu":
            raise ServingError(
                f"input {name!r}: expected {expected['dtype']} (integers), got {value.dtype}"
            )
        if kind in "iu" and value.size:
            info = np.iinfo(dtype)
            if value.min() < info.min or value.max() > info.max:
                raise ServingError(f"input {name!r}: values out of the {expected['dtype']} range")
        if kind == "O" and value.dtype.kind not in "OSU":
            raise ServingError(f"input {name!r}: expected strings, got {value.dtype}")
        value = value.astype(dtype, copy=False)
        shape = expected["shape"]
        if shape is not None:
            if value.ndim != len(shape):
                raise ServingError(
                    f"input {name!r}: expected rank {len(shape)} {_shape_text(shape)}, "
                    f"got shape {list(value.shape)}"
                )
            for axis, (want, got) in enumerate(zip(shape, value.shape)):
                if want is not None and want != got:
                    raise ServingError(
                        f"input {name!r}: dim {axis} must be {want} {_shape_text(shape)}, "
                        f"got shape {list(value.shape)}"
                    )
        if value.ndim:
            if batch is None:
                batch = (name, value.shape[0])
            elif value.shape[0] != batch[1]:
                raise ServingError(
                    f"input {name!r} has batch size {value.shape[0]} but {batch[0]!r} has {batch[1]}"
                )
        if kind == "f" and value.size and not np.all(np.isfinite(value)):
            raise ServingError(f"input {name!r}: holds NaN or infinite values")
        arrays[name] = value
    for name, value in arrays.items():
        frames_name = name[: -len("_length")] if name.endswith("_length") else None
        if frames_name in arrays and arrays[frames_name].ndim >= 2 and value.size:
            frames = arrays[frames_name].shape[1]
            if value.min() < 0 or value.max() > frames:
                raise ServingError(
                    f"input {name!r}: lengths must lie in 0..{frames} (the frames sent in "
                    f"{frames_name!r}), got {value.min()}..{value.max()}"
                )
    return arrays


def _shape_text(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


# gRPC's default 4 MB receive limit is passed by a MOSEI-shaped batch of 12
# clips (text 50x768, audio 500x74, vision 500x35 float32, 370 KB a clip);
# TF Serving's model server accepts messages up to 2 GB, and so do this
# client and the local server.
MAX_MESSAGE_BYTES = 2**31 - 1


def message_size_options(max_receive=MAX_MESSAGE_BYTES):
    """gRPC channel/server options: send up to 2 GB, receive `max_receive`."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", max_receive),
    ]


class PredictionClient:
    """Client of TF Serving's gRPC `PredictionService` for keras-mre exports.

    Args:
        target: `host:port` of the server's gRPC endpoint (TF Serving's
            `--port`, 8500 by default).
        model_name: The served model name (`--model_name`).
        signature: Signature to call.
        timeout: Seconds per call before `ServingError`.
        version: Model version to call; None for the server's latest.
        inputs: Input spec `{name: {"dtype", "shape"}}`; None fetches it
            from the server's model metadata on first use.
        channel: An existing `grpc.Channel` to use instead of `target`.
    """

    def __init__(self, target, model_name, signature=DEFAULT_SIGNATURE, timeout=10.0, *,
                 version=None, inputs=None, channel=None):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        if not model_name:
            raise ServingError("model_name must be a non-empty string")
        if timeout is not None and timeout <= 0:
            raise ServingError(f"timeout must be positive seconds, got {timeout!r}")
        self.target = target
        self.model_name = model_name
        self.signature = signature
        self.timeout = timeout
        self.version = version
        self._inputs = inputs
        self._own_channel = channel is None
        self._channel = channel or grpc.insecure_channel(target, options=message_size_options())
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    @classmethod
    def from_export(cls, target, model_name, export_path, **kwargs):
        """A client whose input spec is read from a local export directory."""
        from keras_mre import export

        path = os.fspath(export_path)
        if not os.path.isfile(os.path.join(path, export.SIGNATURE_FILE)):
            path = export.latest_version_dir(path)
        description = export.read_signature_description(path)
        return cls(target, model_name, inputs=description["inputs"], **kwargs)

    def _model_spec(self, spec):
        spec.name = self.model_name
        spec.signature_name = self.signature
        if self.version is not None:
            spec.version.value = int(self.version)

    def _call(self, method, request, what):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code = error.code().name if error.code() else "UNKNOWN"
            details = (error.details() or "").splitlines()[0] if error.details() else ""
            raise ServingError(
                f"{what} to {self.target} (model {self.model_name!r}) failed: {code}: {details}"
            ) from None

    def metadata(self):
        """The served signature's input spec, from `GetModelMetadata`."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request.model_spec)
        request.metadata_field.append("signature_def")
        response = self._call(self._stub.GetModelMetadata, request, "GetModelMetadata")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata:
            raise ServingError(f"{self.target}: model metadata has no signature_def")
        response.metadata["signature_def"].Unpack(signature_map)
        if self.signature not in signature_map.signature_def:
            raise ServingError(
                f"{self.target}: model {self.model_name!r} has no signature {self.signature!r} "
                f"(it has {sorted(signature_map.signature_def)})"
            )
        return spec_from_signature_def(signature_map.signature_def[self.signature])

    @property
    def inputs(self):
        """The input spec used to validate requests."""
        if self._inputs is None:
            self._inputs = self.metadata()
        return self._inputs

    def predict(self, features):
        """Send one `Predict` request.

        Args:
            features: Dict input name -> array-like (the export's inputs:
                `<m>` float32 `[B, T, D]` and `<m>_length` int32 `[B]`).

        Returns:
            Dict output name -> numpy array (`probabilities`, `class_id`,
            `class_name` as bytes, `relevance`, `relevance_<m>`).

        Raises:
            ServingError: invalid features, or the call failed.
        """
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        arrays = validate_features(features, self.inputs)
        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec)
        for name, value in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self._stub.Predict, request, "Predict")
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def close(self):
        """Close the channel (when the client opened it)."""
        if self._own_channel:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class LocalPredictionServer:
    """A gRPC PredictionService in this process, serving one exported model.

    Answers `Predict` and `GetModelMetadata` (signature_def) for the model
    name it was given, with TF Serving's status codes for unknown models,
    signatures and bad inputs (`NOT_FOUND`, `INVALID_ARGUMENT`).

    Args:
        export_path: A version directory or model base directory written by
            `keras_mre.export.export_saved_model` (the latest version is used).
        model_name: Name clients must ask for.
        host: Interface to bind.
        port: Port; 0 picks a free one (see `.port`).
        max_workers: Server threads.
        max_message_bytes: Largest request accepted (default 2 GB, as TF
            Serving); a larger one fails with `RESOURCE_EXHAUSTED`.
    """

    def __init__(self, export_path, model_name, host="127.0.0.1", port=0, max_workers=4,
                 max_message_bytes=MAX_MESSAGE_BYTES):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        from keras_mre import export

        path = os.fspath(export_path)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            path = export.latest_version_dir(path)
        self.version = int(os.path.basename(os.path.normpath(path))) if os.path.basename(
            os.path.normpath(path)).isdigit() else 1
        self.model_name = model_name
        self._loaded = tf.saved_model.load(path)
        self._signature_defs = _read_signature_defs(path)
        servicer = _Servicer(self)
        if (isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int)
                or not 0 < max_message_bytes <= MAX_MESSAGE_BYTES):
            raise ServingError(
                f"max_message_bytes must be an integer in 1..{MAX_MESSAGE_BYTES}, got {max_message_bytes!r}"
            )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            options=message_size_options(max_message_bytes),
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise ServingError(f"cannot bind a gRPC server to {host}:{port}")
        self.target = f"{host}:{self.port}"

    def start(self):
        """Start serving; returns self."""
        self._server.start()
        return self

    def stop(self, grace=None):
        """Stop serving."""
        self._server.stop(grace).wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def _read_signature_defs(path):
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved = saved_model_pb2.SavedModel.FromString(f.read())
    for meta_graph in saved.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ServingError(f"{path}: SavedModel has no 'serve' meta graph")


def _servicer_base():
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceServicer


class _Servicer(_servicer_base()):
    def __init__(self, server):
        self._server = server

    def _check_spec(self, spec, context, check_signature=True):
        import grpc

        if spec.name != self._server.model_name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec.name}")
        if spec.HasField("version") and spec.version.value != self._server.version:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({spec.name}, {spec.version.value})",
            )
        name = spec.signature_name or DEFAULT_SIGNATURE
        if check_signature and name not in self._server._signature_defs:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Serving signature name: \"{name}\" not found in signature def",
            )
        return name

    def Predict(self, request, context):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        name = self._check_spec(request.model_spec, context)
        function = self._server._loaded.signatures[name]
        expected = set(self._server._signature_defs[name].inputs)
        given = set(request.inputs)
        if given != expected:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input keys {sorted(given)} do not match the signature's {sorted(expected)}",
            )
        try:
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            outputs = function(**inputs)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error).splitlines()[0])
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self._server.model_name
        response.model_spec.version.value = self._server.version
        response.model_spec.signature_name = name
        wanted = set(request.output_filter) or set(outputs)
        for key, value in outputs.items():
            if key in wanted:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response

    def GetModelMetadata(self, request, context):
        import grpc
        from tensorflow_serving.apis import get_model_metadata_pb2

        # Like TF Serving, metadata requests ignore the signature name.
        self._check_spec(request.model_spec, context, check_signature=False)
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Metadata field signature_def is the only supported field",
            )
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in self._server._signature_defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self._server.model_name
        response.model_spec.version.value = self._server.version
        response.metadata["signature_def"].Pack(signature_map)
        return response
