"""Read PyTorch checkpoints tensor by tensor, without running their pickles and without importing torch.

A `torch.save` file is a pickle, and unpickling runs whatever the file names: `torch.load(weights_only=False)`
of a downloaded checkpoint is arbitrary code execution. Here every pickle goes through `_RestrictedUnpickler`,
whose `find_class` knows a fixed list of harmless names (the tensor rebuild functions, storage types,
`OrderedDict`, numpy scalars); any other import (`os.system`, `builtins.eval`, a module's source, ...) stops
the read with `UnsafeCheckpointError` before anything is called. This is the same guarantee as
`torch.load(weights_only=True)`, which was not used because:
  - the released Jukebox files (2020, torch 1.4) are in the legacy non-zip format, which `torch.load` cannot
    memory-map: it would hold the whole file (10 GB for a 5B prior) in RAM next to the converted copy;
  - conversion then needs no torch install at all.

Both on-disk formats are supported:
  - zip (torch >= 1.6, HF `pytorch_model*.bin`): `<archive>/data.pkl` + one stored (uncompressed) zip member per
    storage, `<archive>/data/<key>`;
  - legacy: magic number, protocol version and system-info pickles, the main pickle, the sorted list of storage
    keys, then each storage as an int64 element count followed by its raw bytes.
Tensors come back as `LazyTensor`s that know their dtype, shape and where their bytes lie; the bytes are read
(through `np.memmap`) only when a tensor is converted, one tensor at a time. Safetensors files are read with
`safetensors.safe_open`, also one tensor at a time.

Every read error is one line that names the file: `CheckpointReadError`.
"""
from __future__ import annotations

import codecs
import collections
import json
import os
import pathlib
import pickle
import struct
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import ml_dtypes
import numpy as np

from jukejax.errors import UserError

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c   # torch/serialization.py MAGIC_NUMBER
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32), "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16), "DoubleStorage": np.dtype(np.float64),
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32), "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8), "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class CheckpointReadError(UserError):
    """A weights file cannot be read (missing, truncated, corrupt, or not a weights file). One line."""


class UnsafeCheckpointError(CheckpointReadError):
    """A pickle asks for something other than tensors and plain containers: it could run code on load."""


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# ------------------------------------------------------------------------------------------------------------
# Lazy tensors


class LazyTensor:
    """A tensor of a checkpoint: dtype and shape now, values on demand (`np.asarray(t, dtype)`, `t.numpy()`).

    Each read returns a fresh array that owns its memory (never a view of the mapped file), so the converted
    params never pin the source file's pages; a read costs one copy of the tensor (cast included).
    """
    __slots__ = ("source", "dtype", "shape", "_read")

    def __init__(self, source: str, dtype: np.dtype, shape: Tuple[int, ...], read: Callable[[], np.ndarray]):
        self.source = source
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self._read = read

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def numpy(self, dtype: Any = None) -> np.ndarray:
        value = self._read()
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        # One copy: readers hand back views of the mapped file (copied here, with the cast) or fresh arrays.
        out = value.astype(dtype, copy=False) if value.flags.owndata else np.array(value, dtype=dtype, copy=True)
        if out.shape != self.shape:
            raise CheckpointReadError(f"{self.source}: a tensor read back with shape {out.shape}, expected "
                                      f"{self.shape}")
        return out

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
        return self.numpy(dtype)

    def checked(self, check: Callable[[np.ndarray], None]) -> "LazyTensor":
        """The same tensor, with `check` run on the stored values at every read (before any cast)."""
        def read() -> np.ndarray:
            value = self._read()
            check(value)
            return value
        return LazyTensor(self.source, self.dtype, self.shape, read)

    def __repr__(self) -> str:
        return f"LazyTensor({self.dtype.name}{list(self.shape)} from {self.source})"


def _memmap_reader(path: str, dtype: np.dtype, byte_offset: int, shape: Tuple[int, ...],
                   strides: Tuple[int, ...]) -> Callable[[], np.ndarray]:
    """A read-only view of the elements `i . strides` (strides in elements) of the array of `dtype` at
    `byte_offset` of the file, mapped for as long as the view lives (np.memmap takes unaligned offsets, which the
    legacy format has)."""
    def read() -> np.ndarray:
        if any(s == 0 for s in shape):
            return np.zeros(shape, dtype)
        extent = 1 + sum((n - 1) * st for n, st in zip(shape, strides))
        flat = np.memmap(path, dtype=dtype, mode="r", offset=byte_offset, shape=(extent,))
        return np.lib.stride_tricks.as_strided(flat, shape=shape, strides=[st * dtype.itemsize for st in strides],
                                               writeable=False)
    return read


# ------------------------------------------------------------------------------------------------------------
# Restricted unpickling


class _StorageType:
    """Stands in for `torch.FloatStorage` & co.: only its element dtype matters."""
    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


