"""Errors the OS raises (no space, read-only, permission) as one plain sentence with the path, for the apps."""

from __future__ import annotations

import errno

_PLAIN = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory, expected a file",
    errno.ENOTDIR: "a parent is not a directory",
}


def describe_os_error(error: OSError) -> str:
    """`<path>: <what the OS said, in plain words> (<errno name>)`, and what to do for space / read-only /
    permission problems."""
    if error.filename is None:  # raised with a message of its own (it names the path where it knows it)
        return str(error)
    path = str(error.filename)
    if error.filename2:
        path = f"{path} -> {error.filename2}"
    code = error.errno
    plain = _PLAIN.get(code, error.strerror or str(error))
    name = errno.errorcode.get(code, "") if code is not None else ""
    hint = {
        errno.ENOSPC: "; free space there or choose another output directory",
        errno.EDQUOT: "; free space there or choose another output directory",
        errno.EROFS: "; choose a writable output directory",
        errno.EACCES: "; check the file's permissions or choose another directory",
        errno.EPERM: "; check the file's permissions or choose another directory",
    }.get(code, "")
    return f"{path}: {plain}{f' ({name})' if name else ''}{hint}"
