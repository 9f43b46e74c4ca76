"""kvc: GPT-NeoX (Pythia) inference with KV-cache eviction, from Python.

A pure-ctypes binding of libkvc's C ABI (kvc/kvc.h); nothing to compile. numpy is optional:
token ids may be any sequence of ints (numpy arrays included), and results come back as lists,
or as numpy arrays with ``numpy=True``.

    import kvc
    with kvc.Model("models/kjv-mini") as model:
        ids = model.tokenizer.encode("In the beginning God created the heaven and the earth.")
        with model.session("streaming", {"start_size": 4, "recent_size": 252}) as session:
            nll = session.score(ids)

Failures raise :class:`KvcError`, which carries the status and the library's message. The
library is found through ``KVC_LIBRARY`` (a path), else ``KVC_LIB_DIR``, else the system's
library search path.
"""

import ctypes
import enum
import math
import weakref
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Union

from . import _lib

__all__ = [
    "Status", "KvcError", "Tokenizer", "Model", "ModelInfo", "Session", "CacheStats",
    "PolicyInfo", "ParamInfo", "list_policies", "check_policy", "version", "abi_version",
]

_C = _lib.load()


class Status(enum.IntEnum):
    OK = 0
    INVALID_ARGUMENT = 1
    IO = 2
    FORMAT = 3
    UNSUPPORTED = 4
    NOT_FOUND = 5
    OUT_OF_RANGE = 6
    BUFFER_TOO_SMALL = 7
    POLICY = 8
    BACKEND = 9
    OUT_OF_MEMORY = 10
    INTERNAL = 11


class KvcError(Exception):
    """A failed libkvc call: ``status`` (a :class:`Status`) and the library's ``message``."""

    def __init__(self, status, message, call=None):
        try:
            self.status = Status(status)
        except ValueError:
            self.status = status
        self.message = message
        self.call = call
        name = _C.kvc_status_name(int(status)).decode()
        super().__init__("%s%s: %s" % (call + ": " if call else "", name, message))


def _check(status, call):
    # The message is per thread and read right after the call, on the same thread.
    if status != 0:
        raise KvcError(status, _C.kvc_last_error().decode("utf-8", "replace"), call)


def version() -> str:
    return _C.kvc_version_string().decode()


def abi_version():
    """(major, minor) of the loaded library."""
    v = _C.kvc_abi_version()
    return (v >> 16, v & 0xFFFF)


def _numpy():
    try:
        import numpy
        return numpy
    except ImportError:
        raise ImportError("kvc: numpy=True needs numpy installed") from None


def _id_array(ids):
    """Token ids as a contiguous C int32 array (a numpy int32 array is used without a copy)."""
    if hasattr(ids, "__array_interface__"):
        np = _numpy()
        arr = np.ascontiguousarray(ids, dtype=np.int32)
        return arr.ctypes.data_as(_lib._I32P), arr.size, arr  # keep arr alive
    seq = [int(i) for i in ids]
    arr = (ctypes.c_int32 * max(len(seq), 1))(*seq)
    return ctypes.cast(arr, _lib._I32P), len(seq), arr


def _floats(buf, n, numpy):
    if numpy:
        np = _numpy()
        return np.ctypeslib.as_array(buf)[:n].copy()
    return list(buf[:n])


def _text(b):
    return b.decode("utf-8", "replace") if b is not None else None


