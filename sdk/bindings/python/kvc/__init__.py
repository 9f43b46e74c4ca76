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

``python -m kvc.ray_eval`` (the ``kvc-ray-eval`` command) runs kvc-eval's work on a Ray cluster
and merges the shards into the files of a single run (docs/scale-out.md); Ray is optional and
only that module imports it.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import enum
import json
import math
import numbers
import os
import threading
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
    "PolicyParams", "PolicyInfo", "ParamInfo", "Sampler", "TokenStream", "Token", "Generation",
    "StopReason",
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


# ---- Sampling and generation (ABI 1.2) -----------------------------------------------------------


def _need_generation(what: str) -> None:
    if not _lib.has("kvc_generate"):
        major, minor = abi_version()
        raise NotImplementedError("kvc: %s needs libkvc ABI 1.2 or a later 1.x (sampling and "
                                  "generation); %s has ABI %d.%d"
                                  % (what, library_path(), major, minor))


class StopReason(enum.IntEnum):
    """Why a generation ended (``kvc_stop_reason``)."""

    MAX_TOKENS = 0  # max_tokens were generated
    SEQUENCE = 1  # the text produced a stop sequence (stop_index says which)
    TOKEN = 2  # a stop token was sampled (stop_index says which)
    CALLBACK = 3  # the caller stopped it (left the iteration, closed the stream)


@dataclass(frozen=True)
class Token:
    """One generated token, as :meth:`Session.generate` yields it."""

    id: int
    text: str  # the text released with this token; "" while it is held back (see generate)


@dataclass(frozen=True)
class Generation:
    """A finished generation: :meth:`Session.generate_text`, :attr:`TokenStream.result`."""

    text: str  # every released piece, concatenated (stop sequences and stop tokens excluded)
    tokens: List[int]  # the generated ids, the last (stop) one included
    stop_reason: StopReason
    stop_index: int  # index into stop (SEQUENCE) or stop_tokens (TOKEN); else -1


# The sampler's settings with the library's defaults (kvc_sampler_options_init).
_SAMPLER_DEFAULTS: Dict[str, Any] = {
    "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0,
    "repetition_last_n": 64, "seed": 0,
}


def _real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("kvc: %s must be a number, got %r" % (what, value))
    return float(value)


def _sampler_options(temperature: float, top_k: int, top_p: float, min_p: float,
                     repetition_penalty: float, repetition_last_n: int, seed: int):
    """A kvc_sampler_options, checked as kvc_sampler_create checks it (ValueError here, so
    that a bad value never reaches the library)."""
    t = _real(temperature, "temperature")
    if not (math.isfinite(t) and t >= 0):
        raise ValueError("kvc: temperature is %r; expected a finite value >= 0 (0 = greedy)" % t)
    k = _int(top_k, "top_k")
    if not 0 <= k <= _INT32_MAX:
        raise ValueError("kvc: top_k is %d; expected >= 0 (0 = off)" % k)
    p = _real(top_p, "top_p")
    if not 0 < p <= 1:
        raise ValueError("kvc: top_p is %r; expected a value in (0, 1] (1 = off)" % p)
    m = _real(min_p, "min_p")
    if not 0 <= m <= 1:
        raise ValueError("kvc: min_p is %r; expected a value in [0, 1] (0 = off)" % m)
    r = _real(repetition_penalty, "repetition_penalty")
    if not (math.isfinite(r) and r > 0):
        raise ValueError("kvc: repetition_penalty is %r; expected a finite value > 0 (1 = off)"
                         % r)
    n = _int(repetition_last_n, "repetition_last_n")
    if not -1 <= n <= _INT32_MAX:
        raise ValueError("kvc: repetition_last_n is %d; expected >= -1 (-1 = the whole "
                         "history, 0 = none)" % n)
    s = _int(seed, "seed")
    if not 0 <= s < 2 ** 64:
        raise ValueError("kvc: seed is %d; expected an integer in [0, 2**64)" % s)
    o = _lib.init(_lib.kvc_sampler_options, _C.kvc_sampler_options_init_size)
    o.temperature, o.top_k, o.top_p, o.min_p = t, k, p, m
    o.repetition_penalty, o.repetition_last_n, o.seed = r, n, s
    return o


