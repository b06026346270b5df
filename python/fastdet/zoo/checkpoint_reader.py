"""Official checkpoints (torch.save archives) read without running their code, and without
allocating more than the variant they are loaded into could need.

torch.save writes a zip archive: <prefix>/data.pkl pickles the object and each storage is the
member <prefix>/data/<key>, stored uncompressed. pickle.load, or torch.load(weights_only=False),
would import and call whatever the pickle names; torch.load(weights_only=True) refuses that but
still builds every storage and tensor before a caller can look at them, so a 1.6 kB file holding
`torch.zeros(1).expand(500_000_000, 1, 1, 1)` reaches the loader as a 2 GB tensor that the first
conversion materialises. Here a restricted unpickler rebuilds only tensors, containers and what a
loader adds (RestrictedUnpickler.find_extra), and every size is checked against CheckpointLimits,
taken from the variant's own state dict, before anything is allocated:

- a member is read only up to its declared size, and that size is checked first (against the
  limits and, for an uncompressed member, against the file), so a zip bomb stops before it
  starts; a member that inflates beyond its declared size fails zipfile's CRC check;
- data.pkl may hold at most max_pickle_bytes (a pickle builds at most about a hundred bytes of
  objects per byte);
- each tensor: a known storage type, at most max_ndim dimensions and max_numel elements (what
  the whole variant holds), non-negative integer geometry inside its storage, and no element
  stored twice (a stride-0 `expand` turns a few stored bytes into any number of elements);
- all tensors together declare at most max_bytes, and all storages read hold at most max_bytes,
  so views sharing one storage cannot multiply it either; a storage is read only when a checked
  tensor needs it;
- tuples nest at most MAX_TUPLE_NESTING deep (hashing a deeper one, as a dict key, overflows the
  C stack); a dict key is pickled once; items go only into lists, dicts and sets.
"""

from __future__ import annotations

import collections
import importlib
import io
import math
import os
import pickle
import re
import reprlib
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

