"""Unguessable ids without a system call each.

``os.urandom`` releases the GIL, and getting it back waits for whichever thread (the database
writer, an image check) took it meanwhile: under load each call cost ~35 us on the event loop
(``make bench``: overhead), and a job needs several ids. So ids are cut from a buffer of
``os.urandom`` bytes, refilled when used up. Every byte is handed out once, and a forked child
starts with an empty buffer so it never repeats its parent's ids.
"""

from __future__ import annotations

import os
import threading

_REFILL_BYTES = 4096

_buffer = bytearray()
_lock = threading.Lock()


def random_hex(nbytes: int) -> str:
    """``nbytes`` bytes from the OS's CSPRNG as lowercase hex (like ``secrets.token_hex``)."""
    global _buffer
    with _lock:
        if len(_buffer) < nbytes:
            _buffer = bytearray(os.urandom(max(_REFILL_BYTES, nbytes)))
        chunk = _buffer[-nbytes:]
        del _buffer[-nbytes:]
    return chunk.hex()


def _forget() -> None:
    global _buffer
    _buffer = bytearray()


os.register_at_fork(after_in_child=_forget)