def _stop_active(owner: Any) -> None:
    """Ends the generation that is using ``owner`` (a Session or a Sampler), if one is."""
    ref = getattr(owner, "_active", None)
    stream = ref() if ref is not None else None
    if stream is not None:
        stream.close()


class Sampler(_Closable):
    """The library's sampler (``kvc_sampler``): turns the logits of a step into a token.

    The chain, in the order of Hugging Face transformers: repetition penalty over the last
    ``repetition_last_n`` ids of the history (-1: all, 0: none); ``temperature`` 0 is greedy
    (the largest logit, the lowest id among equal ones), else the logits are divided by it;
    ``top_k`` (0 = off), ``top_p`` (1 = off) and ``min_p`` (0 = off) filter the candidates; one
    token is drawn with the SplitMix64 stream of ``seed``. A seed gives the same tokens on every
    run. Bad values raise ValueError (TypeError for a wrong type) before the library is
    called. A sampler keeps its history and its place in the random stream across calls
    (:meth:`reset` starts both again); one thread at a time. Pass it to
    :meth:`Session.generate` to continue a stream over several generations."""

    def __init__(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 min_p: float = 0.0, repetition_penalty: float = 1.0,
                 repetition_last_n: int = 64, seed: int = 0):
        self._h = None
        self._active: Optional["weakref.ref[TokenStream]"] = None
        _need_generation("kvc.Sampler")
        opts = _sampler_options(temperature, top_k, top_p, min_p, repetition_penalty,
                                repetition_last_n, seed)
        h = ctypes.c_void_p()
        _check(_C.kvc_sampler_create(ctypes.byref(opts), ctypes.byref(h)), "kvc_sampler_create")
        self._h = h
        self.settings: Dict[str, Any] = {  # as given (the library keeps float32 values)
            "temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p),
            "min_p": float(min_p), "repetition_penalty": float(repetition_penalty),
            "repetition_last_n": int(repetition_last_n), "seed": int(seed)}

    def __repr__(self) -> str:
        return "kvc.Sampler(%s)" % ", ".join("%s=%r" % kv for kv in self.settings.items())

    def _handle(self):
        if not self._h:
            raise ValueError("kvc: the sampler is closed")
        _stop_active(self)
        return self._h

    def close(self) -> None:
        """Frees the sampler (ending a generation that uses it first). Idempotent."""
        _stop_active(self)
        if self._h:
            _C.kvc_sampler_free(self._h)
        self._h = None

    def reset(self) -> None:
        """Clears the history and restarts the random stream: the next tokens repeat the
        first ones."""
        _check(_C.kvc_sampler_reset(self._handle()), "kvc_sampler_reset")

    def accept(self, ids: TokenIds) -> None:
        """Appends ids the sampler did not pick (a prompt) to the history the repetition
        penalty looks at."""
        p, n, keep = _ids(ids)
        _check(_C.kvc_sampler_accept(self._handle(), p, n), "kvc_sampler_accept")
        del keep

    def sample(self, logits: Any) -> int:
        """Samples one id from ``logits`` (a 1-D sequence of floats or numpy array, e.g.
        :meth:`Session.step`'s) and appends it to the history. NaN and -inf are never chosen."""
        if _is_array(logits):
            np = _numpy()
            arr = np.ascontiguousarray(logits, dtype=np.float32)
            if arr.ndim != 1:
                raise ValueError("kvc: logits must be 1-D, got shape %s" % (arr.shape,))
            ptr, n, keep = arr.ctypes.data_as(_lib._F32P), int(arr.size), arr
        else:
            if isinstance(logits, (str, bytes)) or not isinstance(logits, Iterable):
                raise TypeError("kvc: logits must be a sequence of floats, got %s"
                                % type(logits).__name__)
            values = [_real(x, "logits[%d]" % k) for k, x in enumerate(logits)]
            buf = (ctypes.c_float * max(len(values), 1))(*values)
            ptr, n, keep = ctypes.cast(buf, _lib._F32P), len(values), buf
        token = ctypes.c_int32()
        _check(_C.kvc_sampler_sample(self._handle(), ptr, n, ctypes.byref(token)),
               "kvc_sampler_sample")
        del keep
        return token.value


