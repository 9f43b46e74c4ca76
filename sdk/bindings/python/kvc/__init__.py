"""kvc: GPT-NeoX (Pythia) inference with KV-cache eviction, from Python.

A ctypes binding of libkvc's C ABI (kvc/kvc.h). ``pip install .`` from the kvc repository
builds a wheel that carries libkvc and the bundled policies, so nothing else is needed::

    import kvc
    with kvc.Model("models/kjv-mini") as model:
        ids = model.tokenizer.encode("In the beginning God created the heaven and the earth.")
        with model.session("streaming", {"start_size": 4, "recent_size": 252}) as session:
            nll = session.score(ids)       # n-1 NLLs in nats; the session now holds the text
        print(kvc.perplexity(nll))

Token ids are a 1-D sequence of ints or a 1-D numpy integer array; results are lists, or numpy
arrays with ``numpy=True`` (numpy is optional). Failures raise a subclass of :class:`KvcError`
that also derives from the matching built-in (``FileNotFoundError``, ``ValueError``,
``LookupError``, ...); wrong argument types and shapes raise ``TypeError``/``ValueError``
before the library is called. See docs/bindings.md for every call.
"""

from __future__ import annotations

import ctypes
import json
import math
import numbers
import os
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _lib
from ._errors import (  # noqa: F401  (re-exported)
    BackendError,
    BufferTooSmallError,
    FileError,
    FormatError,
    InternalError,
    InvalidArgumentError,
    KvcError,
    NotFoundError,
    OutOfMemoryError,
    OutOfRangeError,
    PathNotFoundError,
    PolicyError,
    Status,
    UnsupportedError,
    ERROR_CLASSES as _ERROR_CLASSES,
)

__all__ = [
    # errors
    "Status", "KvcError", "InvalidArgumentError", "FileError", "PathNotFoundError",
    "FormatError", "UnsupportedError", "NotFoundError", "OutOfRangeError",
    "BufferTooSmallError", "PolicyError", "BackendError", "OutOfMemoryError", "InternalError",
    # objects
    "Tokenizer", "Model", "ModelInfo", "Session", "CacheStats", "ScoreReport", "ScoreResult",
    "PolicyParams", "PolicyInfo", "ParamInfo",
    # functions
    "list_policies", "check_policy", "perplexity", "version", "abi_version", "library_path",
    "DEFAULT_BLOCK_SIZE",
]

_C = _lib.load()

# A token-id argument: a 1-D sequence of ints, or a 1-D numpy integer array.
TokenIds = Union[Sequence[int], Any]
# A float result: a list, or a numpy float32 array with numpy=True.
Floats = Union[List[float], Any]

DEFAULT_BLOCK_SIZE = 64  # KVC_DEFAULT_BLOCK_SIZE: what block_size=0 means for score()

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def _check(status: int, call: str, path: Optional[str] = None) -> None:
    """Raises the exception of a failed call. The message is per thread and is read right after
    the call, on the same thread (ctypes runs the call on the calling thread)."""
    if status == 0:
        return
    message = _C.kvc_last_error().decode("utf-8", "replace")
    cls = _ERROR_CLASSES.get(status, KvcError)
    if status == Status.IO and path is not None and not os.path.exists(path):
        cls = PathNotFoundError
    name = _C.kvc_status_name(int(status)).decode()
    raise cls(status, message, call, name)


def version() -> str:
    """The library's version, e.g. ``"0.2.0"``."""
    return _C.kvc_version_string().decode()


def abi_version() -> Tuple[int, int]:
    """``(major, minor)`` of the loaded library's C ABI."""
    v = _C.kvc_abi_version()
    return (v >> 16, v & 0xFFFF)


def library_path() -> str:
    """The libkvc file this module loaded: the copy inside the package after ``pip install``,
    else ``KVC_LIBRARY``, ``KVC_LIB_DIR`` or the system's (see docs/bindings.md)."""
    return str(_lib.path)


__version__ = version()


def perplexity(nll: Iterable[float]) -> float:
    """``exp(mean(nll))``: the perplexity of NLLs returned by :meth:`Session.score`."""
    values = [float(x) for x in nll]
    if not values:
        raise ValueError("kvc.perplexity: no NLLs (a text of one token has none)")
    return math.exp(math.fsum(values) / len(values))


def _numpy():
    try:
        import numpy
        return numpy
    except ImportError:
        raise ImportError("kvc: numpy arrays need numpy installed (pip install numpy)") from None


def _is_array(x) -> bool:
    return hasattr(x, "__array_interface__") or hasattr(x, "__array__")


