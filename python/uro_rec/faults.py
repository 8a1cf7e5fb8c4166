"""Fault injection for supervision tests: ``{fault, Kind}``.

The C side refuses the command unless the port was started with ``URO_REC_FAULTS=1`` in its
environment, so nothing here is reachable in production by accident. Each kind breaks the
interpreter the way a real bug would, so the client's crash isolation is tested against the
real thing rather than a simulation:

- ``segfault``: read address 0 through ctypes (SIGSEGV, the port dies);
- ``abort``: ``os.abort()`` (SIGABRT, the port dies);
- ``exit``: ``os._exit(3)`` (the port exits with status 3, no reply);
- ``hang``: a pure-Python busy loop (a ``timeout_ms`` deadline interrupts it);
- ``oom``: allocate without bound. The data segment is first capped 256 MiB above the current
  size (RLIMIT_DATA), so the allocation fails with MemoryError, the call answers a python
  error, and the machine is never pushed into swap; the cap is lifted again afterwards.
"""
import ctypes
import os
import resource

from .errors import BadArg
from .port import A

KINDS = ("segfault", "abort", "exit", "hang", "oom", "refuse_copy")

#: Set by ``{fault, refuse_copy}``.
refusing_copy = False

_REFUSAL = ("DO $$BEGIN RAISE EXCEPTION 'permission denied to COPY: only members of the "
            "admin role may (injected by {fault, refuse_copy})' USING ERRCODE = '42501'; END$$")


def copy_statement(statement):
    """An export's (COPY ..., data) statement, or with ``refuse_copy`` one the server
    refuses with 42501."""
    return (_REFUSAL, []) if refusing_copy else statement


def inject(kind):
    global refusing_copy
    kind = str(kind)
    if kind == "segfault":
        ctypes.string_at(0)
    elif kind == "abort":
        os.abort()
    elif kind == "exit":
        os._exit(3)
    elif kind == "hang":
        while True:
            pass
    elif kind == "oom":
        _allocate_until_refused()
    elif kind == "refuse_copy":
        refusing_copy = True
        return A("ok")
    raise BadArg("fault: kind must be one of %s, got %r" % (", ".join(KINDS), kind))


def _data_segment_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def _allocate_until_refused():
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = _data_segment_bytes() + (256 << 20)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    hoard = []
    try:
        while True:
            hoard.append(bytearray(16 << 20))
    finally:
        hoard.clear()
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
