"""Ids cut from a buffer of OS randomness: the right size, never repeated, not even by a forked
child that inherited the buffer."""

from __future__ import annotations

import os

from core.ids import random_hex


def test_ids_have_the_asked_size_and_never_repeat():
    ids = [random_hex(8) for _ in range(20_000)]  # several refills of the buffer
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)
    assert len(random_hex(5000)) == 10_000  # more than one refill's worth at once


def test_a_forked_child_does_not_repeat_its_parents_ids():
    random_hex(8)  # the parent's buffer is full now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids and leave at once
        os.write(write, "".join(random_hex(8) for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    os.close(read)
    parent = "".join(random_hex(8) for _ in range(10))
    assert len(child) == len(parent) == 160
    assert child != parent
