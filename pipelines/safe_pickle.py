"""A restricted, lazily reading unpickler for numpy feature pickles.

Pickles can run arbitrary code when loaded: any global they name is looked
up and may be called. `load_pickle` admits only numpy arrays, numpy dtypes
and numpy scalars, builtin containers and scalars; any other global (for
example `os.system`, `builtins.eval`, `subprocess.Popen`) stops the load
with a DataError before anything is called.

Large arrays are not read into memory. Their bytes, when they sit in the
file outside a pickle frame (as protocol 3-5 pickles write any large bytes
object), are recorded by file offset and come back as `LazyArray`s whose
rows are read on demand. Memory therefore stays bounded by what the caller
reads at a time, not by the size of the file.
"""

import collections
import os
import pickle
import struct

import numpy as np

from keras_mre.errors import DataError

# Byte strings at least this long are left on disk and read on demand.
LAZY_THRESHOLD = 1 << 20


class _ArrayReconstructor:
    """Stands in for numpy's ndarray reconstruction while unpickling."""

    def __init__(self, shape=None, dtype=None, fortran=False, data=None):
        self.shape = shape
        self.dtype = dtype
        self.fortran = fortran
        self.data = data

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("unexpected ndarray state")
        if len(state) == 5:
            state = state[1:]
        self.shape, self.dtype, self.fortran, self.data = state


def _reconstruct(cls, shape, typecode):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy.ndarray is allowed")
    return _ArrayReconstructor()


def _frombuffer(buffer, dtype, shape, order):
    return _ArrayReconstructor(tuple(shape), dtype, order == "F", buffer)


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("only numeric numpy scalars are allowed")
    if isinstance(data, str):
        data = data.encode("latin1")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode expects a string")
    return text.encode(encoding, errors)


_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _SAFE_GLOBALS[(_module, "_reconstruct")] = _reconstruct
    _SAFE_GLOBALS[(_module, "scalar")] = _scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _SAFE_GLOBALS[(_module, "_frombuffer")] = _frombuffer
for _name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex",
              "bool", "str", "bytes", "bytearray"):
    _SAFE_GLOBALS[("builtins", _name)] = getattr(__import__("builtins"), _name)
    _SAFE_GLOBALS[("__builtin__", _name)] = _SAFE_GLOBALS[("builtins", _name)]


class _FileBytes:
    """A byte range of the pickle file that was not read."""

    def __init__(self, offset, size):
        self.offset = offset
        self.size = size


