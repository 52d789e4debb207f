"""Two real processes with the same host name in separate PID namespaces share one database
(issue 12, item 1b): neither releases the other's live holds, however long its jobs queue;
one frozen (SIGSTOP) past its lease loses its holds to the other, and the jobs it finishes
after SIGCONT are charged anyway (late charges); after ``kill -9`` of it, its holds are
released by the other only once its lease lapsed.

One run of ``bench/soak_pidns.py`` (``make soak`` runs ten). About 12 s: two processes start
(1 s each), each must answer two jobs that queue longer than a lease, and the frozen and then
the killed one's lease must run out.
"""

from __future__ import annotations

import os
import shutil

import pytest

from bench.soak_pidns import run_pidns_phase

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="PID namespaces need root and unshare (CI runs as root)",
)


async def test_two_pid_namespaces_share_one_database(tmp_path):
    report = await run_pidns_phase(tmp_path, runs=1)
    figures = report.as_dict()
    assert report.problems == [], figures
    assert report.runs == 1 and report.long_jobs >= 4, figures
    assert (report.released_live, report.released_early, report.free_images) == (0, 0, 0)
    assert report.released_frozen > 0 and report.late_charges > 0, figures
