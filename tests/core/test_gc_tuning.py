"""The server process freezes its start-up heap and raises the first GC threshold once it is up."""

from __future__ import annotations

import gc
from pathlib import Path

from fastapi.testclient import TestClient

from cds_service import gc_tuning
from cds_service.app import create_app
from cds_service.settings import Settings


def test_after_start_up_the_loaded_heap_is_frozen_and_gen0_threshold_raised(tmp_path: Path) -> None:
    app = create_app(Settings(auth_mode="off", database_url=f"sqlite:///{tmp_path}/t.db"))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        # Value sets, policy and services were loaded before the freeze: the collector no longer walks them.
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == gc_tuning.GEN0_THRESHOLD


def test_settle_heap_runs_once_per_process() -> None:
    gc_tuning.settle_heap()
    assert gc_tuning.settle_heap() is False
