"""The session store's statements over a device's to-device deletions, under the
per-device guard (SPEC §8 across processes). A mixin of
:class:`~synapse_syncv3.store.SessionStore`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from synapse_syncv3.core.acks import deletable_up_to
from synapse_syncv3.schema import RunInteraction

#: Namespace (first key) of the per-device advisory locks on PostgreSQL ("SV3D").
DEVICE_LOCK_CLASS = 0x53563344


class DeviceGuardStatements:
    """Confirmations of a device's sessions and the deletions they allow.

    **The per-device guard** (SPEC §8 across processes). Creating a session and
    (re)starting a session's to_device stream add a session that has confirmed
    nothing; "confirm, compute the minimum" decides a deletion, which Synapse's own
    routine then carries out in transactions of its own. Two rules make this safe
    when several processes serve one device:

    * every transaction that adds such a session or decides a deletion first takes
      a per-device lock (PostgreSQL: ``pg_advisory_xact_lock`` at READ COMMITTED, so
      that it sees everything committed by the previous holder; SQLite has one
      connection, which serialises transactions anyway), so a decision either sees
      the new session (and deletes nothing) or comes before it;
    * a decision is recorded as a pending deletion in the same transaction, and
      removed once Synapse has deleted (:meth:`deletion_done`). A session added
      after the decision gets the pending deletion back and has it carried out
      before it reads the inbox, so that it never hands out a message that the
      earlier decision is about to delete.
    """

    _run: RunInteraction
    _postgres: bool
    _inbox_sql: str | None

    async def to_device_confirmations(
        self, user_id: str, device_id: str, now_ms: int, ttl_ms: int
    ) -> list[int | None]:
        return await self._run(  # type: ignore[no-any-return]
            "syncv3_to_device_confirmations",
            self._confirmations_txn,
            user_id,
            device_id,
            now_ms,
            ttl_ms,
        )

    async def decide_deletion(
        self, user_id: str, device_id: str, now_ms: int, ttl_ms: int
    ) -> int | None:
        """Under the per-device guard, the position up to which every counting
        session of the device has confirmed, recorded as a pending deletion; None if
        nothing may (or needs to) be deleted. Carry it out, then :meth:`deletion_done`."""

        def txn_func(txn: Any) -> int | None:
            self._lock_device_txn(txn, user_id, device_id)
            confirmations = self._confirmations_txn(txn, user_id, device_id, now_ms, ttl_ms)
            return self._decide_deletion_txn(txn, user_id, device_id, confirmations)

        return await self._run("syncv3_decide_deletion", txn_func)  # type: ignore[no-any-return]

    async def deletion_done(self, user_id: str, device_id: str, up_to: int) -> None:
        """Synapse has deleted the device's messages up to ``up_to``: pending
        deletions up to there are done."""

        def txn_func(txn: Any) -> None:
            self._read_committed_txn(txn)  # two processes may finish the same deletion
            txn.execute(
                "DELETE FROM syncv3_to_device_deletions"
                " WHERE user_id = ? AND device_id = ? AND up_to <= ?",
                (user_id, device_id, up_to),
            )

        await self._run("syncv3_deletion_done", txn_func)

    def _read_committed_txn(self, txn: Any) -> None:
        """Run the rest of the transaction at READ COMMITTED (PostgreSQL; first
        statement only). For single-statement writes that concurrent requests make to
        the same rows: two requests of one session (a client that closed a request and
        sent it again at once) both update its ``last_used_ts``, two processes finish
        the same pending deletion. At Synapse's REPEATABLE READ the second fails with a
        serialization error and is retried (up to five times, then a 500); at READ
        COMMITTED it waits for the first and re-checks its condition."""
        if self._postgres:
            txn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")

    def _lock_device_txn(self, txn: Any, user_id: str, device_id: str) -> None:
        """The per-device guard; must come first in its transaction."""
        if not self._postgres:
            return  # SQLite: one connection, transactions are serialised already
        # READ COMMITTED: each statement after the lock sees what the previous holder
        # committed (at REPEATABLE READ the snapshot would be taken before the wait).
        txn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        txn.execute(
            "SELECT pg_advisory_xact_lock(?, ?)",
            (DEVICE_LOCK_CLASS, _device_lock_key(user_id, device_id)),
        )

    def _decide_deletion_txn(
        self, txn: Any, user_id: str, device_id: str, confirmations: list[int | None]
    ) -> int | None:
        up_to = deletable_up_to(confirmations)
        if up_to is None:
            return None
        if self._inbox_sql is not None:
            txn.execute(self._inbox_sql, (user_id, device_id, up_to))
            if txn.fetchone() is None:
                return None  # nothing left to delete: no pending deletion either
        txn.execute(
            "INSERT INTO syncv3_to_device_deletions (user_id, device_id, up_to)"
            " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (user_id, device_id, up_to),
        )
        return up_to

    @staticmethod
    def _pending_deletion_txn(txn: Any, user_id: str, device_id: str) -> int | None:
        txn.execute(
            "SELECT MAX(up_to) FROM syncv3_to_device_deletions WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
        row = txn.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    @staticmethod
    def _confirmations_txn(
        txn: Any, user_id: str, device_id: str, now_ms: int, ttl_ms: int
    ) -> list[int | None]:
        # Live sessions of the device that request to_device (SPEC §8.1); expired ones
        # stop counting the moment they expire, before any sweep (§8.2 rule 5).
        txn.execute(
            "SELECT to_device_confirmed FROM syncv3_sessions"
            " WHERE user_id = ? AND device_id = ? AND wants_to_device = 1 AND last_used_ts >= ?",
            (user_id, device_id, now_ms - ttl_ms),
        )
        return [None if row[0] is None else int(row[0]) for row in txn.fetchall()]


def _device_lock_key(user_id: str, device_id: str) -> int:
    """The second key of the device's advisory lock: 32 bits of a hash (a collision
    only makes two devices wait for each other)."""
    digest = hashlib.sha256(f"{user_id}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)