class _Closable:
    """Context-manager and finaliser protocol shared by every handle: `close()` frees it."""

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class Tokenizer(_Closable):
    """A byte-level BPE tokenizer (tokenizer.json). Load one with ``Tokenizer(path)``, or use
    :attr:`Model.tokenizer`. Close it (or use ``with``) when loaded from a file."""

    def __init__(self, path: str):
        self._h = None
        self._owned = True
        h = ctypes.c_void_p()
        _check(_C.kvc_tokenizer_load(str(path).encode(), ctypes.byref(h)), "kvc_tokenizer_load")
        self._h = h
        self._owner = None

    @classmethod
    def _borrowed(cls, handle, owner):
        t = cls.__new__(cls)
        t._h = ctypes.c_void_p(handle)
        t._owned = False
        t._owner = owner  # the model owns the tokenizer; keep it alive
        return t

    def _handle(self):
        if not self._h:
            raise ValueError("kvc: the tokenizer is closed")
        return self._h

    def close(self):
        if self._owned and self._h:
            _C.kvc_tokenizer_free(self._h)
        self._h = None

    @property
    def vocab_size(self) -> int:
        return _C.kvc_tokenizer_vocab_size(self._handle())

    def token_to_id(self, token: str) -> Optional[int]:
        i = _C.kvc_tokenizer_token_to_id(self._handle(), token.encode())
        return None if i < 0 else i

    def encode(self, text: Union[str, bytes], numpy: bool = False):
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        n = ctypes.c_size_t()
        h = self._handle()
        # Sizing call, then the real one (the protocol of kvc_tokenize).
        st = _C.kvc_tokenize(h, data, len(data), None, 0, ctypes.byref(n))
        if st not in (Status.OK, Status.BUFFER_TOO_SMALL):
            _check(st, "kvc_tokenize")
        buf = (ctypes.c_int32 * max(n.value, 1))()
        _check(_C.kvc_tokenize(h, data, len(data), buf, n.value, ctypes.byref(n)), "kvc_tokenize")
        if numpy:
            return _numpy().ctypeslib.as_array(buf)[: n.value].copy()
        return list(buf[: n.value])

    def decode(self, ids: Sequence[int]) -> str:
        p, count, keep = _id_array(ids)
        n = ctypes.c_size_t()
        h = self._handle()
        st = _C.kvc_detokenize(h, p, count, None, 0, ctypes.byref(n))
        if st not in (Status.OK, Status.BUFFER_TOO_SMALL):
            _check(st, "kvc_detokenize")
        buf = ctypes.create_string_buffer(n.value + 1)
        _check(_C.kvc_detokenize(h, p, count, buf, len(buf), ctypes.byref(n)), "kvc_detokenize")
        del keep
        return buf.raw[: n.value].decode("utf-8", "replace")


@dataclass(frozen=True)
class ModelInfo:
    n_layers: int
    n_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rotary_ndims: int
    rotary_base: float
    layer_norm_eps: float
    use_parallel_residual: bool
    backend: str
    weight_dtype: str
    n_threads: int
    weight_bytes: int


_BACKENDS = {"auto": 0, "cpu": 1, "cuda": 2}
_DTYPES = {"auto": 0, "f32": 1, "float32": 1, "bf16": 2, "bfloat16": 2, "f16": 3, "float16": 3}
_POSITIONS = {"shift": 0, "original": 1}
_LOGITS = {"none": 0, "last": 1, "all": 2}
_SCORE_MODES = {"stream": 0, "prefill": 1}


def _choice(table, value, what):
    if isinstance(value, int):
        return value
    try:
        return table[value]
    except KeyError:
        raise ValueError("kvc: %s must be one of %s, got %r" % (what, sorted(table), value))


def _name_of(table, value):
    return next((k for k, v in table.items() if v == value), str(value))


