"""Wallet use cases. A mutation runs in one unit of work: lock the accounts, replay the
operation if its ref was seen, else let the domain decide, then store events, projections,
journal and the operation record together. Every mutation is idempotent on its operation_ref.

With group commit on (the service's default, see group_commit.py), mutations that arrive
together share that unit of work; each is still decided, replayed or refused on its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from common.auth import SYSTEM, Principal, denied
from common.errors import (
    ConcurrentUpdate,
    DependencyUnavailable,
    DomainError,
    FieldViolation,
    ValidationError,
    require,
    retry_on_conflict,
)
from common.ids import new_id, parse_id
from common.money import Money, validate_currency
from common.uow import UnitOfWork as BaseUnitOfWork
from wallet_service import metrics
from wallet_service.domain import postings
from wallet_service.domain.account import Account, Limits
from wallet_service.domain.errors import AccountNotFound, HoldNotFound, OperationRefReused
from wallet_service.domain.fx import FxRate, parse_rate
from wallet_service.domain.holds import HoldStatus, HoldView
from wallet_service.domain.ledger import (
    AccountKind,
    Entry,
    LedgerTransaction,
    Operation,
    RecordedTransaction,
    SystemAccount,
)
from wallet_service.service_layer.group_commit import GroupCommit, Job

T = TypeVar("T")
DEFAULT_HOLD_TTL = timedelta(days=7)
# A hot account's writers queue on its row lock, so a lost race is rare (a stale load or a
# deadlock); a few retries absorb it, after which the caller sees ABORTED and may retry.
ATTEMPTS = 5


class WalletStore(Protocol):
    """What the use cases need of storage. Its locking and idempotency rules are written at
    the top of wallet_service.adapters.repository; writes are kept until the commit."""

    async def get(self, account_id: str) -> Account | None: ...
    async def lock(
        self, account_ids: Iterable[str], *, operation_refs: Iterable[str] = ()
    ) -> tuple[dict[str, Account], dict[str, Operation]]: ...
    async def find_opened(self, owner_id: str, open_ref: str) -> Account | None: ...
    async def add(self, account: Account) -> None: ...
    async def ensure_system(self, accounts: Iterable[SystemAccount]) -> None: ...
    async def save(self, accounts: Iterable[Account]) -> None: ...
    async def find_hold(self, hold_id: str) -> HoldView | None: ...
    async def accounts_with_expired_holds(self, now: datetime, *, limit: int) -> list[str]: ...
    async def add_transaction(self, txn: LedgerTransaction) -> None: ...
    async def get_transaction(self, transaction_id: str) -> LedgerTransaction | None: ...
    async def transactions_by_refs(self, refs: Sequence[str]) -> list[RecordedTransaction]: ...
    async def list_transactions(
        self, *, created_after: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[RecordedTransaction]:
        """Transactions created at or after `created_after`, in (created_at, transaction_id)
        order, strictly after the cursor `after`."""
        ...

    async def list_entries(
        self, account_id: str, *, limit: int, after_seq: int
    ) -> list[tuple[int, Entry, str, datetime]]: ...
    async def add_operation(self, operation: Operation) -> None: ...
    async def latest_rate(self, base: str, quote: str) -> FxRate | None: ...
    async def add_rate(self, rate: FxRate) -> None: ...


class UnitOfWork(BaseUnitOfWork, Protocol):
    @property
    def accounts(self) -> WalletStore: ...


# Refs per GetTransactions call, and transactions per ListTransactions page at most.
MAX_REFS = 500
MAX_TRANSACTION_PAGE = 500


@dataclass(frozen=True, slots=True)
class TransactionPage:
    transactions: list[RecordedTransaction]
    next_page_token: str


def _transaction_cursor(txn: RecordedTransaction) -> str:
    return f"{txn.created_at.isoformat()}|{txn.transaction_id}"


def _parse_transaction_cursor(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    stamp, _, transaction_id = token.partition("|")
    try:
        return datetime.fromisoformat(stamp), parse_id(transaction_id, "page_token")
    except (ValueError, ValidationError):
        raise ValidationError(FieldViolation("page_token", "is not a valid token")) from None


@dataclass(frozen=True, slots=True)
class EntryPage:
    entries: list[tuple[Entry, str, datetime]]
    next_page_token: str


def hold_to_json(view: HoldView) -> dict[str, Any]:
    return {
        "hold_id": view.hold_id,
        "account_id": view.account_id,
        "amount_minor": view.amount.amount_minor,
        "captured_minor": view.captured.amount_minor,
        "currency": view.amount.currency,
        "status": view.status.value,
        "expires_at": view.expires_at.isoformat(),
        "reference": view.reference,
    }


def hold_from_json(data: dict[str, Any]) -> HoldView:
    return HoldView(
        hold_id=data["hold_id"],
        account_id=data["account_id"],
        amount=Money(data["amount_minor"], data["currency"]),
        captured=Money(data["captured_minor"], data["currency"]),
        status=HoldStatus(data["status"]),
        expires_at=datetime.fromisoformat(data["expires_at"]),
        reference=data["reference"],
    )


def _fingerprint(*parts: object) -> str:
    return "|".join(str(p) for p in parts)


def _money(amount: Money | None) -> str:
    return "-" if amount is None else f"{amount.amount_minor} {amount.currency}"


Action = Callable[[UnitOfWork, dict[str, Account]], Awaitable[tuple[T, dict[str, Any]]]]
Replay = Callable[[UnitOfWork, dict[str, Any]], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class _Spec:
    """One mutation: its ref and fingerprint, the accounts it locks, what it does."""

    operation_ref: str
    kind: str
    fingerprint: str
    account_ids: list[str]
    act: Action[Any]
    replay: Replay[Any]


def _unwrap(outcome: Any) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class WalletService:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        *,
        limits: Limits | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        attempts: int = ATTEMPTS,
        group_commit: bool = False,
    ) -> None:
        self._uow = uow
        self._limits = limits or Limits()
        self._clock = clock
        self._attempts = attempts
        self._group = GroupCommit(self._run_batch, self._run_alone) if group_commit else None

    # -- the one shape of every mutation -------------------------------------------------

    async def _operate(
        self,
        *,
        operation_ref: str,
        kind: str,
        fingerprint: str,
        account_ids: list[str],
        act: Action[T],
        replay: Replay[T],
    ) -> T:
        spec = _Spec(operation_ref, kind, fingerprint, account_ids, act, replay)
        started = time.perf_counter()
        try:
            result: T = await self._perform(spec)
        except Exception as exc:
            metrics.observe(kind, exc, started)
            raise
        metrics.observe(kind, None, started)
        return result

    async def _perform(self, spec: _Spec) -> Any:
        if self._group is not None:
            return await self._group.submit(spec)

        async def attempt() -> Any:
            async with self._uow() as uow:
                outcome = await self._decide_all(uow, [spec])
                await uow.commit()
            return _unwrap(outcome[0])

        return await retry_on_conflict(attempt, attempts=self._attempts)

    async def _run_batch(self, jobs: list[Job]) -> None:
        """Decides every job in one unit of work and commits them together."""
        async with self._uow() as uow:
            outcomes = await self._decide_all(uow, [job.spec for job in jobs])
            await uow.commit()
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                job.fail(outcome)
            else:
                job.settle(outcome)

    async def _run_alone(self, jobs: list[Job]) -> None:
        (job,) = jobs

        async def attempt() -> Any:
            async with self._uow() as uow:
                outcome = await self._decide_all(uow, [job.spec])
                await uow.commit()
            return _unwrap(outcome[0])

        job.settle(await retry_on_conflict(attempt, attempts=self._attempts))

    async def _decide_all(self, uow: UnitOfWork, specs: list[_Spec]) -> list[Any]:
        """Locks every account involved, then decides each request in arrival order. A
        request refused by the domain leaves no trace and answers with its error."""
        accounts, previous = await uow.accounts.lock(
            [a for spec in specs for a in spec.account_ids],
            operation_refs=[spec.operation_ref for spec in specs],
        )
        decided: dict[str, tuple[_Spec, Any]] = {}
        outcomes: list[Any] = []
        for spec in specs:
            try:
                outcomes.append(await self._decide(uow, spec, accounts, previous, decided))
            except DomainError as exc:
                if isinstance(exc, ConcurrentUpdate | DependencyUnavailable):
                    raise
                outcomes.append(exc)
        await uow.accounts.save(accounts.values())
        return outcomes

    async def _decide(
        self,
        uow: UnitOfWork,
        spec: _Spec,
        accounts: dict[str, Account],
        previous: dict[str, Operation],
        decided: dict[str, tuple[_Spec, Any]],
    ) -> Any:
        recorded = previous.get(spec.operation_ref)
        if recorded is not None:
            if (recorded.kind, recorded.fingerprint) != (spec.kind, spec.fingerprint):
                raise OperationRefReused(spec.operation_ref)
            return await spec.replay(uow, recorded.result)
        if spec.operation_ref in decided:  # the same ref twice in one batch
            first, result = decided[spec.operation_ref]
            if (first.kind, first.fingerprint) != (spec.kind, spec.fingerprint):
                raise OperationRefReused(spec.operation_ref)
            return result
        for account_id in spec.account_ids:
            if account_id not in accounts:
                raise AccountNotFound(account_id)
        result, stored = await spec.act(uow, accounts)
        await uow.accounts.add_operation(
            Operation(spec.operation_ref, spec.kind, spec.fingerprint, stored)
        )
        decided[spec.operation_ref] = (spec, result)
        return result

    @staticmethod
    async def _replay_transaction(uow: UnitOfWork, stored: dict[str, Any]) -> LedgerTransaction:
        txn = await uow.accounts.get_transaction(stored["transaction_id"])
        if txn is None:  # pragma: no cover - the journal is append-only
            raise AssertionError("an operation's transaction vanished")
        return txn

    @staticmethod
    async def _replay_hold(uow: UnitOfWork, stored: dict[str, Any]) -> HoldView:
        return hold_from_json(stored["hold"])

    @staticmethod
    async def _replay_account(uow: UnitOfWork, stored: dict[str, Any]) -> Account:
        account = await uow.accounts.get(stored["account_id"])
        if account is None:  # pragma: no cover - accounts are never deleted
            raise AccountNotFound(stored["account_id"])
        return account

    # -- accounts ------------------------------------------------------------------------

    async def open_account(
        self, *, owner_id: str, currency: str, operation_ref: str, caller: Principal = SYSTEM
    ) -> Account:
        require(owner_id, "owner_id")
        if not caller.may_act_for(owner_id):
            raise denied("open an account for another owner")
        require(operation_ref, "operation_ref")
        validate_currency(currency)

        async def attempt() -> Account:
            async with self._uow() as uow:
                existing = await uow.accounts.find_opened(owner_id, operation_ref)
                if existing is not None:
                    if existing.currency != currency:
                        # The ref opened a different account: a reuse, like any other.
                        raise OperationRefReused(operation_ref)
                    return existing
                account = Account.open(owner_id=owner_id, currency=currency, open_ref=operation_ref)
                await uow.accounts.ensure_system([SystemAccount.clearing(currency)])
                await uow.accounts.add(account)
                await uow.commit()
                return account

        return await retry_on_conflict(attempt, attempts=self._attempts)

    async def get_account(
        self,
        account_id: str,
        *,
        caller: Principal = SYSTEM,
        may: Callable[[Principal, str], bool] = Principal.may_read,
    ) -> Account:
        """The account, if the caller may read it (or do `may` with it). To a caller who may
        not, an account that does not exist is refused alike (no probing of ids)."""
        account_id = parse_id(account_id, "account_id")
        async with self._uow() as uow:
            account = await uow.accounts.get(account_id)
        if account is None or account.kind is not AccountKind.CUSTOMER:
            # `may` asked of no owner at all: what the caller's role allows, whoever owns it.
            if may(caller, ""):
                raise AccountNotFound(account_id)
            account = None
        if account is None or not may(caller, account.owner_id):
            raise denied(
                "read this account" if may is Principal.may_read else "change this account"
            )
        return account

    async def freeze(self, *, operation_ref: str, account_id: str) -> Account:
        return await self._lifecycle("freeze", operation_ref, account_id, Account.freeze)

    async def unfreeze(self, *, operation_ref: str, account_id: str) -> Account:
        return await self._lifecycle("unfreeze", operation_ref, account_id, Account.unfreeze)

    async def close(
        self, *, operation_ref: str, account_id: str, caller: Principal = SYSTEM
    ) -> Account:
        await self.get_account(account_id, caller=caller, may=Principal.may_support)
        return await self._lifecycle("close", operation_ref, account_id, Account.close)

    async def _lifecycle(
        self, kind: str, operation_ref: str, account_id: str, change: Callable[[Account, str], None]
    ) -> Account:
        require(operation_ref, "operation_ref")
        account_id = parse_id(account_id, "account_id")

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[Account, dict[str, Any]]:
            account = accounts[account_id]
            change(account, operation_ref)
            return account, {"account_id": account_id}

        return await self._operate(
            operation_ref=operation_ref,
            kind=kind,
            fingerprint=account_id,
            account_ids=[account_id],
            act=act,
            replay=self._replay_account,
        )

    # -- money in and out ----------------------------------------------------------------

    async def credit(
        self,
        *,
        operation_ref: str,
        account_id: str,
        amount: Money,
        description: str = "",
        provider: str = "",
    ) -> LedgerTransaction:
        return await self._move(
            "credit", postings.credit, operation_ref, account_id, amount, description, provider
        )

    async def debit(
        self,
        *,
        operation_ref: str,
        account_id: str,
        amount: Money,
        description: str = "",
        provider: str = "",
    ) -> LedgerTransaction:
        return await self._move(
            "debit", postings.debit, operation_ref, account_id, amount, description, provider
        )

    async def _move(
        self,
        kind: str,
        posting: Callable[..., LedgerTransaction],
        operation_ref: str,
        account_id: str,
        amount: Money,
        description: str,
        provider: str,
    ) -> LedgerTransaction:
        require(operation_ref, "operation_ref")
        account_id = parse_id(account_id, "account_id")
        if provider:
            require(provider, "provider", max_length=64)

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[LedgerTransaction, dict[str, Any]]:
            txn = posting(
                accounts[account_id],
                amount,
                operation_ref=operation_ref,
                limits=self._limits,
                provider=provider,
                description=description,
            )
            await uow.accounts.ensure_system([SystemAccount.clearing(amount.currency, provider)])
            await uow.accounts.add_transaction(txn)
            return txn, {"transaction_id": txn.transaction_id}

        return await self._operate(
            operation_ref=operation_ref,
            kind=kind,
            fingerprint=_fingerprint(account_id, _money(amount), provider),
            account_ids=[account_id],
            act=act,
            replay=self._replay_transaction,
        )

    async def transfer(
        self,
        *,
        operation_ref: str,
        source_account_id: str,
        destination_account_id: str,
        amount: Money,
        reference: str = "",
        fee: Money | None = None,
    ) -> LedgerTransaction:
        require(operation_ref, "operation_ref")
        source_id = parse_id(source_account_id, "source_account_id")
        destination_id = parse_id(destination_account_id, "destination_account_id")
        if source_id == destination_id:
            raise ValidationError(
                FieldViolation("destination_account_id", "must differ from source_account_id")
            )

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[LedgerTransaction, dict[str, Any]]:
            source, destination = accounts[source_id], accounts[destination_id]
            rate = None
            if source.currency != destination.currency:
                rate = await uow.accounts.latest_rate(source.currency, destination.currency)
            txn = postings.transfer(
                source,
                destination,
                amount,
                operation_ref=operation_ref,
                limits=self._limits,
                rate=rate,
                fee=fee,
                description=reference,
            )
            await uow.accounts.ensure_system(self._system_accounts(source, destination, fee))
            await uow.accounts.add_transaction(txn)
            return txn, {"transaction_id": txn.transaction_id}

        return await self._operate(
            operation_ref=operation_ref,
            kind="transfer",
            fingerprint=_fingerprint(source_id, destination_id, _money(amount), _money(fee)),
            account_ids=[source_id, destination_id],
            act=act,
            replay=self._replay_transaction,
        )

    @staticmethod
    def _system_accounts(
        source: Account, destination: Account, fee: Money | None
    ) -> list[SystemAccount]:
        system = []
        if source.currency != destination.currency:
            system += [SystemAccount.fx(source.currency), SystemAccount.fx(destination.currency)]
        if fee is not None:
            system.append(SystemAccount.fees(fee.currency))
        return system

    # -- holds ---------------------------------------------------------------------------

    async def place_hold(
        self,
        *,
        operation_ref: str,
        account_id: str,
        amount: Money,
        expires_at: datetime | None = None,
        reference: str = "",
    ) -> HoldView:
        require(operation_ref, "operation_ref")
        account_id = parse_id(account_id, "account_id")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ValidationError(FieldViolation("expires_at", "must be in the future"))
        until = expires_at or now + DEFAULT_HOLD_TTL

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[HoldView, dict[str, Any]]:
            hold_id = new_id()
            accounts[account_id].place_hold(
                hold_id=hold_id,
                amount=amount,
                expires_at=until,
                reference=reference,
                operation_ref=operation_ref,
                limits=self._limits,
            )
            view = HoldView(
                hold_id,
                account_id,
                amount,
                Money(0, amount.currency),
                HoldStatus.OPEN,
                until,
                reference,
            )
            return view, {"hold": hold_to_json(view)}

        return await self._operate(
            operation_ref=operation_ref,
            kind="place_hold",
            fingerprint=_fingerprint(
                account_id, _money(amount), expires_at.isoformat() if expires_at else "-", reference
            ),
            account_ids=[account_id],
            act=act,
            replay=self._replay_hold,
        )

    async def capture_hold(
        self,
        *,
        operation_ref: str,
        hold_id: str,
        amount: Money | None = None,
        provider: str = "",
    ) -> LedgerTransaction:
        require(operation_ref, "operation_ref")
        hold = await self.get_hold(hold_id)

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[LedgerTransaction, dict[str, Any]]:
            account = accounts[hold.account_id]
            txn = postings.capture(
                account,
                hold.hold_id,
                amount,
                operation_ref=operation_ref,
                now=self._clock(),
                provider=provider,
            )
            await uow.accounts.ensure_system([SystemAccount.clearing(account.currency, provider)])
            await uow.accounts.add_transaction(txn)
            return txn, {"transaction_id": txn.transaction_id}

        return await self._operate(
            operation_ref=operation_ref,
            kind="capture_hold",
            fingerprint=_fingerprint(hold.hold_id, _money(amount), provider),
            account_ids=[hold.account_id],
            act=act,
            replay=self._replay_transaction,
        )

    async def release_hold(self, *, operation_ref: str, hold_id: str) -> HoldView:
        require(operation_ref, "operation_ref")
        hold = await self.get_hold(hold_id)

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[HoldView, dict[str, Any]]:
            accounts[hold.account_id].release_hold(hold.hold_id, operation_ref)
            view = HoldView(
                hold.hold_id,
                hold.account_id,
                hold.amount,
                hold.captured,
                HoldStatus.RELEASED,
                hold.expires_at,
                hold.reference,
            )
            return view, {"hold": hold_to_json(view)}

        return await self._operate(
            operation_ref=operation_ref,
            kind="release_hold",
            fingerprint=hold.hold_id,
            account_ids=[hold.account_id],
            act=act,
            replay=self._replay_hold,
        )

    async def get_hold(self, hold_id: str, *, caller: Principal = SYSTEM) -> HoldView:
        hold_id = parse_id(hold_id, "hold_id")
        async with self._uow() as uow:
            hold = await uow.accounts.find_hold(hold_id)
        if caller.is_operator:
            if hold is None:
                raise HoldNotFound(hold_id)
            return hold
        if hold is None:
            raise denied("read this hold")
        await self.get_account(hold.account_id, caller=caller)
        return hold

    async def expire_holds(self, *, limit: int = 100) -> list[str]:
        """Releases every hold past its expiry, one account per transaction. Safe to run on
        several replicas at once: each account is re-checked under its lock."""
        now = self._clock()
        async with self._uow() as uow:
            account_ids = await uow.accounts.accounts_with_expired_holds(now, limit=limit)
        expired: list[str] = []
        for account_id in account_ids:
            expired += await retry_on_conflict(
                lambda account_id=account_id: self._expire(account_id, now),  # type: ignore[misc]
                attempts=self._attempts,
            )
        return expired

    async def _expire(self, account_id: str, now: datetime) -> list[str]:
        async with self._uow() as uow:
            accounts, _ = await uow.accounts.lock([account_id])
            account = accounts.get(account_id)
            if account is None:
                return []
            expired = account.expire_holds(now)
            await uow.accounts.save([account])
            await uow.commit()
            return expired

    # -- reading -------------------------------------------------------------------------

    async def list_entries(
        self, account_id: str, *, page_size: int, page_token: str, caller: Principal = SYSTEM
    ) -> EntryPage:
        account = await self.get_account(account_id, caller=caller)
        size = page_size or 100
        if not 1 <= size <= 500:
            raise ValidationError(FieldViolation("page_size", "must be between 1 and 500"))
        try:
            after = int(page_token or "0")
        except ValueError:
            raise ValidationError(FieldViolation("page_token", "is not a valid token")) from None
        async with self._uow() as uow:
            rows = await uow.accounts.list_entries(account.account_id, limit=size, after_seq=after)
        token = str(rows[-1][0]) if len(rows) == size else ""
        return EntryPage([(entry, txn, at) for _, entry, txn, at in rows], token)

    async def get_transactions(self, operation_refs: Sequence[str]) -> list[RecordedTransaction]:
        """The journal's transactions under these refs, as stored (refs with none are left
        out): one read for a whole page of a reconciliation."""
        refs = sorted(set(operation_refs))
        if len(refs) > MAX_REFS:
            raise ValidationError(
                FieldViolation("operation_refs", f"must name at most {MAX_REFS} refs")
            )
        for ref in refs:
            require(ref, "operation_refs", max_length=256)
        if not refs:
            return []
        async with self._uow() as uow:
            return await uow.accounts.transactions_by_refs(refs)

    async def list_transactions(
        self, *, created_after: datetime | None, page_size: int, page_token: str
    ) -> TransactionPage:
        """The journal in (created_at, transaction_id) order from `created_after`, a page at
        a time, each transaction with its entries as stored."""
        size = page_size or 100
        if not 1 <= size <= MAX_TRANSACTION_PAGE:
            raise ValidationError(
                FieldViolation("page_size", f"must be between 1 and {MAX_TRANSACTION_PAGE}")
            )
        after = _parse_transaction_cursor(page_token)
        since = created_after or datetime.min.replace(tzinfo=UTC)
        async with self._uow() as uow:
            txns = await uow.accounts.list_transactions(
                created_after=since, after=after, limit=size
            )
        token = _transaction_cursor(txns[-1]) if len(txns) == size else ""
        return TransactionPage(txns, token)

    # -- FX rates ------------------------------------------------------------------------

    async def set_rate(
        self, *, base: str, quote: str, rate: str, source: str, as_of: datetime | None = None
    ) -> FxRate:
        validate_currency(base, field="base")
        validate_currency(quote, field="quote")
        if base == quote:
            raise ValidationError(FieldViolation("quote", "must differ from base"))
        require(source, "source")
        fx = FxRate(base, quote, parse_rate(rate), source, as_of or self._clock())
        async with self._uow() as uow:
            await uow.accounts.add_rate(fx)
            await uow.commit()
        return fx