class _GenerateCall:
    """The C side of one kvc_generate call: the options, the prompt, the output buffers and
    the sampler, kept alive together until the call has returned."""

    def __init__(self, session: "Session", prompt: Union[str, bytes, TokenIds], max_tokens: int,
                 sampling: Dict[str, Any], stop: Union[str, Sequence[str], None],
                 stop_tokens: Optional[TokenIds], sampler: Optional[Sampler]):
        _need_generation("Session.generate")
        self.max_tokens = _int(max_tokens, "max_tokens")
        if not 0 <= self.max_tokens <= _INT32_MAX:
            raise ValueError("kvc: max_tokens is %d; expected >= 0" % self.max_tokens)
        if isinstance(stop, (str, bytes)):
            stop = [stop]
        items: List[bytes] = []
        for k, s in enumerate(stop or ()):
            if not isinstance(s, (str, bytes)):
                raise TypeError("kvc: stop[%d] must be a str, got %r" % (k, s))
            b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
            if not b or b"\0" in b:
                raise ValueError("kvc: stop[%d] is %r; a stop sequence is non-empty text "
                                 "without NUL" % (k, s))
            items.append(b)
        if sampler is not None:
            if not isinstance(sampler, Sampler):
                raise TypeError("kvc: sampler must be a kvc.Sampler, got %s"
                                % type(sampler).__name__)
            changed = sorted(k for k, v in sampling.items() if v != _SAMPLER_DEFAULTS[k])
            if changed:
                raise ValueError("kvc: with sampler=, give %s to the Sampler, not to generate"
                                 % ", ".join(changed))
            self.sampler, self.owns_sampler = sampler, False
        else:
            self.sampler, self.owns_sampler = None, True
            opts = _sampler_options(**sampling)  # ValueError before anything is created
        if isinstance(prompt, (str, bytes, bytearray)):
            tok = session._model.tokenizer
            if tok is None:
                raise ValueError("kvc: a text prompt needs the model's tokenizer; %s has none "
                                 "(give token ids)" % session._model.path)
            prompt = tok.encode(prompt)
        self.prompt, self.n_prompt, self._keep_prompt = _ids(prompt, "prompt")
        self.stop_ids, self.n_stop_ids, self._keep_stop_ids = _ids(
            [] if stop_tokens is None else stop_tokens, "stop_tokens")
        self._stop = (ctypes.c_char_p * max(len(items), 1))(*items)
        self.n_stop = len(items)
        self.session = session._handle()  # ends a generation still running on the session
        if self.owns_sampler:
            h = ctypes.c_void_p()
            _check(_C.kvc_sampler_create(ctypes.byref(opts), ctypes.byref(h)),
                   "kvc_sampler_create")
            self.sampler_h = h
        else:
            self.sampler_h = self.sampler._handle()
        self.tokens = (ctypes.c_int32 * max(self.max_tokens, 1))()
        self.result = _lib.init(_lib.kvc_generate_result, _C.kvc_generate_result_init_size)
        self._callback = None
        self.callback_error: Optional[BaseException] = None

    def run(self, on_token) -> int:
        """Calls kvc_generate with ``on_token(id, piece bytes) -> bool`` (False stops) and
        returns its status. An exception in ``on_token`` stops the generation and is kept in
        ``callback_error``."""

        def trampoline(_user, token, piece, length):
            try:
                return 0 if on_token(token, ctypes.string_at(piece, length)) else 1
            except BaseException as e:  # never into C: stop, and raise it after the call
                if self.callback_error is None:
                    self.callback_error = e
                return 1

        o = _lib.init(_lib.kvc_generate_options, _C.kvc_generate_options_init_size)
        o.max_tokens = self.max_tokens
        o.stop = ctypes.cast(self._stop, ctypes.POINTER(ctypes.c_char_p))
        o.n_stop = self.n_stop
        o.stop_tokens = self.stop_ids
        o.n_stop_tokens = self.n_stop_ids
        self._callback = _lib.kvc_token_callback(trampoline)
        o.on_token = self._callback
        return _C.kvc_generate(self.session, self.sampler_h, self.prompt, self.n_prompt,
                               ctypes.byref(o), self.tokens, self.max_tokens,
                               ctypes.byref(self.result))

    def generation(self, text: str) -> Generation:
        r = self.result
        try:
            reason: Any = StopReason(r.stop_reason)
        except ValueError:
            reason = r.stop_reason  # a newer library's reason
        return Generation(text, list(self.tokens[: r.n_tokens]), reason, r.stop_index)

    def free(self) -> None:
        if self.owns_sampler and self.sampler_h:
            _C.kvc_sampler_free(self.sampler_h)
        self.sampler_h = None


