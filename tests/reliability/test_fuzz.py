"""Fuzzing (issue 8): every provider reply parser, request validation, the MCP image parameter,
image decoding and the callback receiver raise only ``ImageGateError`` subclasses.

The targets live in ``bench/soak_fuzz.py``; here each runs with a fixed seed and a modest
number of examples (``make soak`` runs thousands, randomly).
"""

from __future__ import annotations

import pytest

from bench.soak_fuzz import TARGETS, run_target

EXAMPLES = {"request": 150, "image": 150, "input": 150, "callback": 100}


@pytest.mark.parametrize("target", list(TARGETS))
def test_only_typed_errors(target):
    count, failure = run_target(target, EXAMPLES.get(target, 120), derandomize=True)
    assert failure is None, failure
    assert count > 0