class _StorageRef:
    """A (possibly offset) view of one storage of the file, resolved to bytes when a tensor is read."""
    __slots__ = ("key", "dtype", "element_offset", "numel")

    def __init__(self, key: str, dtype: np.dtype, element_offset: int, numel: int):
        self.key, self.dtype, self.element_offset, self.numel = key, dtype, element_offset, numel


class _TensorSpec:
    """What `_rebuild_tensor_v2` would build, before its bytes are located."""
    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage: _StorageRef, offset: int, shape, stride):
        if not isinstance(storage, _StorageRef):
            raise pickle.UnpicklingError("a tensor without a storage")
        self.storage, self.offset = storage, int(offset)
        self.shape, self.stride = tuple(int(s) for s in shape), tuple(int(s) for s in stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _TensorSpec(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorSpec(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=np.dtype(dtype), count=1)[0] if data is not None else np.dtype(dtype).type()


_ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): codecs.encode,           # protocol-2 pickles of `bytes`
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "dtype"): np.dtype,                    # numpy scalars (e.g. metrics saved beside the weights)
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, persistent_load: Optional[Callable[[Any], Any]] = None):
        super().__init__(file)
        self._path = path
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self._path}: not a plain weights file: its pickle imports {module}.{name}, which could run code "
            f"when loaded; only tensors, dicts, lists, numbers and strings are read (refusing the whole file)")

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise pickle.UnpicklingError("a persistent id outside the main pickle")
        return self._persistent(pid)


def _unpickle(file, path: str, persistent_load=None) -> Any:
    try:
        return _RestrictedUnpickler(file, path, persistent_load).load()
    except CheckpointReadError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, UnicodeDecodeError, MemoryError, RecursionError) as e:
        raise CheckpointReadError(f"{path}: truncated or corrupt pickle ({_one_line(e)})") from None


def _storage_type(value: Any, path: str) -> _StorageType:
    if not isinstance(value, _StorageType):
        raise CheckpointReadError(f"{path}: a tensor storage of unknown type {value!r}")
    return value


def _resolve(tree: Any, make: Callable[[_TensorSpec], LazyTensor]) -> Any:
    """Replace every `_TensorSpec` in the unpickled object by its `LazyTensor`."""
    if isinstance(tree, _TensorSpec):
        return make(tree)
    if isinstance(tree, dict):
        out = collections.OrderedDict() if isinstance(tree, collections.OrderedDict) else {}
        for k, v in tree.items():
            out[k] = _resolve(v, make)
        return out
    if isinstance(tree, list):
        return [_resolve(v, make) for v in tree]
    if isinstance(tree, tuple):
        return tuple(_resolve(v, make) for v in tree)
    return tree


def _check_extent(path: str, spec: _TensorSpec, available: int) -> None:
    if any(s < 0 for s in spec.shape) or any(s < 0 for s in spec.stride) or len(spec.shape) != len(spec.stride):
        raise CheckpointReadError(f"{path}: a tensor has an invalid shape {spec.shape} / stride {spec.stride}")
    if any(s == 0 for s in spec.shape):
        return
    start = spec.storage.element_offset + spec.offset
    end = start + 1 + sum((n - 1) * st for n, st in zip(spec.shape, spec.stride))
    if start < 0 or end > available:
        raise CheckpointReadError(f"{path}: truncated or corrupt: storage {spec.storage.key} holds {available} "
                                  f"elements but a tensor of shape {spec.shape} needs {end}")


# ------------------------------------------------------------------------------------------------------------
# torch.save formats