class _Handoff:
    """Hands tokens from the generating thread to the iterating one, one at a time: the
    generation goes on only as far as the consumer has asked, so the session holds exactly
    what the consumer saw, and a consumer that stops asking stops it."""

    def __init__(self):
        self.cv = threading.Condition()
        self.items: "collections.deque[Tuple[int, bytes]]" = collections.deque()
        self.asked = 0  # tokens the consumer has asked for
        self.produced = 0
        self.stopped = False
        self.done = False
        self.error: Optional[BaseException] = None

    def put(self, token: int, piece: bytes) -> bool:
        """Generating thread: hands one token over and waits until the consumer asks for the
        next one (True) or stops (False)."""
        with self.cv:
            self.items.append((token, piece))
            self.produced += 1
            self.cv.notify_all()
            while not self.stopped and self.asked <= self.produced:
                self.cv.wait()
            return not self.stopped

    def finish(self, error: Optional[BaseException]) -> None:
        with self.cv:
            self.done, self.error = True, error
            self.cv.notify_all()

    def get(self) -> Optional[Tuple[int, bytes]]:
        """Consumer: the next token, or None when the generation has ended."""
        with self.cv:
            self.asked += 1
            self.cv.notify_all()
            while not self.items and not self.done:
                self.cv.wait()
            return self.items.popleft() if self.items else None

    def stop(self) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify_all()


_live_streams: "weakref.WeakSet[TokenStream]" = weakref.WeakSet()


@atexit.register
def _stop_streams() -> None:
    for stream in list(_live_streams):
        try:
            stream.close()
        except Exception:
            pass