def _ids(ids: TokenIds, what: str = "ids"):
    """Token ids as a C int32 array: (pointer, count, object keeping the memory alive).

    Accepts a 1-D sequence of ints or a 1-D numpy integer array; anything else is a TypeError
    (floats, bools, strings) or a ValueError (another number of dimensions, ids outside
    int32), so a batch is never flattened and 1.9 never becomes 1."""
    if isinstance(ids, (str, bytes, bytearray)):
        raise TypeError("kvc: %s must be token ids, got %s (encode text with Tokenizer.encode)"
                        % (what, type(ids).__name__))
    if _is_array(ids):
        np = _numpy()
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError("kvc: %s must be a 1-D array of token ids, got shape %s (score "
                             "each sequence on its own session)" % (what, tuple(arr.shape)))
        if arr.dtype.kind not in "iu":
            raise TypeError("kvc: %s must have an integer dtype, got %s" % (what, arr.dtype))
        if arr.size and (int(arr.min()) < _INT32_MIN or int(arr.max()) > _INT32_MAX):
            raise ValueError("kvc: %s holds values outside int32" % what)
        arr = np.ascontiguousarray(arr, dtype=np.int32)
        return arr.ctypes.data_as(_lib._I32P), int(arr.size), arr
    if isinstance(ids, numbers.Number):
        raise TypeError("kvc: %s must be a sequence of token ids, got one %s"
                        % (what, type(ids).__name__))
    try:
        seq = list(ids)
    except TypeError:
        raise TypeError("kvc: %s must be a sequence of token ids, got %s"
                        % (what, type(ids).__name__)) from None
    values = []
    for k, x in enumerate(seq):
        if isinstance(x, numbers.Integral) and not isinstance(x, bool):
            v = int(x)
            if v < _INT32_MIN or v > _INT32_MAX:
                raise ValueError("kvc: %s[%d] = %d is outside int32" % (what, k, v))
            values.append(v)
        elif isinstance(x, (list, tuple)) or _is_array(x):
            raise ValueError("kvc: %s must be a flat sequence of token ids; %s[%d] is a %s (a "
                             "2-D batch? score each sequence on its own session)"
                             % (what, what, k, type(x).__name__))
        else:
            raise TypeError("kvc: %s[%d] must be an int, got %r (%s)"
                            % (what, k, x, type(x).__name__))
    arr = (ctypes.c_int32 * max(len(values), 1))(*values)
    return ctypes.cast(arr, _lib._I32P), len(values), arr


def _floats(buf, n: int, numpy: bool) -> Floats:
    if numpy:
        np = _numpy()
        return np.ctypeslib.as_array(buf)[:n].copy()
    return list(buf[:n])


def _rows(buf, rows: int, cols: int, numpy: bool):
    """A row-major C float buffer as an (rows, cols) array or a list of rows."""
    if numpy:
        np = _numpy()
        return np.ctypeslib.as_array(buf)[: rows * cols].reshape(rows, cols).copy()
    return [list(buf[r * cols:(r + 1) * cols]) for r in range(rows)]


def _text(b: Optional[bytes]) -> Optional[str]:
    return b.decode("utf-8", "replace") if b is not None else None