def _read_zip(path: str) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointReadError(f"{path}: truncated or corrupt zip checkpoint ({_one_line(e)})") from None
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1] or \
              [n for n in zf.namelist() if n == "data.pkl"]
        if len(pkl) != 1:
            raise CheckpointReadError(f"{path}: a zip file but not a torch.save checkpoint (no single "
                                      f"<archive>/data.pkl)")
        prefix = pkl[0][:-len("data.pkl")]
        names = set(zf.namelist())
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointReadError(f"{path}: unknown byteorder record {byteorder!r}")
        members: Dict[str, Tuple[int, int]] = {}
        with open(path, "rb") as f:
            for info in zf.infolist():
                if not info.filename.startswith(prefix + "data/"):
                    continue
                if info.compress_type != zipfile.ZIP_STORED:
                    raise CheckpointReadError(f"{path}: storage {info.filename} is compressed; torch.save never "
                                              f"compresses, so the file was rewritten by another tool")
                f.seek(info.header_offset)
                header = f.read(30)
                if len(header) != 30 or header[:4] != b"PK\x03\x04":
                    raise CheckpointReadError(f"{path}: truncated or corrupt zip entry {info.filename}")
                name_len, extra_len = struct.unpack("<HH", header[26:30])
                members[info.filename[len(prefix + "data/"):]] = (info.header_offset + 30 + name_len + extra_len,
                                                                  info.file_size)
            size = os.fstat(f.fileno()).st_size
        for key, (offset, nbytes) in members.items():
            if offset + nbytes > size:
                raise CheckpointReadError(f"{path}: truncated: storage {key} ends at byte {offset + nbytes} but "
                                          f"the file has {size}")

        def persistent_load(pid):
            if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
                raise CheckpointReadError(f"{path}: unsupported persistent record {str(pid)[:80]}")
            storage_type, key, _, numel = _storage_type(pid[1], path), str(pid[2]), pid[3], int(pid[4])
            if key not in members:
                raise CheckpointReadError(f"{path}: storage {key} is missing from the archive")
            if numel * storage_type.dtype.itemsize > members[key][1]:
                raise CheckpointReadError(f"{path}: truncated or corrupt: storage {key} is shorter than its "
                                          f"{numel} elements")
            return _StorageRef(key, storage_type.dtype, 0, numel)

        with zf.open(pkl[0]) as f:
            tree = _unpickle(f, path, persistent_load)

    def make(spec: _TensorSpec) -> LazyTensor:
        _check_extent(path, spec, spec.storage.numel)
        dtype = spec.storage.dtype
        start, _ = members[spec.storage.key]
        return LazyTensor(path, dtype, spec.shape,
                          _memmap_reader(path, _file_dtype(dtype, byteorder == "little"),
                                         start + spec.offset * dtype.itemsize, spec.shape, spec.stride))
    return _resolve(tree, make)


def _file_dtype(dtype: np.dtype, little: bool) -> np.dtype:
    return dtype.newbyteorder("<" if little else ">") if dtype.itemsize > 1 else dtype


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        magic = _unpickle(f, path)
        if magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointReadError(f"{path}: not a PyTorch checkpoint (no torch.save header)")
        protocol = _unpickle(f, path)
        sys_info = _unpickle(f, path)
        if protocol != 1001 or not isinstance(sys_info, dict):
            raise CheckpointReadError(f"{path}: unsupported legacy torch.save version {protocol!r}")
        little = bool(sys_info.get("little_endian", True))
        storages: Dict[str, np.dtype] = {}

        def persistent_load(pid):
            if not isinstance(pid, tuple) or not pid:
                raise CheckpointReadError(f"{path}: unsupported persistent record {str(pid)[:80]}")
            if pid[0] != "storage":
                raise UnsafeCheckpointError(f"{path}: not a plain weights file: it stores a {pid[0]!r} record "
                                            f"(pickled module source), which loads by running code")
            storage_type, key, _, numel, view = _storage_type(pid[1], path), str(pid[2]), pid[3], int(pid[4]), \
                pid[5] if len(pid) > 5 else None
            storages.setdefault(key, storage_type.dtype)
            offset = int(view[1]) if view else 0
            return _StorageRef(key, storage_type.dtype, offset, numel)

        tree = _unpickle(f, path, persistent_load)
        keys = _unpickle(f, path)
        if not isinstance(keys, list):
            raise CheckpointReadError(f"{path}: truncated or corrupt (no storage key list)")
        # Storages follow in the order of `keys`: int64 element count, then the raw elements.
        located: Dict[str, Tuple[int, int]] = {}
        position = f.tell()
        for key in keys:
            key = str(key)
            if key not in storages:
                raise CheckpointReadError(f"{path}: storage {key} is listed but never used")
            f.seek(position)
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointReadError(f"{path}: truncated: storage {key} starts past the end of the file")
            numel = struct.unpack("<q" if little else ">q", raw)[0]
            start = position + 8
            end = start + numel * storages[key].itemsize
            if numel < 0 or end > size:
                raise CheckpointReadError(f"{path}: truncated: storage {key} ends at byte {end} but the file "
                                          f"has {size}")
            located[key] = (start, numel)
            position = end
    missing = sorted(set(storages) - set(located))
    if missing:
        raise CheckpointReadError(f"{path}: truncated or corrupt: storages {missing[:5]} have no data")

    def make(spec: _TensorSpec) -> LazyTensor:
        start, numel = located[spec.storage.key]
        _check_extent(path, spec, numel)
        dtype = spec.storage.dtype
        offset = spec.storage.element_offset + spec.offset
        return LazyTensor(path, dtype, spec.shape,
                          _memmap_reader(path, _file_dtype(dtype, little), start + offset * dtype.itemsize,
                                         spec.shape, spec.stride))
    return _resolve(tree, make)


