"""Loading libkvc and declaring its C ABI (kvc/kvc.h) for ctypes.

Every declaration mirrors kvc.h; structs keep the header's field order, since they are passed by
pointer and the library reads them by offset. Structs that start with ``struct_size`` are filled
by the library's ``*_init_size`` functions with ``ctypes.sizeof`` of the layout declared here,
so a newer library (whose structs grew at the end) writes exactly this layout.

Functions are declared with the ABI minor that introduced them (``_SIGNATURES``); ``load()``
declares those the loaded library has, and :func:`has` tells whether one is there. To bind a
new part of kvc.h, add its structs here and its functions to ``_SIGNATURES`` with their minor,
then wrap them in ``kvc/__init__.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from typing import Dict, List, Optional, Tuple

ABI_MAJOR = 1  # KVC_ABI_VERSION_MAJOR this package was written against
ABI_MINOR_REQUIRED = 1  # the *_init_size functions and typed parameters arrived in 1.1

# ---- Structs ------------------------------------------------------------------------------------


class kvc_param(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


class kvc_model_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("backend", ctypes.c_int),
        ("weight_dtype", ctypes.c_int),
        ("n_threads", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
    ]


class kvc_model_info(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("n_layers", ctypes.c_int32),
        ("n_heads", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("hidden_size", ctypes.c_int32),
        ("intermediate_size", ctypes.c_int32),
        ("vocab_size", ctypes.c_int32),
        ("max_position_embeddings", ctypes.c_int32),
        ("rotary_ndims", ctypes.c_int32),
        ("rotary_base", ctypes.c_float),
        ("layer_norm_eps", ctypes.c_float),
        ("use_parallel_residual", ctypes.c_int32),
        ("backend", ctypes.c_int),
        ("weight_dtype", ctypes.c_int),
        ("n_threads", ctypes.c_int32),
        ("weight_bytes", ctypes.c_uint64),
    ]


class kvc_session_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("policy", ctypes.c_char_p),
        ("params", ctypes.POINTER(kvc_param)),
        ("n_params", ctypes.c_size_t),
        ("positions", ctypes.c_int),
        ("max_entries", ctypes.c_int64),
        ("policy_path", ctypes.c_char_p),
        # ABI minor 1
        ("policy_params", ctypes.c_void_p),
    ]


class kvc_score_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("mode", ctypes.c_int),
        # ABI minor 1
        ("cache_entries", ctypes.POINTER(ctypes.c_int64)),
        ("evicted", ctypes.POINTER(ctypes.c_int64)),
        ("logits", ctypes.POINTER(ctypes.c_float)),
        ("logits_capacity", ctypes.c_size_t),
        ("next_token", ctypes.POINTER(ctypes.c_int32)),
        ("block_size", ctypes.c_int32),
    ]


class kvc_score_report(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("block_size", ctypes.c_int32),
        ("path", ctypes.c_char_p),
        ("reason", ctypes.c_char_p),
    ]


class kvc_cache_stats(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("n_layers", ctypes.c_int32),
        ("n_heads", ctypes.c_int32),
        ("capacity", ctypes.c_int64),
        ("max_entries", ctypes.c_int64),
        ("min_entries", ctypes.c_int64),
        ("max_entries_now", ctypes.c_int64),
        ("total_entries", ctypes.c_int64),
        ("n_tokens_seen", ctypes.c_int64),
        ("n_evictions", ctypes.c_int64),
    ]


class kvc_param_info(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("name", ctypes.c_char_p),
        ("type", ctypes.c_int),
        ("default_value", ctypes.c_char_p),
        ("min_value", ctypes.c_double),
        ("max_value", ctypes.c_double),
        ("choices", ctypes.c_char_p),
        ("help", ctypes.c_char_p),
    ]


class kvc_policy_info(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("name", ctypes.c_char_p),
        ("version", ctypes.c_char_p),
        ("description", ctypes.c_char_p),
        ("path", ctypes.c_char_p),
        ("n_params", ctypes.c_size_t),
        ("params", ctypes.POINTER(kvc_param_info)),
    ]


class kvc_param_value(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("type", ctypes.c_int),
        ("i", ctypes.c_int64),
        ("f", ctypes.c_double),
        ("ints", ctypes.POINTER(ctypes.c_int64)),
        ("n_ints", ctypes.c_size_t),
        ("strings", ctypes.POINTER(ctypes.c_char_p)),
        ("n_strings", ctypes.c_size_t),
    ]


# ABI minor 2: sampling and generation


class kvc_sampler_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("temperature", ctypes.c_float),
        ("top_k", ctypes.c_int32),
        ("top_p", ctypes.c_float),
        ("min_p", ctypes.c_float),
        ("repetition_penalty", ctypes.c_float),
        ("repetition_last_n", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
    ]


# kvc_token_callback: int32_t (*)(void *user_data, int32_t token, const char *piece, size_t len).
# The piece is read with its length (ctypes.string_at), so it is declared as a char pointer.
kvc_token_callback = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32,
                                      ctypes.POINTER(ctypes.c_char), ctypes.c_size_t)


class kvc_generate_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("max_tokens", ctypes.c_int32),
        ("stop", ctypes.POINTER(ctypes.c_char_p)),
        ("n_stop", ctypes.c_size_t),
        ("stop_tokens", ctypes.POINTER(ctypes.c_int32)),
        ("n_stop_tokens", ctypes.c_size_t),
        ("on_token", kvc_token_callback),
        ("user_data", ctypes.c_void_p),
    ]


class kvc_generate_result(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("n_tokens", ctypes.c_int32),
        ("stop_reason", ctypes.c_int),
        ("stop_index", ctypes.c_int32),
        ("text_len", ctypes.c_uint64),
    ]


# ---- Functions ----------------------------------------------------------------------------------

_P = ctypes.c_void_p  # opaque handles
_PP = ctypes.POINTER(_P)
_I32P = ctypes.POINTER(ctypes.c_int32)
_I64P = ctypes.POINTER(ctypes.c_int64)
_F32P = ctypes.POINTER(ctypes.c_float)
_SIZEP = ctypes.POINTER(ctypes.c_size_t)
_STR = ctypes.c_char_p
_SIZE = ctypes.c_size_t
_status = ctypes.c_int


def _ptr(struct):
    return ctypes.POINTER(struct)


# name: (ABI minor that introduced it, restype, argtypes), in the order of kvc.h.
_SIGNATURES: Dict[str, Tuple[int, object, List[object]]] = {
    # Versions and errors
    "kvc_abi_version": (0, ctypes.c_uint32, []),
    "kvc_version_string": (0, _STR, []),
    "kvc_last_error": (0, _STR, []),
    "kvc_status_name": (0, _STR, [_status]),
    # Tokenizer
    "kvc_tokenizer_load": (0, _status, [_STR, _PP]),
    "kvc_tokenizer_free": (0, None, [_P]),
    "kvc_tokenize": (0, _status, [_P, _STR, _SIZE, _I32P, _SIZE, _SIZEP]),
    "kvc_detokenize": (0, _status, [_P, _I32P, _SIZE, _STR, _SIZE, _SIZEP]),
    "kvc_tokenizer_vocab_size": (0, ctypes.c_int32, [_P]),
    "kvc_tokenizer_token_to_id": (0, ctypes.c_int32, [_P, _STR]),
    # Model
    "kvc_model_options_init_size": (1, None, [_ptr(kvc_model_options), _SIZE]),
    "kvc_model_load": (0, _status, [_STR, _ptr(kvc_model_options), _PP]),
    "kvc_model_free": (0, None, [_P]),
    "kvc_model_info_init_size": (1, None, [_ptr(kvc_model_info), _SIZE]),
    "kvc_model_get_info": (0, _status, [_P, _ptr(kvc_model_info)]),
    "kvc_model_tokenizer": (0, _P, [_P]),
    # Session
    "kvc_session_options_init_size": (1, None, [_ptr(kvc_session_options), _SIZE]),
    "kvc_session_create": (0, _status, [_P, _ptr(kvc_session_options), _PP]),
    "kvc_session_free": (0, None, [_P]),
    "kvc_session_reset": (0, _status, [_P]),
    "kvc_session_step": (0, _status, [_P, _I32P, _SIZE, ctypes.c_int, _F32P, _SIZE]),
    "kvc_score_options_init_size": (1, None, [_ptr(kvc_score_options), _SIZE]),
    "kvc_score_report_init_size": (1, None, [_ptr(kvc_score_report), _SIZE]),
    "kvc_session_score_report": (1, _status, [_P, _ptr(kvc_score_report)]),
    "kvc_session_score": (0, _status, [_P, _I32P, _SIZE, _ptr(kvc_score_options), _F32P,
                                       _SIZE]),
    "kvc_cache_stats_init_size": (1, None, [_ptr(kvc_cache_stats), _SIZE]),
    "kvc_session_cache_stats": (0, _status, [_P, _ptr(kvc_cache_stats)]),
    "kvc_session_cache_counts": (0, _status, [_P, _I64P, _SIZE]),
    "kvc_session_cache_entries": (0, _status, [_P, ctypes.c_int32, ctypes.c_int32, _I64P,
                                               _I32P, _SIZE, _SIZEP]),
    "kvc_session_policy_report": (1, _status, [_P, _STR, _SIZE, _SIZEP]),
    "kvc_session_cache_scores": (1, _status, [_P, ctypes.c_int32, ctypes.c_int32, _F32P, _SIZE,
                                              _SIZEP]),
    "kvc_session_keep": (0, _status, [_P, ctypes.c_int32, ctypes.c_int32, _I32P, _SIZE]),
    # Policies
    "kvc_policy_list_load": (0, _status, [_STR, _PP]),
    "kvc_policy_list_free": (0, None, [_P]),
    "kvc_policy_list_size": (0, _SIZE, [_P]),
    "kvc_policy_list_get": (0, _ptr(kvc_policy_info), [_P, _SIZE]),
    "kvc_policy_list_errors": (0, _STR, [_P]),
    # Typed parameters
    "kvc_param_value_init_size": (1, None, [_ptr(kvc_param_value), _SIZE]),
    "kvc_policy_params_create": (1, _status, [_STR, _STR, _PP]),
    "kvc_policy_params_free": (1, None, [_P]),
    "kvc_policy_params_set_text": (1, _status, [_P, _STR, _STR]),
    "kvc_policy_params_set_int": (1, _status, [_P, _STR, ctypes.c_int64]),
    "kvc_policy_params_set_float": (1, _status, [_P, _STR, ctypes.c_double]),
    "kvc_policy_params_set_bool": (1, _status, [_P, _STR, ctypes.c_int]),
    "kvc_policy_params_set_ints": (1, _status, [_P, _STR, _I64P, _SIZE]),
    "kvc_policy_params_set_strings": (1, _status, [_P, _STR, ctypes.POINTER(_STR), _SIZE]),
    "kvc_policy_params_policy": (1, _ptr(kvc_policy_info), [_P]),
    "kvc_policy_params_get": (1, _status, [_P, _SIZE, _ptr(kvc_param_value),
                                           ctypes.POINTER(ctypes.c_int)]),
    "kvc_policy_params_check": (1, _status, [_P]),
    "kvc_policy_check": (0, _status, [_STR, _STR, _ptr(kvc_param), _SIZE]),
    # Sampling and generation
    "kvc_sampler_options_init_size": (2, None, [_ptr(kvc_sampler_options), _SIZE]),
    "kvc_sampler_create": (2, _status, [_ptr(kvc_sampler_options), _PP]),
    "kvc_sampler_free": (2, None, [_P]),
    "kvc_sampler_reset": (2, _status, [_P]),
    "kvc_sampler_accept": (2, _status, [_P, _I32P, _SIZE]),
    "kvc_sampler_sample": (2, _status, [_P, _F32P, _SIZE, _I32P]),
    "kvc_generate_options_init_size": (2, None, [_ptr(kvc_generate_options), _SIZE]),
    "kvc_generate_result_init_size": (2, None, [_ptr(kvc_generate_result), _SIZE]),
    "kvc_generate": (2, _status, [_P, _P, _I32P, _SIZE, _ptr(kvc_generate_options), _I32P, _SIZE,
                                  _ptr(kvc_generate_result)]),
}


def init(struct_type, init_function):
    """A struct of this module's layout with the library's defaults (``*_init_size``)."""
    s = struct_type()
    init_function(ctypes.byref(s), ctypes.sizeof(struct_type))
    return s


# ---- Finding the library ------------------------------------------------------------------------


def bundled_library() -> Optional[str]:
    """The libkvc installed inside this package by ``pip install`` (kvc/lib/), if any."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
    found = sorted(glob.glob(os.path.join(here, "libkvc.so.%d" % ABI_MAJOR)))
    found += sorted(glob.glob(os.path.join(here, "libkvc.so*")))
    return found[0] if found else None


