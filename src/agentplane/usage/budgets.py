"""Budgets: reserve the worst case before a call, journal the actual use with the
call's ledger rows, then settle the reservation to it.

All three budgets (session, API key, tenant month) are taken in one transaction by
one database function, so any number of processes can share them: PostgreSQL's row
locks and conditional updates are the only arbiter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

from agentplane.config import Settings
from agentplane.db.batcher import Batcher
from agentplane.db.errors import APP_ERRCODES
from agentplane.db.pool import Connection, Database
from agentplane.errors import AgentplaneError, DatabaseUnavailable, ValidationFailed
from agentplane.usage import store
from agentplane.usage.errors import BudgetUnavailable

log = logging.getLogger("agentplane.usage")


@dataclass
class Reservation:
    id: UUID | None
    """None when nothing is held: budgets off, or fail-open after the database failed."""
    tokens: int
    session_id: UUID | None
    api_key_id: UUID | None


class Budgets:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        # At most 32 reservations per statement: each is a subtransaction, and a transaction
        # with more than 64 makes every other session's snapshots slower.
        self._reserving: Batcher[tuple[int, UUID | None, UUID | None], UUID | AgentplaneError]
        self._reserving = Batcher(self._reserve_many, limit=32)

    async def reserve(
        self, tenant_id: UUID, tokens: int, *, session_id: UUID | None, api_key_id: UUID | None
    ) -> Reservation:
        """Reserve `tokens` on every budget that applies, or raise BudgetExceeded naming one."""
        if tokens < 0:
            raise ValidationFailed("tokens to reserve must not be negative")
        try:
            held = await self._reserving.submit(tenant_id, (tokens, session_id, api_key_id))
        except DatabaseUnavailable as exc:
            if self.settings.budget_fail_closed:
                raise BudgetUnavailable(
                    "the budget cannot be verified now, so the call is refused "
                    f"(AGENTPLANE_BUDGET_FAIL_CLOSED): {exc.detail}"
                ) from None
            log.warning("budget not verified, call allowed (fail-open): %s", exc.detail)
            held = None
        if isinstance(held, AgentplaneError):
            raise held
        return Reservation(held, tokens, session_id, api_key_id)

    async def _reserve_many(
        self, tenant_id: UUID, reservations: list[tuple[int, UUID | None, UUID | None]]
    ) -> list[UUID | AgentplaneError]:
        """Reservations asked for while another batch of the tenant's was being taken, in one
        statement; each one's result is its id or its refusal (BudgetExceeded...)."""
        ttl, lock_timeout = (
            self.settings.budget_reservation_ttl_s,
            self.settings.budget_lock_timeout_ms,
        )
        async with self.db.autocommit_connection() as conn:
            if len(reservations) == 1:
                # Alone: the plain function, without a batch's bookkeeping; a refusal is
                # raised, and the batcher hands it to the one caller.
                (tokens, session_id, api_key_id) = reservations[0]
                return [
                    await store.reserve(
                        conn, tenant_id, session_id, api_key_id, tokens, ttl, lock_timeout
                    )
                ]
            found = await store.reserve_many(conn, tenant_id, reservations, ttl, lock_timeout)
        return [
            UUID(r["id"]) if "id" in r else APP_ERRCODES[r["code"]](r["message"]) for r in found
        ]


    @staticmethod
    async def journal(conn: Connection, reservation: Reservation, used: int) -> None:
        """In the transaction writing the call's ledger rows: what the call used."""
        await store.journal(
            conn, reservation.id, reservation.session_id, reservation.api_key_id, used
        )

    @staticmethod
    async def settle_in(conn: Connection, tenant_id: UUID, reservation: Reservation) -> None:
        """Turn the reservation into its journaled use; without a journal entry, release it."""
        if reservation.id is not None:
            await store.settle(conn, tenant_id, reservation.id)

    @staticmethod
    async def settle_used_in(conn: Connection, reservations: list[tuple[Reservation, int]]) -> None:
        """In the transaction writing the calls' ledger rows: each reservation settled to what
        its call used (journal and settle in one; a call without a reservation has its use
        applied). The budget rows stay locked until that transaction ends."""
        if reservations:
            await store.settle_many(
                conn,
                [r.id for r, _ in reservations],
                [r.session_id for r, _ in reservations],
                [r.api_key_id for r, _ in reservations],
                [used for _, used in reservations],
            )

    async def settle(self, tenant_id: UUID, reservation: Reservation) -> None:
        """After the ledger commit. If this is lost, the sweeper settles the reservation later."""
        if reservation.id is None:
            return
        try:
            async with self.db.autocommit_connection() as conn:
                await store.settle(conn, tenant_id, reservation.id)
        except DatabaseUnavailable as exc:
            log.warning("reservation %s left to the sweeper: %s", reservation.id, exc.detail)

    async def release_expired(self) -> int:
        """Give back the reservations of callers that died mid-call (all tenants)."""
        async with self.db.admin_connection() as conn:
            return await store.release_expired(conn)