# What a checkpoint may hold beyond the variant's fp32 state: 'model' and 'ema' in fp16 (together
# 1x), an optimizer's fp32 state (SGD momentum 1x, Adam 2x), the training form's BatchNorm and
# branch tensors.
BYTES_MULTIPLE = 4
# data.pkl of an official checkpoint takes a few hundred bytes per tensor (a module record with its
# hook dicts); 16 KiB per tensor of the variant leaves a wide margin.
PICKLE_BYTES_BASE = 1 << 20
PICKLE_BYTES_PER_TENSOR = 16 << 10
MAX_TUPLE_NESTING = 100
_CHUNK = 1 << 20

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in set(_STORAGE_DTYPES.values())} | {
    "half": torch.float16,
    "float": torch.float32,
    "double": torch.float64,
    "long": torch.int64,
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
# A legacy (torch < 1.6) file starts with a pickled magic number: PROTO 2, LONG1 of 10 bytes.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a"


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint (unreadable, corrupt, foreign or refused)."""


class Refused(Exception):
    """Raised inside the unpickler for content it will not build; the text completes
    "<function>: '<path>' was refused: "."""


def checkpoint_error(function: str, path: str | os.PathLike[str], what: str) -> CheckpointError:
    return CheckpointError(f"{function}: {os.fspath(path)!r} {what}")


def brief(obj: Any) -> str:
    """A short repr of something read from a file (bounded length and depth)."""
    return reprlib.repr(obj)


@dataclass(frozen=True)
class CheckpointLimits:
    """What a checkpoint for one variant may declare: no tensor with more elements than the
    whole variant (one no checkpoint of it can hold, in any layout; a neighbouring variant's
    checkpoint still reaches the loader's key-by-key check, which names what differs) or more
    dimensions than its tensors have, BYTES_MULTIPLE x its fp32 state for all tensors together
    (and for all storages), a data.pkl size proportional to its number of tensors."""

    model: str
    max_numel: int
    max_ndim: int
    max_bytes: int
    max_pickle_bytes: int

    @classmethod
    def of(cls, name: str, model: torch.nn.Module) -> CheckpointLimits:
        """The limits for the variant `name` built as `model` (the meta device will do)."""
        tensors = list(model.state_dict().values())
        if not tensors:
            raise ValueError(f"CheckpointLimits.of: model {name!r} holds no tensors")
        return cls(
            model=name,
            max_numel=sum(t.numel() for t in tensors),
            max_ndim=max(t.dim() for t in tensors),
            max_bytes=BYTES_MULTIPLE * 4 * sum(t.numel() for t in tensors),
            max_pickle_bytes=PICKLE_BYTES_BASE + PICKLE_BYTES_PER_TENSOR * len(tensors),
        )


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by the pickle: checked against its member, read only when a tensor needs
    it."""

    key: str
    dtype: torch.dtype
    numel: int
    member: zipfile.ZipInfo


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol 2 pickles bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding != "latin1":
        raise Refused(f"it calls _codecs.encode with {brief(encoding)}")
    return text.encode("latin1")


def _ordered_dict(*args: Any) -> collections.OrderedDict[Any, Any]:
    # OrderedDict.__reduce__ pickles (OrderedDict, ()) and then its items; older pickles pass the
    # items as one list of pairs.
    out: collections.OrderedDict[Any, Any] = collections.OrderedDict()
    if len(args) > 1 or (args and not isinstance(args[0], (list, tuple))):
        raise pickle.UnpicklingError("a malformed OrderedDict")
    for pair in args[0] if args else ():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise pickle.UnpicklingError("a malformed OrderedDict")
        _set_item(out, pair[0], pair[1])
    return out


class _OrderedDict:
    """Stands for collections.OrderedDict: calling it builds a plain one, refusing a key given
    twice."""

    def __new__(cls, *args: Any) -> collections.OrderedDict[Any, Any]:  # type: ignore[misc]
        return _ordered_dict(*args)


def _set_item(target: Any, key: Any, value: Any) -> None:
    if type(target) not in (dict, collections.OrderedDict):
        raise Refused(f"it sets items of a {type(target).__name__}")
    if key in target:
        raise Refused(f"it pickles the key {brief(key)} twice in one dict")
    target[key] = value


# numpy: training checkpoints pickle best_fitness as an array (YOLOv7 train.py). Only the forms
# numpy's own __reduce__ writes are rebuilt: no object dtypes, no arrays of a declared size
# (numpy 1 pickles name numpy.core.multiarray, numpy 2 numpy._core.multiarray).
class _NdarrayClass:
    """Stands for numpy.ndarray: an argument of _reconstruct, never called (numpy.ndarray((n,))
    would allocate n elements)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise Refused("it calls numpy.ndarray directly (numpy pickles arrays through _reconstruct)")


_NDARRAY = _NdarrayClass()
_NUMPY_DTYPE = re.compile(r"[<>|=]?(?:[biuf][1248]|f16|b1|\?)")


def _numpy_multiarray() -> Any:
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1
        return importlib.import_module("numpy.core.multiarray")


_MULTIARRAY = _numpy_multiarray()


def _np_reconstruct(cls: Any, shape: Any, typecode: Any) -> Any:
    if cls is not _NDARRAY or shape != (0,) or typecode != b"b":
        raise Refused("it calls numpy's _reconstruct with arguments numpy does not write")
    return _MULTIARRAY._reconstruct(np.ndarray, (0,), b"b")


def _np_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype[Any]:
    if not isinstance(spec, str) or not _NUMPY_DTYPE.fullmatch(spec):
        raise Refused(f"it pickles a numpy dtype {brief(spec)} (only numeric dtypes are read)")
    return np.dtype(spec, False, True)  # a copy: BUILD then sets its state, not the shared one's


def _np_scalar(dtype: Any, data: Any) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise Refused("it pickles a numpy scalar that is not a number")
    if len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar of the wrong size")
    return _MULTIARRAY.scalar(dtype, data)


def _build_numpy(inst: Any, state: Any) -> bool:
    if isinstance(inst, np.dtype):  # numpy 2: an instance of a subclass (Float64DType)
        # (version, byte order, subdtype, names, fields, elsize, alignment, flags) of a plain
        # numeric dtype.
        if not (
            isinstance(state, tuple)
            and len(state) == 8
            and state[1] in ("<", ">", "|", "=")
            and state[2:] == (None, None, None, -1, -1, 0)
        ):
            raise Refused("it sets a numpy dtype's state to one numpy does not write")
        inst.__setstate__(state)  # type: ignore[attr-defined]
        return True
    if type(inst) is np.ndarray:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("a malformed numpy array")
        _, shape, dtype, _, data = state
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
            raise Refused("it pickles a numpy array that is not numeric")
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise pickle.UnpicklingError("a numpy array of a malformed shape")
        if math.prod(shape) * dtype.itemsize != len(data):
            raise pickle.UnpicklingError("a numpy array whose data does not match its shape")
        inst.__setstate__(state)
        return True
    return False


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _np_dtype,
}
for _home in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _SAFE_GLOBALS[(_home, "_reconstruct")] = _np_reconstruct
    _SAFE_GLOBALS[(_home, "scalar")] = _np_scalar
_TENSOR_HOOKS = {
    ("torch._utils", "_rebuild_tensor"): "_rebuild_tensor",
    ("torch._utils", "_rebuild_tensor_v2"): "_rebuild_tensor",
    ("torch._utils", "_rebuild_parameter"): "_rebuild_parameter",
    ("torch._utils", "_rebuild_parameter_with_state"): "_rebuild_parameter",
}


def _geometry(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(type(v) is int for v in values):
        raise pickle.UnpicklingError(f"a tensor {what} that is not a tuple of integers")
    return tuple(values)


def _overlaps_itself(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether two elements of a non-empty tensor share storage: taken by increasing stride,
    each dimension must step past everything the smaller ones reach."""
    reach = 0
    for step, n in sorted((s, n) for n, s in zip(size, stride, strict=True) if n > 1):
        if step <= reach:
            return True
        reach += step * (n - 1)
    return False


def _tupled(load: Callable[[Any], None]) -> Callable[[Any], None]:
    def load_and_check(self: RestrictedUnpickler) -> None:
        load(self)
        self._check_tuple(self.stack[-1])  # type: ignore[attr-defined]

    return load_and_check


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python one lets every opcode be checked
    """Rebuilds tensors (within the limits), containers and plain values; refuses the rest.

    A loader that needs more (YOLOv7's records of module state) overrides find_extra and
    build_extra, and says what it allows in ALLOWED.
    """

    ALLOWED: ClassVar[str] = "tensors, their storages, containers and numbers"
    dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(pickle._Unpickler.dispatch)

    def __init__(
        self,
        data: bytes,
        archive: zipfile.ZipFile,
        prefix: str,
        limits: CheckpointLimits,
        file_size: int,
    ) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._limits = limits
        self._file_size = file_size
        self._storages: dict[str, _StorageRef] = {}
        self._read: dict[str, torch.Tensor] = {}
        self._storage_bytes = 0
        self._tensor_bytes = 0
        self._tuple_depth: dict[int, tuple[tuple[Any, ...], int]] = {}

    # --- globals ---------------------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        hook = _TENSOR_HOOKS.get((module, name))
        if hook is not None:
            return getattr(self, hook)
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch.storage" and name == "UntypedStorage":
            return _StorageType(torch.uint8)
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        extra = self.find_extra(module, name)
        if extra is not None:
            return extra
        raise Refused(f"it names '{module}.{name}' (a checkpoint may only hold {self.ALLOWED})")

    def find_extra(self, module: str, name: str) -> Any:
        """A loader's own globals (None: refused)."""
        return None

    def build_extra(self, inst: Any, state: Any) -> bool:
        """Sets the state of a loader's own object; False when inst is not one."""
        return False

    # --- tensors ---------------------------------------------------------------------------

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"an unknown persistent id (a {type(pid).__name__})")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError("a malformed storage reference")
        if not isinstance(key, str) or not key.isalnum() or len(key) > 64:
            raise pickle.UnpicklingError(f"a malformed storage key {brief(key)}")
        ref = self._storages.get(key)
        if ref is not None:
            if (ref.dtype, ref.numel) != (kind.dtype, numel):
                raise Refused(f"it reads storage {key} as two different types or sizes")
            return ref
        name = f"{self._prefix}/data/{key}"
        try:
            member = self._archive.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"storage {name} is missing") from None
        itemsize = _itemsize(kind.dtype)
        if member.file_size != numel * itemsize:
            raise pickle.UnpicklingError(
                f"storage {name} holds {member.file_size} bytes, its reference declares "
                f"{numel} x {itemsize}"
            )
        _check_member(member, self._file_size)
        ref = _StorageRef(key, kind.dtype, numel, member)
        self._storages[key] = ref
        return ref

    def _rebuild_tensor(
        self, storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any
    ) -> torch.Tensor:
        if not isinstance(storage, _StorageRef):
            raise pickle.UnpicklingError("a tensor without a storage")
        size, stride = _geometry(size, "shape"), _geometry(stride, "stride")
        if type(offset) is not int or len(size) != len(stride):
            raise pickle.UnpicklingError("a tensor of malformed geometry")
        limits, dtype = self._limits, str(storage.dtype).removeprefix("torch.")
        shape = f"a {dtype} tensor of shape {list(size)}"
        if len(size) > limits.max_ndim:
            raise Refused(
                f"it declares {shape}: {len(size)} dimensions, {limits.model} tensors have at "
                f"most {limits.max_ndim}"
            )
        if min((offset, *size, *stride)) < 0:
            raise Refused(f"it declares {shape} with strides {list(stride)}, offset {offset}")
        numel = math.prod(size)
        if numel > limits.max_numel:
            raise Refused(
                f"it declares {shape} ({numel} elements): more than the whole {limits.model} "
                f"holds ({limits.max_numel})"
            )
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if last >= storage.numel:
                raise Refused(
                    f"it declares {shape} with strides {list(stride)}, offset {offset}: element "
                    f"{last} of a storage of {storage.numel}"
                )
            if _overlaps_itself(size, stride):
                raise Refused(
                    f"it declares {shape} with strides {list(stride)}, which stores some "
                    "elements in the same place (a checkpoint's tensors hold each element once)"
                )
        elif offset > storage.numel:
            raise Refused(f"it declares {shape} at offset {offset} of a storage of {storage.numel}")
        self._tensor_bytes += numel * _itemsize(storage.dtype)
        if self._tensor_bytes > limits.max_bytes:
            raise Refused(
                f"its tensors declare more than {limits.max_bytes} bytes ({BYTES_MULTIPLE} x "
                f"{limits.model}'s float32 state)"
            )
        return self._storage(storage).as_strided(size, stride, offset)

    def _rebuild_parameter(self, data: Any, *_rest: Any) -> torch.Tensor:
        if not isinstance(data, torch.Tensor):
            raise pickle.UnpicklingError("a parameter without a tensor")
        return data

    def _storage(self, ref: _StorageRef) -> torch.Tensor:
        flat = self._read.get(ref.key)
        if flat is None:
            self._storage_bytes += ref.member.file_size
            if self._storage_bytes > self._limits.max_bytes:
                raise Refused(
                    f"its storages hold more than {self._limits.max_bytes} bytes "
                    f"({BYTES_MULTIPLE} x {self._limits.model}'s float32 state)"
                )
            flat = _read_member_into_tensor(self._archive, ref.member).view(ref.dtype)
            self._read[ref.key] = flat
        return flat

    # --- containers ------------------------------------------------------------------------

    def _check_tuple(self, value: tuple[Any, ...]) -> None:
        children = (self._tuple_depth.get(id(c), (c, 1))[1] for c in value if type(c) is tuple)
        depth = 1 + max(children, default=0)
        if depth > MAX_TUPLE_NESTING:
            raise Refused(f"it nests tuples more than {MAX_TUPLE_NESTING} deep")
        self._tuple_depth[id(value)] = (value, depth)  # keeps value alive: its id stays its own

    def _load_setitem(self) -> None:
        stack: list[Any] = self.stack  # type: ignore[attr-defined]
        value = stack.pop()
        key = stack.pop()
        _set_item(stack[-1], key, value)

    def _load_setitems(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        target = self.stack[-1]  # type: ignore[attr-defined]
        if len(items) % 2:
            raise pickle.UnpicklingError("SETITEMS with an odd number of items")
        for i in range(0, len(items), 2):
            _set_item(target, items[i], items[i + 1])

    def _load_dict(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        out: dict[Any, Any] = {}
        if len(items) % 2:
            raise pickle.UnpicklingError("DICT with an odd number of items")
        for i in range(0, len(items), 2):
            _set_item(out, items[i], items[i + 1])
        self.append(out)  # type: ignore[attr-defined]

    def _load_append(self) -> None:
        stack: list[Any] = self.stack  # type: ignore[attr-defined]
        value = stack.pop()
        if type(stack[-1]) is not list:
            raise Refused(f"it appends to a {type(stack[-1]).__name__}")
        stack[-1].append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        target = self.stack[-1]  # type: ignore[attr-defined]
        if type(target) is not list:
            raise Refused(f"it appends to a {type(target).__name__}")
        target.extend(items)

    def _load_additems(self) -> None:
        items = self.pop_mark()  # type: ignore[attr-defined]
        target = self.stack[-1]  # type: ignore[attr-defined]
        if type(target) is not set:
            raise Refused(f"it adds set items to a {type(target).__name__}")
        target.update(items)

    def _load_build(self) -> None:
        stack: list[Any] = self.stack  # type: ignore[attr-defined]
        state = stack.pop()
        inst = stack[-1]
        if self.build_extra(inst, state) or _build_numpy(inst, state):
            return
        if type(inst) is collections.OrderedDict and isinstance(state, dict):
            inst.__dict__.update({str(k): v for k, v in state.items()})  # state_dict _metadata
            return
        raise Refused(f"it sets the state of a {type(inst).__name__}")

    for _op in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3):
        dispatch[_op[0]] = _tupled(pickle._Unpickler.dispatch[_op[0]])
    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.DICT[0]] = _load_dict
    dispatch[pickle.APPEND[0]] = _load_append
    dispatch[pickle.APPENDS[0]] = _load_appends
    dispatch[pickle.ADDITEMS[0]] = _load_additems
    dispatch[pickle.BUILD[0]] = _load_build
    del _op