class TokenStream(_Closable):
    """The iterator :meth:`Session.generate` returns: yields a :class:`Token` per generated
    token while the library generates them in a worker thread.

    The generation starts at the first ``next()`` and goes on only as far as the iteration
    asks: leaving the loop early (``break``), :meth:`close`, the end of a ``with`` block, or
    another call on the session or the sampler stops it (stop reason ``CALLBACK``) and joins
    the thread; the session then holds the prompt and every yielded token but the last, as
    after ``kvc_generate``. An error of the library is raised by ``next()`` after the tokens
    produced before it. :attr:`result` holds the whole :class:`Generation` once the iteration
    has ended; :attr:`tokens` and :attr:`text` what was yielded so far."""

    def __init__(self, call: _GenerateCall, session: "Session"):
        self._call: Optional[_GenerateCall] = call
        self._handoff = _Handoff()
        self._thread: Optional[threading.Thread] = None
        self._owners = [session] + ([call.sampler] if call.sampler is not None else [])
        self._ended = False
        self.tokens: List[int] = []
        self._pieces: List[str] = []
        self.result: Optional[Generation] = None
        me = weakref.ref(self)
        for owner in self._owners:
            owner._active = me
        _live_streams.add(self)

    @property
    def text(self) -> str:
        """The text yielded so far."""
        return "".join(self._pieces)

    def __iter__(self) -> "TokenStream":
        return self

    def _start(self) -> None:
        call, handoff = self._call, self._handoff

        def work():  # references the call and the handoff only, never the stream
            try:
                status = call.run(handoff.put)
                if status != Status.OK:
                    _check(status, "kvc_generate")  # kvc_last_error is read on this thread
                if call.callback_error is not None:
                    raise call.callback_error
                handoff.finish(None)
            except BaseException as e:
                handoff.finish(e)

        self._thread = threading.Thread(target=work, name="kvc-generate", daemon=True)
        self._thread.start()

    def __next__(self) -> Token:
        if self._ended:
            raise StopIteration
        if self._thread is None:
            self._start()
        item = self._handoff.get()
        if item is None:
            error = self._end()
            if error is not None:
                raise error
            raise StopIteration
        token, piece = item
        text = piece.decode("utf-8", "replace")
        self.tokens.append(token)
        self._pieces.append(text)
        return Token(token, text)

    def _end(self) -> Optional[BaseException]:
        """Stops the generation, joins the thread, frees the call; returns its error."""
        if self._ended:
            return None
        self._handoff.stop()
        thread, call = self._thread, self._call
        if thread is threading.current_thread():
            return None  # a finaliser run by the worker itself: the call ends on its own
        self._ended = True
        if thread is not None:
            thread.join()
        error = self._handoff.error
        if call is not None:
            if thread is not None and self._handoff.done and error is None:
                self.result = call.generation(self.text)
            call.free()
        self._call = None
        for owner in self._owners:
            if owner._active is not None and owner._active() is self:
                owner._active = None
        return error

    def close(self) -> None:
        """Stops the generation (if it is still running) and joins its thread. Idempotent."""
        self._end()


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
        self._active: Optional["weakref.ref[TokenStream]"] = None  # a generation using it
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
        _stop_active(self)  # a generation still running on the session ends first
        return self._h

    def close(self) -> None:
        """Frees the session (ending a generation still running on it). Idempotent."""
        _stop_active(self)
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

    def generate(self, prompt: Union[str, TokenIds], max_tokens: int = 128, *,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 min_p: float = 0.0, repetition_penalty: float = 1.0,
                 repetition_last_n: int = 64, seed: int = 0,
                 stop: Union[str, Sequence[str], None] = None,
                 stop_tokens: Optional[TokenIds] = None,
                 sampler: Optional[Sampler] = None) -> TokenStream:
        """Generates up to ``max_tokens`` tokens after ``prompt`` (text, encoded with the
        model's tokenizer, or token ids; appended to what the session holds), streaming them:
        returns a :class:`TokenStream` that yields a :class:`Token` (id, text piece) as soon as
        each is sampled (``kvc_generate`` runs in a worker thread)::

            for t in session.generate("In the beginning", 64, temperature=0.8, seed=1,
                                      stop=["\\n\\n"]):
                print(t.text, end="", flush=True)

        The sampling keywords are :class:`Sampler`'s (defaults: the library's, temperature 1;
        ``temperature=0`` is greedy) and are checked before anything runs (ValueError,
        TypeError); or pass ``sampler=`` a :class:`Sampler` to continue its history and random
        stream. ``stop``: stop sequences (text, matched wherever token boundaries fall; needs
        the model's tokenizer), ``stop_tokens``: ids that end the generation when sampled.

        Pieces concatenate to the generated text; a piece is "" while its text could still
        begin a stop sequence or ends in a split UTF-8 character, and a later piece then holds
        it. The text of a stop sequence and of stop tokens is never yielded. Leaving the
        iteration early stops the generation (see :class:`TokenStream`). Afterwards the
        session holds the prompt and every generated token but the last, which was not fed:
        pass it as the first token of the next prompt to continue."""
        sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                        repetition_penalty=repetition_penalty,
                        repetition_last_n=repetition_last_n, seed=seed)
        call = _GenerateCall(self, prompt, max_tokens, sampling, stop, stop_tokens, sampler)
        return TokenStream(call, self)

    def generate_text(self, prompt: Union[str, TokenIds], max_tokens: int = 128, *,
                      temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                      min_p: float = 0.0, repetition_penalty: float = 1.0,
                      repetition_last_n: int = 64, seed: int = 0,
                      stop: Union[str, Sequence[str], None] = None,
                      stop_tokens: Optional[TokenIds] = None,
                      sampler: Optional[Sampler] = None) -> Generation:
        """:meth:`generate` run to its end in the calling thread: the whole text, the ids,
        the stop reason and which stop sequence or token ended it (a :class:`Generation`)."""
        sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                        repetition_penalty=repetition_penalty,
                        repetition_last_n=repetition_last_n, seed=seed)
        call = _GenerateCall(self, prompt, max_tokens, sampling, stop, stop_tokens, sampler)
        pieces: List[bytes] = []

        def collect(_token: int, piece: bytes) -> bool:
            pieces.append(piece)
            return True

        try:
            status = call.run(collect)
            _check(status, "kvc_generate")
            if call.callback_error is not None:  # e.g. KeyboardInterrupt: it stopped the call
                raise call.callback_error
            return call.generation(b"".join(pieces).decode("utf-8", "replace"))
        finally:
            call.free()
