"""The fault matrix (issue 8): every provider variant x every fault, through ``ImageService``.

Each cell checks the error class (or a delivered, charged image), the number of provider calls,
the waits between them (Retry-After honoured, backoff otherwise), exactly one capture or one
refund, and the ledger invariant; late and duplicate callbacks must change nothing. The cells
and their expectations live in ``bench/soak_matrix.py`` (``make soak`` runs the same matrix).
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from bench import soak_matrix
from bench.soak_matrix import EmulatorRig, cells, check, prepare_env, run_cell
from bench.soak_support import Relay, serve_in_loop
from core.http import make_http_client

pytestmark = pytest.mark.asyncio(loop_scope="module")
CELLS = cells()


@pytest.fixture(scope="module")
def rig():
    with EmulatorRig() as running_rig, pytest.MonkeyPatch.context() as env:
        for name, value in prepare_env(running_rig).items():
            env.setenv(name, value)
        yield running_rig


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared():
    """One HTTP client and one callback server for every cell."""
    relay = Relay()
    async with make_http_client() as client, serve_in_loop(relay) as url:
        yield client, (relay, url)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
async def test_cell(rig, shared, cell, tmp_path, secrets_guard):
    for key in rig.secrets():
        secrets_guard.register(key, "matrix emulator API key")
    result = await run_cell(rig, cell, tmp_path, *shared)
    assert check(result) == [], soak_matrix.expect(cell)


async def test_matrix_covers_every_variant_and_fault():
    variants = {c.variant for c in CELLS}
    faults = {c.fault for c in CELLS}
    assert variants == set(soak_matrix.VARIANTS)
    assert faults == set(soak_matrix.FAULTS)
    kinds = {soak_matrix.VARIANTS[v].kind for v in variants}
    assert kinds == {"deepmode", "deepimage", "hive", "hive_v3", "nebulablock", "openai"}
