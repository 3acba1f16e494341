"""Acknowledged feedback survives crashes: of the writing process, and of the PostgreSQL server.

`save_feedback` returning is the moment the endpoint answers 200; these tests crash things with
SIGKILL (no clean shutdown, no atexit, no flush) immediately after that moment and then look for
the row with a fresh Store, as the restarted service would.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_service.persistence import UNATTRIBUTED, Store, StoreUnavailable
from tests.persistence.conftest import launch_or_skip
from tests.persistence.helpers import card_id, fb

REPO = Path(__file__).resolve().parents[2]

# Runs in a separate interpreter; prints the marker only after save_feedback has returned, then
# idles so that the test, not the script, decides when it dies.
WRITER = """
import sys, time
from datetime import UTC, datetime
from cds_service.models import FeedbackItem
from cds_service.persistence import Store
store = Store(sys.argv[1])
item = FeedbackItem.model_validate(
    {"card": sys.argv[2], "outcome": "overridden", "outcomeTimestamp": "2025-05-01T14:03:22Z",
     "overrideReason": {"reason": {"system": "s", "code": "palliative"}}}
)
n = store.save_feedback("va-safety", [item], datetime.now(UTC))
print(f"SAVED {n}", flush=True)
time.sleep(600)
"""


def _wait_for_line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The writer's first stdout line; on silence or a crash, fail with its stderr."""
    assert proc.stdout is not None and proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("SAVED"):
        proc.kill()
        proc.wait(timeout=30)
        raise AssertionError(f"writer did not report a save (got {line!r}); stderr:\n{proc.stderr.read()}")
    return line


def test_feedback_survives_sigkill_of_the_writer(store: Store, db_url: str) -> None:
    card = card_id()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, db_url, card],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _wait_for_line(proc)
        os.kill(proc.pid, signal.SIGKILL)  # right after the "200"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert line == "SAVED 1"
    assert proc.returncode == -signal.SIGKILL

    fresh = Store(db_url)
    try:
        # Already there: resending the same feedback stores nothing new...
        assert fresh.save_feedback("va-safety", [fb(card)], datetime.now(UTC)) == 0
        # ...and it is counted (as feedback for a card we never audited) with its reason.
        (row,) = [s for s in fresh.override_report(None) if s.rule_id == UNATTRIBUTED]
        assert (row.overridden, row.top_reasons) == (1, (("palliative", 1),))
    finally:
        fresh.close()


@pytest.mark.postgres
def test_feedback_survives_sigkill_of_the_postgres_server(tmp_path: Path) -> None:
    server = launch_or_skip(tmp_path)  # a private server: this test crashes it
    try:
        url = server.create_database("crash")
        store = Store(url)
        store.upgrade()
        card = card_id()
        assert store.save_feedback("va-safety", [fb(card)], datetime.now(UTC)) == 1

        server.kill()  # SIGKILL postmaster and backends right after the commit returned

        # While it is down, feedback is refused (the endpoint answers 503 and the EHR retries).
        assert store.ping() is False
        with pytest.raises(StoreUnavailable):
            store.save_feedback("va-safety", [fb(card_id())], datetime.now(UTC))

        server.start()  # crash recovery replays the WAL

        fresh = Store(url)
        try:
            assert fresh.save_feedback("va-safety", [fb(card)], datetime.now(UTC)) == 0  # it is there
            (row,) = [s for s in fresh.override_report(None) if s.rule_id == UNATTRIBUTED]
            assert row.overridden == 1
        finally:
            fresh.close()
        # The long-lived store recovers by itself (pool_pre_ping drops the dead connections).
        assert store.ping() is True
        assert store.save_feedback("va-safety", [fb(card_id())], datetime.now(UTC)) == 1
        store.close()
    finally:
        server.stop()