def _check_member(member: zipfile.ZipInfo, file_size: int) -> None:
    """A member's declared sizes: an uncompressed one must fit in the file (its declared size is
    what is allocated before reading)."""
    if member.compress_size > file_size:
        raise pickle.UnpicklingError(
            f"member {member.filename} declares {member.compress_size} bytes, the whole file has "
            f"{file_size}"
        )
    if member.compress_type == zipfile.ZIP_STORED and member.compress_size != member.file_size:
        raise pickle.UnpicklingError(f"member {member.filename} declares two sizes")


def _read_member_into_tensor(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> torch.Tensor:
    """The member's bytes, read in chunks straight into one uint8 tensor (zipfile stops at the
    declared size and checks the CRC there)."""
    out = torch.empty(member.file_size, dtype=torch.uint8)
    target = out.numpy()
    done = 0
    with archive.open(member) as source:
        while done < member.file_size:
            chunk = source.read(min(_CHUNK, member.file_size - done))
            if not chunk:
                raise zipfile.BadZipFile(f"member {member.filename} is shorter than it declares")
            target[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            done += len(chunk)
        source.read(1)  # reaching the end checks the CRC
    return out


@dataclass(frozen=True)
class CheckpointArchive:
    """A torch.save archive whose layout has been checked; load() unpickles it within a
    variant's limits."""

    path: str
    function: str  # the public function messages start with
    expected: str  # what a good file is, for messages

    def load(
        self, limits: CheckpointLimits, unpickler: type[RestrictedUnpickler] = RestrictedUnpickler
    ) -> Any:
        """The unpickled object: tensors in fp16/fp32/... as stored, on the CPU."""
        with open(self.path, "rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            archive, prefix = _open_zip(file, self.path, self.function, self.expected)
            with archive:
                try:
                    pkl = archive.getinfo(f"{prefix}/data.pkl")
                    if pkl.file_size > limits.max_pickle_bytes:
                        raise Refused(
                            f"its data.pkl declares {pkl.file_size} bytes: a {limits.model} "
                            f"checkpoint needs at most {limits.max_pickle_bytes}"
                        )
                    _check_member(pkl, file_size)
                    data = archive.read(pkl)
                    return unpickler(data, archive, prefix, limits, file_size).load()
                except Refused as refused:
                    raise self._error(f"was refused: {refused}") from None
                except CheckpointError:
                    raise
                except _CORRUPT as error:
                    raise self._error(
                        f"could not be read: truncated or corrupt ({_short(error)})"
                    ) from None

    def _error(self, what: str) -> CheckpointError:
        return checkpoint_error(self.function, self.path, what)


_CORRUPT = (
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    EOFError,
    struct.error,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    RuntimeError,  # RecursionError included
    OverflowError,
    OSError,
)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _open_zip(
    file: io.BufferedReader, path: str, function: str, expected: str
) -> tuple[zipfile.ZipFile, str]:
    def error(what: str) -> CheckpointError:
        return checkpoint_error(function, path, what)

    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error):
        file.seek(0)
        if file.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC:
            raise error(
                "could not be read: it is in the legacy (torch < 1.6) format; re-save it with a "
                "newer torch"
            ) from None
        raise error(
            f"could not be read: not a zip archive (truncated, corrupt or foreign); expected "
            f"{expected}"
        ) from None
    names = archive.namelist()
    try:
        if len(set(names)) != len(names):
            twice = sorted(n for n, count in collections.Counter(names).items() if count > 1)[:3]
            raise error(f"was refused: its archive holds members named twice ({', '.join(twice)})")
        pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if len(pickles) != 1:
            raise error(
                f"could not be read: it has {len(pickles)} data.pkl entries; expected {expected}"
            )
        prefix = pickles[0].split("/")[0]
        order = f"{prefix}/byteorder"
        if order in names:
            member = archive.getinfo(order)
            if member.file_size > 16 or archive.read(member).strip() not in (b"little", b""):
                raise error("was written on a big-endian machine, which is not supported")
    except CheckpointError:
        archive.close()
        raise
    except _CORRUPT as corrupt:
        archive.close()
        raise error(f"could not be read: truncated or corrupt ({_short(corrupt)})") from None
    return archive, prefix


def open_checkpoint(
    path: str | os.PathLike[str], function: str, expected: str
) -> CheckpointArchive:
    """Checks that path is a torch.save archive, without unpickling it.

    FileNotFoundError when there is no such file; CheckpointError (a ValueError) naming
    `function` and the file when it is a directory, not a zip archive, a legacy (torch < 1.6)
    file, or an archive without exactly one data.pkl.
    """
    where = os.fspath(path)
    if not os.path.exists(where):
        raise FileNotFoundError(f"{function}: path must be an existing file, got {where!r}")
    if os.path.isdir(where):
        raise checkpoint_error(function, where, f"is a directory; expected {expected}")
    with open(where, "rb") as file:
        archive, _ = _open_zip(file, where, function, expected)
        archive.close()
    return CheckpointArchive(where, function, expected)


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold NaN or inf."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def refuse_non_finite(
    tensors: Mapping[str, torch.Tensor], function: str, path: str | os.PathLike[str], when: str = ""
) -> None:
    """CheckpointError naming the tensors that hold NaN or inf (`when` says at which stage)."""
    bad = non_finite(tensors)
    if bad:
        shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise checkpoint_error(
            function,
            path,
            f"holds non-finite values (NaN or inf) in {shown}{when}; expected finite weights",
        )


__all__ = [
    "BYTES_MULTIPLE",
    "MAX_TUPLE_NESTING",
    "CheckpointArchive",
    "CheckpointError",
    "CheckpointLimits",
    "Refused",
    "RestrictedUnpickler",
    "brief",
    "checkpoint_error",
    "non_finite",
    "open_checkpoint",
    "refuse_non_finite",
]