def candidates() -> List[str]:
    """Where libkvc is looked for, in order: KVC_LIBRARY (a file), KVC_LIB_DIR (a folder), the
    copy inside this package, then the system's search path (ldconfig, LD_LIBRARY_PATH)."""
    explicit = os.environ.get("KVC_LIBRARY")
    if explicit:
        return [explicit]
    names = []
    lib_dir = os.environ.get("KVC_LIB_DIR")
    if lib_dir:
        names += [os.path.join(lib_dir, "libkvc.so.%d" % ABI_MAJOR),
                  os.path.join(lib_dir, "libkvc.so")]
    bundled = bundled_library()
    if bundled:
        names.append(bundled)
    found = ctypes.util.find_library("kvc")
    if found:
        names.append(found)
    names += ["libkvc.so.%d" % ABI_MAJOR, "libkvc.so"]
    return names


path: Optional[str] = None  # the file load() opened
_available: Dict[str, bool] = {}


def has(function: str) -> bool:
    """Whether the loaded library exports ``function`` (declared in _SIGNATURES)."""
    return _available.get(function, False)


def load():
    """Opens libkvc (see candidates()), checks its ABI and declares its functions."""
    global path
    errors = []
    for name in candidates():
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as e:
            errors.append("%s: %s" % (name, e))
    else:
        raise ImportError("kvc: cannot load libkvc; tried " + "; ".join(errors) +
                          ". Install the package with pip (it carries libkvc), or set "
                          "KVC_LIBRARY to the library file")
    version = lib.kvc_abi_version
    version.restype, version.argtypes = ctypes.c_uint32, []
    major, minor = version() >> 16, version() & 0xFFFF
    if major != ABI_MAJOR or minor < ABI_MINOR_REQUIRED:
        raise ImportError("kvc: %s has ABI %d.%d; this package needs ABI %d.%d or a later %d.x"
                          % (name, major, minor, ABI_MAJOR, ABI_MINOR_REQUIRED, ABI_MAJOR))
    for fn, (since, restype, argtypes) in _SIGNATURES.items():
        if since > minor:
            _available[fn] = False
            continue
        f = getattr(lib, fn)
        f.restype = restype
        f.argtypes = argtypes
        _available[fn] = True
    path = getattr(lib, "_name", name)
    return lib
