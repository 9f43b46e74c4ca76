"""Loading libkvc and declaring the C ABI (kvc/kvc.h) for ctypes.

Every declaration mirrors kvc.h exactly; structs keep the header's field order, since they are
passed by pointer and the library reads them by offset.
"""

import ctypes
import ctypes.util
import os

ABI_MAJOR = 1  # KVC_ABI_VERSION_MAJOR this module was written against


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
    ]


class kvc_score_options(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("mode", ctypes.c_int)]


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


_P = ctypes.c_void_p  # opaque handles
_I32P = ctypes.POINTER(ctypes.c_int32)
_I64P = ctypes.POINTER(ctypes.c_int64)
_F32P = ctypes.POINTER(ctypes.c_float)
_SIZEP = ctypes.POINTER(ctypes.c_size_t)
_status = ctypes.c_int

# name: (restype, argtypes)
_SIGNATURES = {
    "kvc_abi_version": (ctypes.c_uint32, []),
    "kvc_version_string": (ctypes.c_char_p, []),
    "kvc_last_error": (ctypes.c_char_p, []),
    "kvc_status_name": (ctypes.c_char_p, [_status]),
    "kvc_tokenizer_load": (_status, [ctypes.c_char_p, ctypes.POINTER(_P)]),
    "kvc_tokenizer_free": (None, [_P]),
    "kvc_tokenize": (_status, [_P, ctypes.c_char_p, ctypes.c_size_t, _I32P, ctypes.c_size_t,
                               _SIZEP]),
    "kvc_detokenize": (_status, [_P, _I32P, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                                 _SIZEP]),
    "kvc_tokenizer_vocab_size": (ctypes.c_int32, [_P]),
    "kvc_tokenizer_token_to_id": (ctypes.c_int32, [_P, ctypes.c_char_p]),
    "kvc_model_options_init": (None, [ctypes.POINTER(kvc_model_options)]),
    "kvc_model_load": (_status, [ctypes.c_char_p, ctypes.POINTER(kvc_model_options),
                                 ctypes.POINTER(_P)]),
    "kvc_model_free": (None, [_P]),
    "kvc_model_info_init": (None, [ctypes.POINTER(kvc_model_info)]),
    "kvc_model_get_info": (_status, [_P, ctypes.POINTER(kvc_model_info)]),
    "kvc_model_tokenizer": (_P, [_P]),
    "kvc_session_options_init": (None, [ctypes.POINTER(kvc_session_options)]),
    "kvc_session_create": (_status, [_P, ctypes.POINTER(kvc_session_options),
                                     ctypes.POINTER(_P)]),
    "kvc_session_free": (None, [_P]),
    "kvc_session_reset": (_status, [_P]),
    "kvc_session_step": (_status, [_P, _I32P, ctypes.c_size_t, ctypes.c_int, _F32P,
                                   ctypes.c_size_t]),
    "kvc_score_options_init": (None, [ctypes.POINTER(kvc_score_options)]),
    "kvc_session_score": (_status, [_P, _I32P, ctypes.c_size_t,
                                    ctypes.POINTER(kvc_score_options), _F32P, ctypes.c_size_t]),
    "kvc_cache_stats_init": (None, [ctypes.POINTER(kvc_cache_stats)]),
    "kvc_session_cache_stats": (_status, [_P, ctypes.POINTER(kvc_cache_stats)]),
    "kvc_session_cache_counts": (_status, [_P, _I64P, ctypes.c_size_t]),
    "kvc_session_cache_entries": (_status, [_P, ctypes.c_int32, ctypes.c_int32, _I64P, _I32P,
                                            ctypes.c_size_t, _SIZEP]),
    "kvc_session_keep": (_status, [_P, ctypes.c_int32, ctypes.c_int32, _I32P, ctypes.c_size_t]),
    "kvc_policy_list_load": (_status, [ctypes.c_char_p, ctypes.POINTER(_P)]),
    "kvc_policy_list_free": (None, [_P]),
    "kvc_policy_list_size": (ctypes.c_size_t, [_P]),
    "kvc_policy_list_get": (ctypes.POINTER(kvc_policy_info), [_P, ctypes.c_size_t]),
    "kvc_policy_list_errors": (ctypes.c_char_p, [_P]),
    "kvc_policy_check": (_status, [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(kvc_param),
                                   ctypes.c_size_t]),
}


def _candidates():
    explicit = os.environ.get("KVC_LIBRARY")
    if explicit:
        return [explicit]
    names = []
    lib_dir = os.environ.get("KVC_LIB_DIR")
    if lib_dir:
        names.append(os.path.join(lib_dir, "libkvc.so"))
    found = ctypes.util.find_library("kvc")
    if found:
        names.append(found)
    names += ["libkvc.so", "libkvc.so.%d" % ABI_MAJOR, "libkvc.dylib", "kvc.dll"]
    return names


def load():
    """Opens libkvc (KVC_LIBRARY, else KVC_LIB_DIR, else the system's search) and declares it."""
    errors = []
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as e:
            errors.append("%s: %s" % (name, e))
    else:
        raise ImportError("kvc: cannot load libkvc (set KVC_LIBRARY to its path); tried "
                          + "; ".join(errors))
    for fn, (restype, argtypes) in _SIGNATURES.items():
        f = getattr(lib, fn)
        f.restype = restype
        f.argtypes = argtypes
    major = lib.kvc_abi_version() >> 16
    if major != ABI_MAJOR:
        raise ImportError("kvc: %s has ABI major %d, this package speaks ABI major %d"
                          % (name, major, ABI_MAJOR))
    return lib
