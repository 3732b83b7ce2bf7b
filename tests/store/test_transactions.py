"""The test database adapter itself: real transactions, as Synapse runs them."""

from __future__ import annotations

import pytest

from tests.store.conftest import Backend, Txn


async def test_a_failing_function_writes_nothing(backend: Backend) -> None:
    def insert_then_fail(txn: Txn) -> None:
        txn.execute(
            "INSERT INTO syncv3_params (session_id, version, params) VALUES (?, ?, ?)",
            ("s1", 1, "{}"),
        )
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await backend.db.run_interaction("test", insert_then_fail)
    assert backend.db.count("syncv3_params") == 0


@pytest.mark.parametrize("empty_backend", ["postgres"], indirect=True)
def test_postgres_runs_at_repeatable_read(empty_backend: Backend) -> None:
    assert empty_backend.db.query("SHOW transaction_isolation") == [("repeatable read",)]