def load_torch_file(path: str) -> Any:
    """The object a `torch.save` file holds, with `LazyTensor`s in place of tensors (see the module doc).

    Raises `UnsafeCheckpointError` for pickles that import anything beyond tensors and plain containers and
    `CheckpointReadError` for missing, truncated or corrupt files; both are one line naming `path`.
    """
    path = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointReadError(f"{path}: cannot be read ({e.strerror or e})") from None
    if head.startswith(b"PK\x03\x04"):
        return _read_zip(path)
    if head[:1] == b"\x80":            # pickle PROTO: the legacy format's first pickle (the magic number)
        return _read_legacy(path)
    if not head:
        raise CheckpointReadError(f"{path}: empty file")
    raise CheckpointReadError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip nor a legacy pickle)")


def state_dict_in(obj: Any, path: str) -> Dict[str, LazyTensor]:
    """The state dict inside a loaded checkpoint: `obj["model"]` (openai/jukebox saves), `obj["state_dict"]`,
    or `obj` itself when it maps names to tensors (HF `pytorch_model.bin`)."""
    if isinstance(obj, dict):
        for name in ("model", "state_dict"):
            inner = obj.get(name)
            if isinstance(inner, dict) and inner and all(isinstance(v, LazyTensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(k, str) and isinstance(v, LazyTensor) for k, v in obj.items()):
            return dict(obj)
        keys = ", ".join(sorted(str(k) for k in obj)[:10])
        raise CheckpointReadError(f"{path}: holds no state dict (top-level keys: {keys or 'none'}; expected "
                                  f"'model' mapping names to tensors)")
    raise CheckpointReadError(f"{path}: holds a {type(obj).__name__}, not a state dict")


# ------------------------------------------------------------------------------------------------------------
# safetensors and HF folders


def open_safetensors(path: str) -> Dict[str, LazyTensor]:
    """Name -> LazyTensor for one .safetensors file (read with `safe_open`, one tensor per read)."""
    from safetensors import SafetensorError, safe_open

    path = str(path)
    try:
        with safe_open(path, framework="numpy") as f:
            info = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointReadError(f"{path}: not a readable safetensors file ({_one_line(e)})") from None

    def reader(key: str, kind: str) -> Callable[[], np.ndarray]:
        def read() -> np.ndarray:
            try:
                if kind == "BF16":      # numpy has no bfloat16: safetensors' flax reader yields ml_dtypes arrays
                    with safe_open(path, framework="flax") as f:
                        return np.asarray(f.get_tensor(key))
                with safe_open(path, framework="numpy") as f:
                    return f.get_tensor(key)
            except (SafetensorError, OSError, ValueError) as e:
                raise CheckpointReadError(f"{path}: cannot read {key} ({_one_line(e)})") from None
        return read

    out = {}
    for key, (kind, shape) in info.items():
        if kind not in _SAFETENSORS_DTYPES:
            raise CheckpointReadError(f"{path}: tensor {key} has unsupported dtype {kind}")
        out[key] = LazyTensor(path, np.dtype(_SAFETENSORS_DTYPES[kind]), shape, reader(key, kind))
    return out


HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


def find_hf_weights(path: str) -> Tuple[pathlib.Path, pathlib.Path]:
    """(weights file or index, config.json) of an HF model folder, or of a weights file with config.json beside."""
    p = pathlib.Path(path)
    if p.is_dir():
        for name in HF_WEIGHT_FILES:
            if (p / name).is_file():
                return p / name, p / "config.json"
        raise CheckpointReadError(f"{p}: no HF weights here (looked for {', '.join(HF_WEIGHT_FILES)})")
    if not p.is_file():
        raise CheckpointReadError(f"{p}: no such file or directory")
    return p, p.absolute().parent / "config.json"


def open_hf_weights(path: pathlib.Path) -> Tuple[Dict[str, LazyTensor], List[pathlib.Path]]:
    """(name -> LazyTensor, files read) for an HF weights file: `.safetensors`, a torch `.bin`, or a sharded
    `*.index.json` naming one of those per tensor."""
    path = pathlib.Path(path)
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not a mapping")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointReadError(f"{path}: not a sharded-weights index ({_one_line(e)})") from None
        shards = sorted(set(weight_map.values()))
        tensors: Dict[str, LazyTensor] = {}
        for shard in shards:
            shard_tensors, _ = open_hf_weights(path.parent / shard)
            for key, value in shard_tensors.items():
                if weight_map.get(key) != shard:
                    raise CheckpointReadError(f"{path.parent / shard}: holds {key}, which the index puts in "
                                              f"{weight_map.get(key)}")
                tensors[key] = value
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointReadError(f"{path}: {len(missing)} indexed tensor(s) missing from the shards, e.g. "
                                      f"{missing[0]}")
        return tensors, [path] + [path.parent / s for s in shards]
    if path.suffix == ".safetensors":
        return open_safetensors(str(path)), [path]
    return state_dict_in(load_torch_file(str(path)), str(path)), [path]


def sha256(path: pathlib.Path, chunk: int = 1 << 24) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