class LazyArray:
    """A C-ordered numpy array stored in a file, read row block by row block.

    Attributes:
        path: The file holding the bytes.
        offset: Byte offset of the first element.
        shape: Array shape.
        dtype: numpy dtype.
    """

    def __init__(self, path, offset, shape, dtype):
        self.path = path
        self.offset = offset
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self):
        return len(self.shape)

    def __len__(self):
        return self.shape[0]

    def rows(self, start, stop):
        """Read rows `start:stop` into memory."""
        stop = min(stop, self.shape[0])
        row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        count = max(stop - start, 0) * row_items
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * row_items * self.dtype.itemsize)
            data = np.fromfile(f, dtype=self.dtype, count=count)
        if data.size != count:
            raise DataError(f"{self.path}: file ends inside an array (truncated pickle)")
        return data.reshape((max(stop - start, 0),) + self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        array = self.rows(0, self.shape[0])
        return array if dtype is None else array.astype(dtype)


class _RestrictedUnpickler(pickle._Unpickler):
    """Pure-Python unpickler with an allow-list and lazy large byte strings."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path, lazy_threshold):
        super().__init__(file, encoding="latin1")
        self._source = file
        self._path = path
        self._lazy_threshold = lazy_threshold
        self._file_size = os.fstat(file.fileno()).st_size

    def find_class(self, module, name):
        allowed = _SAFE_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(
                f"{self._path}: refused to load: the pickle asks for global "
                f"{module}.{name}; only numpy arrays, numpy dtypes and builtin "
                "containers/scalars are allowed (nothing was executed)"
            )
        return allowed

    def persistent_load(self, pid):
        raise DataError(f"{self._path}: refused to load: the pickle uses persistent ids")

    def _large(self, size, make):
        unframed = getattr(self._unframer, "current_frame", None) is None
        if size >= self._lazy_threshold and unframed:
            offset = self._source.tell()
            if offset + size > self._file_size:
                raise DataError(f"{self._path}: file ends inside a {size}-byte array (truncated pickle)")
            self._source.seek(size, os.SEEK_CUR)
            self.append(_FileBytes(offset, size))
        else:
            data = self.read(size)
            if len(data) != size:
                raise DataError(f"{self._path}: file ends inside a {size}-byte string (truncated pickle)")
            self.append(make(data))

    def _load_binbytes(self):
        (size,) = struct.unpack("<I", self.read(4))
        self._large(size, bytes)

    def _load_binbytes8(self):
        (size,) = struct.unpack("<Q", self.read(8))
        self._large(size, bytes)

    def _load_bytearray8(self):
        (size,) = struct.unpack("<Q", self.read(8))
        self._large(size, bytearray)

    dispatch[pickle.BINBYTES[0]] = _load_binbytes
    dispatch[pickle.BINBYTES8[0]] = _load_binbytes8
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8


def _finish_array(item, path):
    shape = tuple(int(n) for n in item.shape)
    dtype = item.dtype
    if not isinstance(dtype, np.dtype):
        raise DataError(f"{path}: an array in the pickle has no valid dtype")
    data = item.data
    if isinstance(data, list):
        array = np.empty(len(data), dtype=object)
        array[:] = data
        return array.reshape(shape, order="F" if item.fortran else "C")
    if isinstance(data, _FileBytes):
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if data.size != expected:
            raise DataError(f"{path}: an array of shape {shape} holds {data.size} bytes, expected {expected}")
        if not item.fortran or len(shape) < 2:
            return LazyArray(path, data.offset, shape, dtype)
        with open(path, "rb") as f:
            f.seek(data.offset)
            data = f.read(data.size)
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)):
        raise DataError(f"{path}: an array in the pickle has unsupported data")
    array = np.frombuffer(bytes(data), dtype=dtype)
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise DataError(f"{path}: an array of shape {shape} holds {array.size} values")
    return array.reshape(shape, order="F" if item.fortran else "C")


def _finish(value, path):
    if isinstance(value, _ArrayReconstructor):
        return _finish_array(value, path)
    if isinstance(value, dict):
        return type(value)((k, _finish(v, path)) for k, v in value.items())
    if isinstance(value, list):
        return [_finish(v, path) for v in value]
    if isinstance(value, tuple):
        return tuple(_finish(v, path) for v in value)
    return value


def load_pickle(path, *, lazy_threshold=None):
    """Load a pickle of numpy arrays and builtin containers, safely.

    Args:
        path: Pickle file.
        lazy_threshold: Arrays whose bytes are at least this large (and sit
            outside a pickle frame) come back as `LazyArray`; default
            `LAZY_THRESHOLD`.

    Returns:
        The unpickled object; arrays are `np.ndarray` or `LazyArray`.

    Raises:
        DataError: the file is missing, is not a pickle, is truncated, or
            names a global outside the allow-list (nothing is executed).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: pickle file not found")
    if lazy_threshold is None:
        lazy_threshold = LAZY_THRESHOLD
    with open(path, "rb") as f:
        try:
            value = _RestrictedUnpickler(f, path, lazy_threshold).load()
        except DataError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
                IndexError, AttributeError, struct.error, UnicodeDecodeError,
                OverflowError, MemoryError) as error:
            raise DataError(
                f"{path}: not a readable pickle of numpy arrays "
                f"({type(error).__name__}: {str(error)[:120]})"
            ) from None
    return _finish(value, path)