def _bytes(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else os.fsencode(s) if isinstance(s, os.PathLike) else \
        str(s).encode("utf-8")


def _sized_text(fn, call: str, *args) -> str:
    """Runs a call with the buffer protocol of kvc_detokenize: sizing call, then the real one."""
    n = ctypes.c_size_t()
    st = fn(*args, None, 0, ctypes.byref(n))
    if st not in (Status.OK, Status.BUFFER_TOO_SMALL):
        _check(st, call)
    buf = ctypes.create_string_buffer(n.value + 1)
    _check(fn(*args, buf, len(buf), ctypes.byref(n)), call)
    return buf.raw[: n.value].decode("utf-8", "replace")


class _Closable:
    """Context-manager and finaliser protocol shared by every handle: ``close()`` frees it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---- Tokenizer ----------------------------------------------------------------------------------


class Tokenizer(_Closable):
    """A byte-level BPE tokenizer (Hugging Face tokenizer.json).

    ``Tokenizer(path)`` loads one (close it, or use ``with``); :attr:`Model.tokenizer` is the
    model folder's, owned by the model."""

    def __init__(self, path: Union[str, os.PathLike]):
        self._h = None
        self._owned = True
        self._owner = None
        h = ctypes.c_void_p()
        _check(_C.kvc_tokenizer_load(_bytes(os.fspath(path)), ctypes.byref(h)),
               "kvc_tokenizer_load", os.fspath(path))
        self._h = h

    @classmethod
    def _borrowed(cls, handle: int, owner: "Model") -> "Tokenizer":
        t = cls.__new__(cls)
        t._h = ctypes.c_void_p(handle)
        t._owned = False
        t._owner = owner  # the model owns the tokenizer; keep it alive
        return t

    def _handle(self):
        if not self._h or (self._owner is not None and not self._owner._h):
            raise ValueError("kvc: the tokenizer is closed")
        return self._h

    def close(self) -> None:
        """Frees a loaded tokenizer (a model's tokenizer goes with the model). Idempotent."""
        if self._owned and self._h:
            _C.kvc_tokenizer_free(self._h)
        self._h = None

    @property
    def vocab_size(self) -> int:
        """The number of ids the tokenizer can produce (highest id + 1)."""
        return _C.kvc_tokenizer_vocab_size(self._handle())

    def token_to_id(self, token: str) -> Optional[int]:
        """The id of an exact vocabulary entry (e.g. ``"<|endoftext|>"``), or None."""
        i = _C.kvc_tokenizer_token_to_id(self._handle(), token.encode("utf-8"))
        return None if i < 0 else i

    def encode(self, text: Union[str, bytes], numpy: bool = False):
        """The ids of ``text`` (str, or bytes decoded as UTF-8 with U+FFFD replacement); no
        special tokens are added. A list of ints, or an int32 array with ``numpy=True``."""
        if isinstance(text, str):
            data = text.encode("utf-8")
        elif isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
        else:
            raise TypeError("kvc: encode takes str or bytes, got %s" % type(text).__name__)
        n = ctypes.c_size_t()
        h = self._handle()
        st = _C.kvc_tokenize(h, data, len(data), None, 0, ctypes.byref(n))
        if st not in (Status.OK, Status.BUFFER_TOO_SMALL):
            _check(st, "kvc_tokenize")
        buf = (ctypes.c_int32 * max(n.value, 1))()
        _check(_C.kvc_tokenize(h, data, len(data), buf, n.value, ctypes.byref(n)),
               "kvc_tokenize")
        if numpy:
            return _numpy().ctypeslib.as_array(buf)[: n.value].copy()
        return list(buf[: n.value])

    def decode(self, ids: TokenIds) -> str:
        """The text of ``ids``; byte sequences that are not UTF-8 become U+FFFD."""
        p, count, keep = _ids(ids)
        text = _sized_text(_C.kvc_detokenize, "kvc_detokenize", self._handle(), p, count)
        del keep
        return text


# ---- Model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """``kvc_model_info``: the model's shape and how it was loaded."""

    n_layers: int
    n_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int  # rows of the output matrix (padded, e.g. 50304 for Pythia)
    max_position_embeddings: int
    rotary_ndims: int
    rotary_base: float
    layer_norm_eps: float
    use_parallel_residual: bool
    backend: str  # "cpu" or "cuda", the backend in use
    weight_dtype: str  # "f32", "bf16" or "f16", as stored
    n_threads: int
    weight_bytes: int


_BACKENDS = {"auto": 0, "cpu": 1, "cuda": 2}
_DTYPES = {"auto": 0, "f32": 1, "float32": 1, "bf16": 2, "bfloat16": 2, "f16": 3, "float16": 3}
_DTYPE_NAMES = {0: "auto", 1: "f32", 2: "bf16", 3: "f16"}
_POSITIONS = {"shift": 0, "original": 1}
_LOGITS = {"none": 0, "last": 1, "all": 2}
_SCORE_MODES = {"stream": 0, "prefill": 1}


def _choice(table: Mapping[str, int], value: Union[str, int], what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError("kvc: %s must be one of %s, got %r" % (what, sorted(table), value))
    if isinstance(value, int):
        if value not in table.values():
            raise ValueError("kvc: %s must be one of %s, got %r" % (what, sorted(table), value))
        return value
    try:
        return table[value]
    except KeyError:
        raise ValueError("kvc: %s must be one of %s, got %r"
                         % (what, sorted(table), value)) from None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError("kvc: %s must be an int, got %r" % (what, value))
    return int(value)


class Model(_Closable):
    """A loaded model: a Hugging Face folder (config.json, safetensors, tokenizer.json) or a
    ``"synthetic:pythia-70m"``-style name. Immutable after load; may be shared by threads.
    Closing it closes its open sessions first."""

    def __init__(self, path: Union[str, os.PathLike], backend: str = "auto",
                 dtype: str = "auto", threads: int = 0, device: int = 0, seed: int = 0):
        """``backend``: "auto", "cpu" or "cuda"; ``dtype``: "auto", "f32", "bf16" or "f16"
        (weights are converted while loading); ``threads``: CPU threads, 0 = one per core;
        ``device``: CUDA ordinal; ``seed``: weights of synthetic models."""
        self._h = None
        self._sessions: "weakref.WeakSet[Session]" = weakref.WeakSet()
        opts = _lib.init(_lib.kvc_model_options, _C.kvc_model_options_init_size)
        opts.backend = _choice(_BACKENDS, backend, "backend")
        opts.weight_dtype = _choice(_DTYPES, dtype, "dtype")
        opts.n_threads = _int(threads, "threads")
        opts.device = _int(device, "device")
        opts.seed = _int(seed, "seed")
        path = os.fspath(path)
        h = ctypes.c_void_p()
        _check(_C.kvc_model_load(_bytes(path), ctypes.byref(opts), ctypes.byref(h)),
               "kvc_model_load", None if path.startswith("synthetic:") else path)
        self._h = h
        self.path = path
        self._info: Optional[ModelInfo] = None

    def _handle(self):
        if not self._h:
            raise ValueError("kvc: the model is closed")
        return self._h

    def close(self) -> None:
        """Closes the model's sessions, then frees it. Idempotent."""
        if self._h:
            for s in list(self._sessions):
                s.close()
            _C.kvc_model_free(self._h)
        self._h = None

    @property
    def info(self) -> ModelInfo:
        """The model's shape, backend, weight type and threads."""
        if self._info is None:
            i = _lib.init(_lib.kvc_model_info, _C.kvc_model_info_init_size)
            _check(_C.kvc_model_get_info(self._handle(), ctypes.byref(i)), "kvc_model_get_info")
            self._info = ModelInfo(
                i.n_layers, i.n_heads, i.head_dim, i.hidden_size, i.intermediate_size,
                i.vocab_size, i.max_position_embeddings, i.rotary_ndims, i.rotary_base,
                i.layer_norm_eps, bool(i.use_parallel_residual),
                next((k for k, v in _BACKENDS.items() if v == i.backend), str(i.backend)),
                _DTYPE_NAMES.get(i.weight_dtype, str(i.weight_dtype)), i.n_threads,
                i.weight_bytes)
        return self._info

    @property
    def tokenizer(self) -> Optional[Tokenizer]:
        """The folder's tokenizer.json, or None. Owned by the model."""
        h = _C.kvc_model_tokenizer(self._handle())
        return Tokenizer._borrowed(h, self) if h else None

    def session(self, policy: Union[str, "PolicyParams", None] = None,
                params: Optional[Mapping[str, Any]] = None, positions: str = "shift",
                max_entries: int = 0, policy_path: Optional[str] = None) -> "Session":
        """A new :class:`Session` over this model (see there)."""
        return Session(self, policy, params, positions, max_entries, policy_path)


# ---- Policies -----------------------------------------------------------------------------------

_PARAM_TYPES = ["int", "float", "bool", "choice", "int_list", "string_list"]


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of a policy's schema."""

    name: str
    type: str  # "int", "float", "bool", "choice", "int_list" or "string_list"
    default: Optional[str]  # in the text syntax of kvc_param
    min_value: float
    max_value: float
    choices: Optional[List[str]]
    help: Optional[str]


@dataclass(frozen=True)
class PolicyInfo:
    """A policy plugin: its name, version, description, file and parameters."""

    name: str
    version: str
    description: str
    path: str
    params: List[ParamInfo]


def _policy_info(p) -> PolicyInfo:
    params = []
    for k in range(p.n_params):
        q = p.params[k]
        params.append(ParamInfo(
            _text(q.name) or "",
            _PARAM_TYPES[q.type] if 0 <= q.type < len(_PARAM_TYPES) else str(q.type),
            _text(q.default_value), q.min_value, q.max_value,
            _text(q.choices).split("|") if q.choices else None, _text(q.help)))
    return PolicyInfo(_text(p.name) or "", _text(p.version) or "", _text(p.description) or "",
                      _text(p.path) or "", params)


def list_policies(extra_path: Optional[str] = None) -> List[PolicyInfo]:
    """Every loadable policy on the search path: ``extra_path`` (':'-separated) first, then
    ``KVC_POLICY_PATH``, then the folder of libkvc (the bundled policies)."""
    h = ctypes.c_void_p()
    _check(_C.kvc_policy_list_load(_bytes(extra_path), ctypes.byref(h)), "kvc_policy_list_load")
    try:
        return [_policy_info(_C.kvc_policy_list_get(h, i).contents)
                for i in range(_C.kvc_policy_list_size(h))]
    finally:
        _C.kvc_policy_list_free(h)


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_param_text(v) for v in value)
    return str(value)


def _param_array(params: Optional[Mapping[str, Any]]):
    """kvc_param[] from a mapping; values in the kvc_param text syntax."""
    if params is not None and not isinstance(params, Mapping):
        raise TypeError("kvc: params must be a mapping of name to value, got %s"
                        % type(params).__name__)
    items = list((params or {}).items())
    keep = []
    arr = (_lib.kvc_param * max(len(items), 1))()
    for k, (name, value) in enumerate(items):
        n, v = str(name).encode("utf-8"), _param_text(value).encode("utf-8")
        keep += [n, v]
        arr[k].name, arr[k].value = n, v
    return arr, len(items), keep


def check_policy(name: str, params: Optional[Mapping[str, Any]] = None,
                 extra_path: Optional[str] = None) -> None:
    """Loads a policy by name or path and checks ``params`` against its schema and the
    policy's own checks, without a model. Raises a :class:`KvcError` subclass."""
    arr, n, keep = _param_array(params)
    _check(_C.kvc_policy_check(_bytes(name), _bytes(extra_path), arr, n), "kvc_policy_check")
    del keep


class PolicyParams(_Closable):
    """A policy with typed parameter values (``kvc_policy_params``), for
    :meth:`Model.session`. Each value is checked against the policy's schema when it is set
    (a ``set`` of the same name twice is an error); unset parameters keep their defaults::

        p = kvc.PolicyParams("h2o", {"heavy_size": 64, "recent_size": 192})
        p.set("scope", "shared")
        with model.session(p) as s: ...
    """

    def __init__(self, policy: str, params: Optional[Mapping[str, Any]] = None, *,
                 policy_path: Optional[str] = None):
        self._h = None
        h = ctypes.c_void_p()
        _check(_C.kvc_policy_params_create(_bytes(policy), _bytes(policy_path),
                                           ctypes.byref(h)), "kvc_policy_params_create")
        self._h = h
        self._policy = _policy_info(_C.kvc_policy_params_policy(h).contents)
        self._types = {q.name: q.type for q in self._policy.params}
        if params is not None:
            self.update(params)

    def _handle(self):
        if not self._h:
            raise ValueError("kvc: the policy parameters are closed")
        return self._h

    def close(self) -> None:
        """Frees the handle (a session made from it keeps its own copy). Idempotent."""
        if self._h:
            _C.kvc_policy_params_free(self._h)
        self._h = None

    @property
    def policy(self) -> PolicyInfo:
        """The policy: name, version, description, file and schema."""
        return self._policy

    def set(self, name: str, value: Any) -> None:
        """Sets one parameter with the setter of its schema type: an int for "int", a number for
        "float", a bool for "bool", a str for "choice", a sequence of ints for "int_list", a
        sequence of str for "string_list". A str is also accepted for any type (the kvc_param
        text syntax, e.g. "0,1,2"). Wrong Python types raise TypeError; values the schema
        rejects raise InvalidArgumentError (a ValueError)."""
        h, key, kind = self._handle(), str(name).encode("utf-8"), self._types.get(name)
        call = "kvc_policy_params_set_text"
        if isinstance(value, str) or kind is None:
            st = _C.kvc_policy_params_set_text(h, key, _param_text(value).encode("utf-8"))
        elif kind == "int":
            call = "kvc_policy_params_set_int"
            st = _C.kvc_policy_params_set_int(h, key, _int(value, name))
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError("kvc: %s must be a number, got %r" % (name, value))
            call = "kvc_policy_params_set_float"
            st = _C.kvc_policy_params_set_float(h, key, float(value))
        elif kind == "bool":
            if not isinstance(value, bool):
                raise TypeError("kvc: %s must be a bool, got %r" % (name, value))
            call = "kvc_policy_params_set_bool"
            st = _C.kvc_policy_params_set_bool(h, key, 1 if value else 0)
        elif kind == "int_list":
            p, n, keep = _int64s(value, name)
            call = "kvc_policy_params_set_ints"
            st = _C.kvc_policy_params_set_ints(h, key, p, n)
        elif kind == "string_list":
            if isinstance(value, (str, bytes)) or not all(isinstance(v, str) for v in value):
                raise TypeError("kvc: %s must be a sequence of str, got %r" % (name, value))
            items = [v.encode("utf-8") for v in value]
            arr = (ctypes.c_char_p * max(len(items), 1))(*items)
            call = "kvc_policy_params_set_strings"
            st = _C.kvc_policy_params_set_strings(h, key, arr, len(items))
        else:  # choice, or a type this binding does not know
            raise TypeError("kvc: %s (%s) takes a str, got %r" % (name, kind, value))
        _check(st, call)

    def update(self, params: Mapping[str, Any]) -> None:
        """``set`` for each item of a mapping."""
        if not isinstance(params, Mapping):
            raise TypeError("kvc: params must be a mapping of name to value")
        for name, value in params.items():
            self.set(name, value)

    def _index(self, name: str) -> int:
        for k, q in enumerate(self._policy.params):
            if q.name == name:
                return k
        raise KeyError("kvc: policy '%s' has no parameter '%s' (it has: %s)"
                       % (self._policy.name, name,
                          ", ".join(q.name for q in self._policy.params)))

    def _get(self, index: int) -> Tuple[Any, bool]:
        v = _lib.init(_lib.kvc_param_value, _C.kvc_param_value_init_size)
        is_set = ctypes.c_int()
        _check(_C.kvc_policy_params_get(self._handle(), index, ctypes.byref(v),
                                        ctypes.byref(is_set)), "kvc_policy_params_get")
        kind = self._policy.params[index].type
        if kind == "int":
            value: Any = int(v.i)
        elif kind == "float":
            value = float(v.f)
        elif kind == "bool":
            value = bool(v.i)
        elif kind == "choice":
            value = _text(v.strings[0]) if v.n_strings else None
        elif kind == "int_list":
            value = [int(v.ints[k]) for k in range(v.n_ints)]
        elif kind == "string_list":
            value = [_text(v.strings[k]) for k in range(v.n_strings)]
        else:
            value = None
        return value, bool(is_set.value)

    def get(self, name: str) -> Any:
        """The value of one parameter (the default when unset), as a Python value."""
        return self._get(self._index(name))[0]

    def is_set(self, name: str) -> bool:
        """Whether ``set`` gave the parameter (False: it holds its default)."""
        return self._get(self._index(name))[1]

    def values(self) -> Dict[str, Any]:
        """Every parameter of the schema with its value, defaults included."""
        return {q.name: self._get(k)[0] for k, q in enumerate(self._policy.params)}

    def check(self) -> None:
        """Creates and destroys one instance without a model, so the policy's own checks of
        its parameters run too. Model-dependent checks wait for the session."""
        _check(_C.kvc_policy_params_check(self._handle()), "kvc_policy_params_check")


def _int64s(values: Any, what: str):
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError("kvc: %s must be a sequence of ints, got %r" % (what, values))
    items = [_int(v, what) for v in values]
    arr = (ctypes.c_int64 * max(len(items), 1))(*items)
    return arr, len(items), arr


# ---- Session ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheStats:
    """``kvc_cache_stats``: the session's cache now."""

    n_layers: int
    n_heads: int
    capacity: int  # the policy's budget per (layer, head); -1 if unbounded
    max_entries: int  # the session's hard limit per (layer, head); 0 = none
    min_entries: int
    max_entries_now: int
    total_entries: int
    n_tokens_seen: int
    n_evictions: int


@dataclass(frozen=True)
class ScoreReport:
    """How the session's last :meth:`Session.score` ran (``kvc_score_report``)."""

    block_size: int  # tokens per forward pass (1: token by token)
    path: str  # "block" (exact, layer by layer), "token" or "prefill"
    reason: str  # why "token" when a larger block was asked for; else ""


@dataclass(frozen=True)
class ScoreResult:
    """The outputs of :meth:`Session.score_details`, one row per fed token."""

    nll: Floats  # n-1 values (n with next_token)
    cache_entries: Floats  # after each step: the most entries of any (layer, head)
    evicted: Floats  # at each step: the entries evicted, summed over (layer, head)
    logits: Optional[Any]  # (n, vocab) when asked for, else None


class Session(_Closable):
    """One sequence with its KV cache and eviction policy. One thread at a time.

    ``policy``: None (the full cache), a name ("streaming", "h2o", ...), a path to a plugin
    .so, or a :class:`PolicyParams`; ``params``: a mapping of parameter values for a name
    (values in Python types or the text syntax); ``positions``: "shift" (rotary by rank in the
    cache) or "original"; ``max_entries``: a hard limit per (layer, head), 0 = none;
    ``policy_path``: extra ':'-separated folders searched for plugins.

    Every call that feeds tokens (:meth:`score`, :meth:`perplexity`, :meth:`step`) appends
    them to the session's sequence; :meth:`reset` starts a new one."""

    def __init__(self, model: Model, policy: Union[str, PolicyParams, None] = None,
                 params: Optional[Mapping[str, Any]] = None, positions: str = "shift",
                 max_entries: int = 0, policy_path: Optional[str] = None):
        self._h = None
        opts = _lib.init(_lib.kvc_session_options, _C.kvc_session_options_init_size)
        keep: List[Any] = []
        if isinstance(policy, PolicyParams):
            if params is not None or policy_path is not None:
                raise ValueError("kvc: with PolicyParams, give params and policy_path to it, "
                                 "not to the session")
            opts.policy_params = policy._handle()
        elif policy is None or isinstance(policy, (str, os.PathLike)):
            arr, n, keep = _param_array(params)
            opts.policy = _bytes(os.fspath(policy)) if policy else None
            opts.params = ctypes.cast(arr, ctypes.POINTER(_lib.kvc_param))
            opts.n_params = n
            opts.policy_path = _bytes(os.fspath(policy_path)) if policy_path else None
            keep = keep + [arr]
        else:
            raise TypeError("kvc: policy must be a name, a path or PolicyParams, got %s"
                            % type(policy).__name__)
        opts.positions = _choice(_POSITIONS, positions, "positions")
        opts.max_entries = _int(max_entries, "max_entries")
        h = ctypes.c_void_p()
        _check(_C.kvc_session_create(model._handle(), ctypes.byref(opts), ctypes.byref(h)),
               "kvc_session_create")
        del keep
        self._h = h
        self._model = model  # sessions must be freed before their model
        self._vocab = model.info.vocab_size
        model._sessions.add(self)

    def _handle(self):
        if not self._h:
            raise ValueError("kvc: the session is closed")
        return self._h

    def close(self) -> None:
        """Frees the session. Idempotent."""
        if self._h:
            _C.kvc_session_free(self._h)
        self._h = None

    def reset(self) -> None:
        """Empties the cache and resets the policy: the next call starts a new text."""
        _check(_C.kvc_session_reset(self._handle()), "kvc_session_reset")

    def _score(self, ids: TokenIds, mode: str, block_size: int, next_token: Optional[int],
               details: bool, logits: bool, numpy: bool):
        p, n, keep = _ids(ids)
        opts = _lib.init(_lib.kvc_score_options, _C.kvc_score_options_init_size)
        opts.mode = _choice(_SCORE_MODES, mode, "mode")
        opts.block_size = _int(block_size, "block_size")
        nxt = None
        if next_token is not None:
            nxt = ctypes.c_int32(_int(next_token, "next_token"))
            opts.next_token = ctypes.pointer(nxt)
        n_nll = n if next_token is not None else max(n - 1, 0)
        entries = evicted = rows = None
        if details:
            entries = (ctypes.c_int64 * max(n, 1))()
            evicted = (ctypes.c_int64 * max(n, 1))()
            opts.cache_entries = ctypes.cast(entries, _lib._I64P)
            opts.evicted = ctypes.cast(evicted, _lib._I64P)
            if logits:
                rows = (ctypes.c_float * max(n * self._vocab, 1))()
                opts.logits = ctypes.cast(rows, _lib._F32P)
                opts.logits_capacity = n * self._vocab
        out = (ctypes.c_float * max(n_nll, 1))()
        _check(_C.kvc_session_score(self._handle(), p, n, ctypes.byref(opts), out, n_nll),
               "kvc_session_score")
        del keep, nxt
        nll = _floats(out, n_nll, numpy)
        if not details:
            return nll
        if numpy:
            np = _numpy()
            ce = np.ctypeslib.as_array(entries)[:n].copy()
            ev = np.ctypeslib.as_array(evicted)[:n].copy()
        else:
            ce, ev = list(entries[:n]), list(evicted[:n])
        lg = _rows(rows, n, self._vocab, numpy) if rows is not None else None
        return ScoreResult(nll, ce, ev, lg)

    def score(self, ids: TokenIds, mode: str = "stream", *, block_size: int = 0,
              next_token: Optional[int] = None, numpy: bool = False) -> Floats:
        """Appends ``ids`` to the session and returns their NLLs in nats: value i is
        -log p(ids[i+1] | everything before it in the session), so n-1 values, or n with
        ``next_token`` (the token that follows the ids in the text, so a long text can be
        scored in consecutive calls without losing a prediction at each call's end).

        ``mode``: "stream" (one token per step, the policy consulted after each: the reference
        protocol) or "prefill" (one batched forward; exact only without eviction within the
        text). ``block_size``: stream tokens per forward pass (1..256; 0 = the library's
        default, :data:`DEFAULT_BLOCK_SIZE`); every block size gives the same results, see
        :meth:`score_report`. Returns a list, or a float32 array with ``numpy=True``."""
        return self._score(ids, mode, block_size, next_token, False, False, numpy)

    def score_details(self, ids: TokenIds, mode: str = "stream", *, block_size: int = 0,
                      next_token: Optional[int] = None, logits: bool = False,
                      numpy: bool = False) -> ScoreResult:
        """:meth:`score` with the per-step outputs: the cache size after each step, the
        entries evicted at each step and, with ``logits=True``, the logits of every fed token
        (an (n, vocab) array with ``numpy=True``, else a list of n rows)."""
        return self._score(ids, mode, block_size, next_token, True, logits, numpy)

    def perplexity(self, ids: TokenIds, mode: str = "stream", *, block_size: int = 0) -> float:
        """Scores ``ids`` (appending them, as :meth:`score` does) and returns exp(mean NLL).
        To report the perplexity of NLLs already computed, use :func:`kvc.perplexity`:
        calling this after ``score(ids)`` on the same session would score the text again as
        its continuation."""
        return perplexity(self.score(ids, mode, block_size=block_size))

    def step(self, ids: TokenIds, logits: str = "last", numpy: bool = False):
        """Appends ``ids`` in one batch (causal prefill; one id is a decode step), then lets
        the policy evict. ``logits``: "last" returns the logits of the last id (vocab values),
        "all" those of every id (an (n, vocab) array with ``numpy=True``, else n rows), "none"
        returns None."""
        p, n, keep = _ids(ids)
        which = _choice(_LOGITS, logits, "logits")
        size = {0: 0, 1: self._vocab, 2: n * self._vocab}[which]
        out = (ctypes.c_float * max(size, 1))()
        _check(_C.kvc_session_step(self._handle(), p, n, which, out, size), "kvc_session_step")
        del keep
        if which == 0:
            return None
        if which == 1:
            return _floats(out, size, numpy)
        return _rows(out, n, self._vocab, numpy)

    def score_report(self) -> ScoreReport:
        """How the last :meth:`score` ran: the block size, "block"/"token"/"prefill", and why
        it fell back to token by token when it did."""
        r = _lib.init(_lib.kvc_score_report, _C.kvc_score_report_init_size)
        _check(_C.kvc_session_score_report(self._handle(), ctypes.byref(r)),
               "kvc_session_score_report")
        return ScoreReport(r.block_size, _text(r.path) or "", _text(r.reason) or "")

    def policy_report(self) -> Dict[str, Any]:
        """The session's policy as the engine runs it (plugin, resolved parameters, signals,
        trigger, rule, separators, notes), parsed from the library's JSON."""
        return json.loads(_sized_text(_C.kvc_session_policy_report, "kvc_session_policy_report",
                                      self._handle()))

    def cache_stats(self) -> CacheStats:
        """Sizes of the cache now, and the tokens and evictions since create/reset."""
        s = _lib.init(_lib.kvc_cache_stats, _C.kvc_cache_stats_init_size)
        _check(_C.kvc_session_cache_stats(self._handle(), ctypes.byref(s)),
               "kvc_session_cache_stats")
        return CacheStats(s.n_layers, s.n_heads, s.capacity, s.max_entries, s.min_entries,
                          s.max_entries_now, s.total_entries, s.n_tokens_seen, s.n_evictions)

    def cache_counts(self, numpy: bool = False):
        """Entries per (layer, head): n_layers rows of n_heads, or an int64 array."""
        st = self.cache_stats()
        buf = (ctypes.c_int64 * max(st.n_layers * st.n_heads, 1))()
        _check(_C.kvc_session_cache_counts(self._handle(), buf, st.n_layers * st.n_heads),
               "kvc_session_cache_counts")
        if numpy:
            np = _numpy()
            return np.ctypeslib.as_array(buf)[: st.n_layers * st.n_heads].reshape(
                st.n_layers, st.n_heads).copy()
        return [list(buf[l * st.n_heads:(l + 1) * st.n_heads]) for l in range(st.n_layers)]

    def cache_entries(self, layer: int, head: int) -> Tuple[List[int], List[int]]:
        """(positions, token ids) of the entries of one (layer, head), oldest first; positions
        are indices in the text since create/reset."""
        n = ctypes.c_size_t()
        h = self._handle()
        layer, head = _int(layer, "layer"), _int(head, "head")
        st = _C.kvc_session_cache_entries(h, layer, head, None, None, 0, ctypes.byref(n))
        if st not in (Status.OK, Status.BUFFER_TOO_SMALL):
            _check(st, "kvc_session_cache_entries")
        pos = (ctypes.c_int64 * max(n.value, 1))()
        tok = (ctypes.c_int32 * max(n.value, 1))()
        _check(_C.kvc_session_cache_entries(h, layer, head, pos, tok, n.value, ctypes.byref(n)),
               "kvc_session_cache_entries")
        return list(pos[: n.value]), list(tok[: n.value])

    def cache_scores(self, layer: int, head: int, numpy: bool = False) -> Floats:
        """The values of the signal the policy ranks entries by (e.g. H2O's accumulated
        attention), for the entries of one (layer, head) in :meth:`cache_entries` order.
        Raises NotFoundError for policies that rank by no signal (streaming, sepllm, the full
        cache)."""
        n = ctypes.c_size_t()
        h = self._handle()
        layer, head = _int(layer, "layer"), _int(head, "head")
        st = _C.kvc_session_cache_scores(h, layer, head, None, 0, ctypes.byref(n))
        if st not in (Status.OK, Status.BUFFER_TOO_SMALL):
            _check(st, "kvc_session_cache_scores")
        buf = (ctypes.c_float * max(n.value, 1))()
        _check(_C.kvc_session_cache_scores(h, layer, head, buf, n.value, ctypes.byref(n)),
               "kvc_session_cache_scores")
        return _floats(buf, n.value, numpy)

    def keep(self, layer: int, head: int, ranks: TokenIds) -> None:
        """Manual eviction: keeps only the entries at ``ranks`` (0 = oldest, strictly
        increasing) of (layer, head); -1 for layer or head means all of them."""
        p, n, keep = _ids(ranks, "ranks")
        _check(_C.kvc_session_keep(self._handle(), _int(layer, "layer"), _int(head, "head"),
                                   p, n), "kvc_session_keep")
        del keep

    # Sampling and generation (kvc_sampler, kvc_generate) are bound here once they are part of
    # the released C ABI: declarations in _lib.py under their ABI minor, methods on Session.
