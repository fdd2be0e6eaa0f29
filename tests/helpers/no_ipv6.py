"""A process without IPv6, for real: a seccomp filter makes socket(AF_INET6) fail with
EAFNOSUPPORT, as a kernel booted with ipv6.disable=1 does, and as systemd's
RestrictAddressFamilies= does for a unit. Installed in a child before it runs the command."""

from __future__ import annotations

import ctypes
import errno
import platform
import socket
import struct

# socket(2)'s number and the audit architecture, per machine (linux/audit.h, unistd.h)
_SYSCALLS = {"x86_64": (41, 0xC000003E), "aarch64": (198, 0xC00000B7)}
_LD_ABS, _JEQ, _RET = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def is_supported() -> bool:
    return platform.machine() in _SYSCALLS


def _op(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """From now on, in this process and its children, socket(AF_INET6, ...) fails."""
    nr, arch = _SYSCALLS[platform.machine()]
    code = b"".join([
        _op(_LD_ABS, 0, 0, 4),  # seccomp_data.arch
        _op(_JEQ, 1, 0, arch),
        _op(_RET, 0, 0, _ALLOW),
        _op(_LD_ABS, 0, 0, 0),  # seccomp_data.nr
        _op(_JEQ, 0, 3, nr),
        _op(_LD_ABS, 0, 0, 16),  # seccomp_data.args[0]: the address family
        _op(_JEQ, 0, 1, socket.AF_INET6),
        _op(_RET, 0, 0, _ERRNO | errno.EAFNOSUPPORT),
        _op(_RET, 0, 0, _ALLOW),
    ])
    buffer = ctypes.create_string_buffer(code)
    program = _Program(len(code) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