class Model(_Closable):
    """A loaded model (a Hugging Face folder or "synthetic:pythia-70m"...). Immutable; may be
    shared by threads. Closing it closes its open sessions first."""

    def __init__(self, path: str, backend: str = "auto", dtype: str = "auto",
                 threads: int = 0, device: int = 0, seed: int = 0):
        opts = _lib.kvc_model_options()
        _C.kvc_model_options_init(ctypes.byref(opts))
        opts.backend = _choice(_BACKENDS, backend, "backend")
        opts.weight_dtype = _choice(_DTYPES, dtype, "dtype")
        opts.n_threads = threads
        opts.device = device
        opts.seed = seed
        h = ctypes.c_void_p()
        self._h = None
        self._sessions = weakref.WeakSet()
        _check(_C.kvc_model_load(str(path).encode(), ctypes.byref(opts), ctypes.byref(h)),
               "kvc_model_load")
        self._h = h
        self.path = str(path)

    def _handle(self):
        if not self._h:
            raise ValueError("kvc: the model is closed")
        return self._h

    def close(self):
        if self._h:
            for s in list(self._sessions):
                s.close()
            _C.kvc_model_free(self._h)
        self._h = None

    @property
    def info(self) -> ModelInfo:
        i = _lib.kvc_model_info()
        _C.kvc_model_info_init(ctypes.byref(i))
        _check(_C.kvc_model_get_info(self._handle(), ctypes.byref(i)), "kvc_model_get_info")
        return ModelInfo(i.n_layers, i.n_heads, i.head_dim, i.hidden_size, i.intermediate_size,
                         i.vocab_size, i.max_position_embeddings, i.rotary_ndims, i.rotary_base,
                         i.layer_norm_eps, bool(i.use_parallel_residual),
                         _name_of(_BACKENDS, i.backend),
                         {0: "auto", 1: "f32", 2: "bf16", 3: "f16"}.get(i.weight_dtype, "?"),
                         i.n_threads, i.weight_bytes)

    @property
    def tokenizer(self) -> Optional[Tokenizer]:
        """The folder's tokenizer.json, or None. Owned by the model."""
        h = _C.kvc_model_tokenizer(self._handle())
        return Tokenizer._borrowed(h, self) if h else None

    def session(self, policy: Optional[str] = None, params: Optional[Mapping] = None,
                positions: str = "shift", max_entries: int = 0,
                policy_path: Optional[str] = None) -> "Session":
        return Session(self, policy, params, positions, max_entries, policy_path)


def _param_array(params):
    """kvc_param[] from a mapping; values are converted to the kvc_param text syntax."""
    items = list((params or {}).items())
    keep = []
    arr = (_lib.kvc_param * max(len(items), 1))()
    for k, (name, value) in enumerate(items):
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        n, v = str(name).encode(), text.encode()
        keep += [n, v]
        arr[k].name, arr[k].value = n, v
    return arr, len(items), keep


@dataclass(frozen=True)
class CacheStats:
    n_layers: int
    n_heads: int
    capacity: int
    max_entries: int
    min_entries: int
    max_entries_now: int
    total_entries: int
    n_tokens_seen: int
    n_evictions: int


