"""Status codes and the exception classes of the binding.

Every failed libkvc call raises a subclass of :class:`KvcError` chosen by its status; each
subclass also derives from the matching built-in exception, so callers may catch either
(``except kvc.KvcError`` or ``except FileNotFoundError``).
"""

from __future__ import annotations

import enum
from typing import Dict, Optional, Type


class Status(enum.IntEnum):
    """``kvc_status`` (kvc/kvc.h)."""

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
    """A failed libkvc call.

    Attributes: ``status`` (a :class:`Status`, or the raw int for a status this binding does
    not know), ``message`` (the library's message, naming the file, value or name involved) and
    ``call`` (the C function that failed, e.g. ``"kvc_model_load"``).
    """

    def __init__(self, status: int, message: str, call: Optional[str] = None,
                 status_name: Optional[str] = None):
        try:
            self.status = Status(status)
        except ValueError:
            self.status = status  # a newer library's status
        self.message = message
        self.call = call
        name = status_name or getattr(self.status, "name", str(status))
        super().__init__("%s%s: %s" % (call + ": " if call else "", name, message))

    def __str__(self) -> str:
        return self.args[0] if self.args else ""

    def __reduce__(self):
        return (_rebuild, (type(self), int(self.status), self.message, self.call))


def _rebuild(cls, status, message, call):
    return cls(status, message, call)


class InvalidArgumentError(KvcError, ValueError):
    """KVC_ERR_INVALID_ARGUMENT: a bad option or parameter value, a closed handle, ..."""


class FileError(KvcError, OSError):
    """KVC_ERR_IO: a file or folder could not be opened or read."""


class PathNotFoundError(FileError, FileNotFoundError):
    """KVC_ERR_IO for a model folder or tokenizer file that does not exist."""


class FormatError(KvcError, ValueError):
    """KVC_ERR_FORMAT: a malformed file (JSON, safetensors, tokenizer)."""


class UnsupportedError(KvcError, NotImplementedError):
    """KVC_ERR_UNSUPPORTED: valid input that kvc does not support (architecture, dtype)."""


class NotFoundError(KvcError, LookupError):
    """KVC_ERR_NOT_FOUND: a named thing does not exist (policy, tensor, backend)."""


class OutOfRangeError(KvcError, ValueError):
    """KVC_ERR_OUT_OF_RANGE: a value outside its allowed range (token id, position, cache
    limit)."""


class BufferTooSmallError(KvcError, ValueError):
    """KVC_ERR_BUFFER_TOO_SMALL (the binding sizes its buffers; seen only on a library bug)."""


class PolicyError(KvcError, RuntimeError):
    """KVC_ERR_POLICY: a policy plugin failed or returned an invalid plan."""


class BackendError(KvcError, RuntimeError):
    """KVC_ERR_BACKEND: the compute backend failed (e.g. a CUDA error)."""


class OutOfMemoryError(KvcError, MemoryError):
    """KVC_ERR_OUT_OF_MEMORY."""


class InternalError(KvcError, RuntimeError):
    """KVC_ERR_INTERNAL: a bug in libkvc."""


ERROR_CLASSES: Dict[int, Type[KvcError]] = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.IO: FileError,
    Status.FORMAT: FormatError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.NOT_FOUND: NotFoundError,
    Status.OUT_OF_RANGE: OutOfRangeError,
    Status.BUFFER_TOO_SMALL: BufferTooSmallError,
    Status.POLICY: PolicyError,
    Status.BACKEND: BackendError,
    Status.OUT_OF_MEMORY: OutOfMemoryError,
    Status.INTERNAL: InternalError,
}