class Session(_Closable):
    """One sequence with its KV cache and eviction policy. One thread at a time."""

    def __init__(self, model: Model, policy=None, params=None, positions="shift",
                 max_entries=0, policy_path=None):
        opts = _lib.kvc_session_options()
        _C.kvc_session_options_init(ctypes.byref(opts))
        arr, n, keep = _param_array(params)
        opts.policy = policy.encode() if policy else None
        opts.params = ctypes.cast(arr, ctypes.POINTER(_lib.kvc_param))
        opts.n_params = n
        opts.positions = _choice(_POSITIONS, positions, "positions")
        opts.max_entries = max_entries
        opts.policy_path = str(policy_path).encode() if policy_path else None
        h = ctypes.c_void_p()
        self._h = None
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

    def close(self):
        if self._h:
            _C.kvc_session_free(self._h)
        self._h = None

    def reset(self):
        _check(_C.kvc_session_reset(self._handle()), "kvc_session_reset")

    def score(self, ids, mode: str = "stream", numpy: bool = False):
        """Appends ``ids`` and returns the n-1 NLLs (nats) of ids[1:] given what precedes."""
        p, n, keep = _id_array(ids)
        opts = _lib.kvc_score_options()
        _C.kvc_score_options_init(ctypes.byref(opts))
        opts.mode = _choice(_SCORE_MODES, mode, "mode")
        out = (ctypes.c_float * max(n - 1, 1))()
        _check(_C.kvc_session_score(self._handle(), p, n, ctypes.byref(opts), out, max(n - 1, 0)),
               "kvc_session_score")
        del keep
        return _floats(out, max(n - 1, 0), numpy)

    def perplexity(self, ids, mode: str = "stream") -> float:
        nll = self.score(ids, mode)
        return math.exp(sum(nll) / len(nll))

    def step(self, ids, logits: str = "last", numpy: bool = False):
        """Feeds ``ids`` in one batch; returns the logits asked for (a flat list for "all",
        n_tokens * vocab_size values, row-major), or None for "none"."""
        p, n, keep = _id_array(ids)
        which = _choice(_LOGITS, logits, "logits")
        size = {0: 0, 1: self._vocab, 2: n * self._vocab}[which]
        out = (ctypes.c_float * max(size, 1))()
        _check(_C.kvc_session_step(self._handle(), p, n, which, out, size), "kvc_session_step")
        del keep
        return None if which == 0 else _floats(out, size, numpy)

    def cache_stats(self) -> CacheStats:
        s = _lib.kvc_cache_stats()
        _C.kvc_cache_stats_init(ctypes.byref(s))
        _check(_C.kvc_session_cache_stats(self._handle(), ctypes.byref(s)),
               "kvc_session_cache_stats")
        return CacheStats(s.n_layers, s.n_heads, s.capacity, s.max_entries, s.min_entries,
                          s.max_entries_now, s.total_entries, s.n_tokens_seen, s.n_evictions)

    def cache_counts(self) -> List[List[int]]:
        """Entries per (layer, head)."""
        st = self.cache_stats()
        buf = (ctypes.c_int64 * (st.n_layers * st.n_heads))()
        _check(_C.kvc_session_cache_counts(self._handle(), buf, len(buf)),
               "kvc_session_cache_counts")
        return [list(buf[l * st.n_heads:(l + 1) * st.n_heads]) for l in range(st.n_layers)]

    def cache_entries(self, layer: int, head: int):
        """(positions, token_ids) of the entries of one (layer, head), oldest first."""
        n = ctypes.c_size_t()
        h = self._handle()
        st = _C.kvc_session_cache_entries(h, layer, head, None, None, 0, ctypes.byref(n))
        if st not in (Status.OK, Status.BUFFER_TOO_SMALL):
            _check(st, "kvc_session_cache_entries")
        pos = (ctypes.c_int64 * max(n.value, 1))()
        tok = (ctypes.c_int32 * max(n.value, 1))()
        _check(_C.kvc_session_cache_entries(h, layer, head, pos, tok, n.value, ctypes.byref(n)),
               "kvc_session_cache_entries")
        return list(pos[: n.value]), list(tok[: n.value])


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str
    default: Optional[str]
    min_value: float
    max_value: float
    choices: Optional[List[str]]
    help: Optional[str]


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    version: str
    description: str
    path: str
    params: List[ParamInfo]


_PARAM_TYPES = ["int", "float", "bool", "choice", "int_list", "string_list"]


def list_policies(extra_path: Optional[str] = None) -> List[PolicyInfo]:
    """Every loadable policy on the search path (extra_path first, then KVC_POLICY_PATH)."""
    h = ctypes.c_void_p()
    _check(_C.kvc_policy_list_load(extra_path.encode() if extra_path else None, ctypes.byref(h)),
           "kvc_policy_list_load")
    try:
        out = []
        for i in range(_C.kvc_policy_list_size(h)):
            p = _C.kvc_policy_list_get(h, i).contents
            params = []
            for k in range(p.n_params):
                q = p.params[k]
                params.append(ParamInfo(
                    _text(q.name),
                    _PARAM_TYPES[q.type] if 0 <= q.type < len(_PARAM_TYPES) else str(q.type),
                    _text(q.default_value), q.min_value, q.max_value,
                    _text(q.choices).split("|") if q.choices else None, _text(q.help)))
            out.append(PolicyInfo(_text(p.name), _text(p.version), _text(p.description),
                                  _text(p.path), params))
        return out
    finally:
        _C.kvc_policy_list_free(h)


def check_policy(name: str, params: Optional[Mapping] = None,
                 extra_path: Optional[str] = None) -> None:
    """Validates a policy name and its parameters without a model; raises KvcError."""
    arr, n, keep = _param_array(params)
    _check(_C.kvc_policy_check(name.encode(), extra_path.encode() if extra_path else None,
                               arr, n), "kvc_policy_check")
    del keep
