"""Payment use cases. The deposit saga persists each step before making the next call, and
every downstream call carries a key derived from the payment, so a retried request, a
redelivered event or a resumed saga never applies a step twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import structlog

from common.auth import SYSTEM, Principal, denied
from common.errors import (
    DependencyUnavailable,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    ValidationError,
    require,
    retry_on_conflict,
)
from common.faults import crash_point
from common.ids import new_id, parse_id
from common.money import Money
from payment_service.domain.errors import ProviderOutcomeUnknown, Refused, RequestInFlight
from payment_service.domain.model import Payment
from payment_service.domain.recovery import (
    RecoveryAction,
    RecoveryOutcome,
    RecoveryRequest,
    RecoveryResult,
)
from payment_service.domain.requests import (
    DepositRequest,
    IdempotencyClaim,
    PaymentFilter,
    RefundRequest,
    TransferRequest,
    WithdrawalRequest,
)
from payment_service.domain.saga import ProviderAnswer, ProviderCall
from payment_service.domain.status import PaymentKind, PaymentStatus
from payment_service.domain.trail import PaymentStep, StatusChange
from payment_service.service_layer.ports import (
    AccountInfo,
    ChangeFeed,
    GatewayPort,
    ProviderResult,
    UnitOfWork,
    WalletPort,
)

log = structlog.get_logger(__name__)

# Request-path steps an outage interrupted that one process retries itself (`resume_deferred`).
MAX_DEFERRED = 10_000
DEFERRED_AT_ONCE = 16

WATCH_RECHECK_S = 5.0
# A repeated idempotency key whose first request is still in flight waits this long for its
# answer before it is ABORTED (IDEMPOTENCY_REQUEST_IN_FLIGHT) with a retry hint.
IN_FLIGHT_WAIT_S = 2.0
IN_FLIGHT_POLL_S = 0.05

CreateRequest: TypeAlias = DepositRequest | WithdrawalRequest | TransferRequest | RefundRequest
Refusal: TypeAlias = tuple[str, FailedPrecondition | NotFound]

DEFAULT_PAYMENT_METHOD = "pm_card_ok"


def page_params(page_size: int, page_token: str) -> tuple[int, int | None]:
    """A listing's page size (1-100, 50 when unset) and cursor (a sequence number)."""
    size = page_size or 50
    if not 1 <= size <= 100:
        raise ValidationError(FieldViolation("page_size", "must be between 1 and 100"))
    try:
        return size, int(page_token) if page_token else None
    except ValueError:
        raise ValidationError(FieldViolation("page_token", "is not a valid token")) from None


async def _made(payment: Payment) -> Payment:
    return payment


async def save_settling_refunds(uow: UnitOfWork, payment: Payment) -> None:
    """Saves the payment; a refund that has just ended settles on its deposit in the same
    transaction (moving it to partially_refunded or refunded, or freeing its reservation).
    The refund is locked before its deposit, here as everywhere."""
    if payment.settles_refund():
        deposit = await uow.payments.get(payment.parent_payment_id, for_update=True)
        if deposit is not None:
            deposit.settle_refund(payment)
            await uow.payments.save(deposit)
    await uow.payments.save(payment)


@dataclass(frozen=True, slots=True)
class RecoveryRecord:
    """What an attempt of the recovery worker achieved, the payment after it, and the attempt's
    entry in the audit trail (None when there was nothing to do)."""

    outcome: RecoveryOutcome
    payment: Payment
    step: PaymentStep | None


def _recorded_outcome(step: PaymentStep) -> RecoveryOutcome:
    return RecoveryOutcome(step.data.get("outcome", RecoveryOutcome.UNKNOWN.value))


def _attempt_in(steps: list[PaymentStep], attempt_id: str) -> PaymentStep | None:
    """The recovery attempt `attempt_id` in a payment's audit trail, if it was noted."""
    return next(
        (
            s
            for s in steps
            if s.event_type.startswith("recovery.") and s.data.get("attempt_id") == attempt_id
        ),
        None,
    )


@dataclass(frozen=True, slots=True)
class PaymentPage:
    payments: list[Payment]
    next_page_token: str


class AccountDirectory:
    """Account currencies and owners, cached: neither ever changes, so after the first look-up
    CreateDeposit needs no call to the wallet on its request path. Only accounts that exist
    are cached; the cache is bounded (least recently used entries go first)."""

    def __init__(self, wallet: WalletPort, *, max_entries: int = 100_000) -> None:
        self._wallet = wallet
        self._max_entries = max_entries
        self._accounts: OrderedDict[str, AccountInfo] = OrderedDict()

    async def info(self, account_id: str) -> AccountInfo:
        info = self._accounts.get(account_id)
        if info is None:
            info = await self._wallet.get_account(account_id)
            self._accounts[account_id] = info
            if len(self._accounts) > self._max_entries:
                self._accounts.popitem(last=False)
        else:
            self._accounts.move_to_end(account_id)
        return info

    async def currency_of(self, account_id: str) -> str:
        return (await self.info(account_id)).currency


class PaymentService:
    def __init__(
        self,
        *,
        uow: Callable[[], UnitOfWork],
        wallet: WalletPort,
        gateway: GatewayPort,
        in_flight_wait_s: float = IN_FLIGHT_WAIT_S,
    ) -> None:
        self._uow = uow
        self._accounts = AccountDirectory(wallet)
        self._wallet = wallet
        self._gateway = gateway
        # Payments whose request-path step (hold, transfer) an outage interrupted: committed
        # and initiated, so they move on once it is over (`resume_deferred`), not at the
        # resume sweep's threshold. In memory: a restart's start-up sweep covers them.
        self._deferred: set[str] = set()
        self._in_flight_wait_s = in_flight_wait_s

    # -- creating payments: one commit, then (withdrawals, refunds, transfers) the wallet ----

    async def create_deposit(
        self,
        *,
        idempotency_key: str,
        account_id: str,
        amount: Money,
        payment_method: str,
        caller: Principal = SYSTEM,
    ) -> Payment:
        """Records the deposit and answers: one transaction (payment, audit row, outbox row),
        no provider call. The charge runs asynchronously from the `payment.initiated` event
        (`ask_provider`), so the caller gets `initiated` and a crash after the commit loses
        nothing."""
        request = DepositRequest(
            idempotency_key=require(idempotency_key, "idempotency_key"),
            account_id=parse_id(account_id, "account_id"),
            amount=amount,
            payment_method=require(payment_method or DEFAULT_PAYMENT_METHOD, "payment_method"),
            caller=caller.subject,
        )
        await self._authorize(caller, request.account_id, "deposit to this account")
        await self._check_currency(request.account_id, amount, "amount.currency")
        payment, _ = await self._create(
            request, lambda _, pid: _made(Payment.deposit(request, pid))
        )
        crash_point("payment.deposit_committed")
        return payment

    async def create_withdrawal(
        self,
        *,
        idempotency_key: str,
        account_id: str,
        amount: Money,
        destination: str,
        caller: Principal = SYSTEM,
    ) -> Payment:
        """Records the withdrawal, then holds its money on the request path: a caller without
        the funds hears INSUFFICIENT_FUNDS at once, and no provider is asked. The payout runs
        asynchronously from the durable `payment.funds_held` event."""
        request = WithdrawalRequest(
            idempotency_key=require(idempotency_key, "idempotency_key"),
            account_id=parse_id(account_id, "account_id"),
            amount=amount,
            destination=require(destination, "destination"),
            caller=caller.subject,
        )
        await self._authorize(caller, request.account_id, "withdraw from this account")
        await self._check_currency(request.account_id, amount, "amount.currency")
        payment, created = await self._create(
            request, lambda _, pid: _made(Payment.withdrawal(request, pid))
        )
        if not created:
            return payment
        crash_point("payment.withdrawal_committed")
        return await self._hold_funds(payment)

    async def create_transfer(
        self,
        *,
        idempotency_key: str,
        source_account_id: str,
        destination_account_id: str,
        amount: Money,
        caller: Principal = SYSTEM,
    ) -> Payment:
        """Records the transfer, then moves the money in one atomic wallet operation (FX when
        the currencies differ) and answers `completed`, or the wallet's refusal."""
        request = TransferRequest(
            idempotency_key=require(idempotency_key, "idempotency_key"),
            source_account_id=parse_id(source_account_id, "source_account_id"),
            destination_account_id=parse_id(destination_account_id, "destination_account_id"),
            amount=amount,
            caller=caller.subject,
        )
        if request.source_account_id == request.destination_account_id:
            raise ValidationError(
                FieldViolation("destination_account_id", "must differ from source_account_id")
            )
        await self._authorize(caller, request.source_account_id, "transfer from this account")
        await self._check_currency(request.source_account_id, amount, "amount.currency")
        await self._accounts.currency_of(request.destination_account_id)  # NOT_FOUND at once
        payment, created = await self._create(
            request, lambda _, pid: _made(Payment.transfer(request, pid))
        )
        if not created:
            return payment
        crash_point("payment.transfer_committed")
        return await self._transfer(payment)

    async def refund_payment(
        self,
        *,
        idempotency_key: str,
        payment_id: str,
        amount: Money | None,
        caller: Principal = SYSTEM,
    ) -> Payment:
        """Refunds (part of) a completed deposit as a payment of its own. Its amount is
        reserved on the deposit under the deposit's lock, so concurrent refunds never exceed
        what was captured; then the money is held on the account (the customer may have spent
        it: INSUFFICIENT_FUNDS), and taken only once the provider confirms the refund. Held
        first, so no money can be lost between the provider and the ledger: a refund the
        provider makes always finds its money waiting."""
        request = RefundRequest(
            idempotency_key=require(idempotency_key, "idempotency_key"),
            payment_id=parse_id(payment_id, "payment_id"),
            amount=amount,
            caller=caller.subject,
        )
        await self._authorize_payment(caller, request.payment_id, Principal.may_support)

        async def make(uow: UnitOfWork, refund_id: str) -> Payment:
            deposit = await uow.payments.get(request.payment_id, for_update=True)
            if deposit is None:
                raise NotFound("payment", request.payment_id)
            refund = deposit.refund(request, refund_id)
            await uow.payments.save(deposit)
            return refund

        payment, created = await self._create(request, make)
        if not created:
            return payment
        return await self._hold_funds(payment)

    async def cancel_payment(self, payment_id: str, *, caller: Principal = SYSTEM) -> Payment:
        """Cancels a payment the provider has not been asked about. Its hold, if any, is
        released from the durable `payment.cancelled` event (`release_hold`)."""
        payment_id = parse_id(payment_id, "payment_id")
        await self._authorize_payment(caller, payment_id, Principal.may_support)

        async def cancel() -> Payment:
            async with self._uow() as uow:
                payment = await uow.payments.get(payment_id, for_update=True)
                if payment is None:
                    raise NotFound("payment", payment_id)
                payment.cancel()
                await self._save(uow, payment)
                await uow.commit()
                return payment

        return await retry_on_conflict(cancel)

    async def _authorize(
        self,
        caller: Principal,
        account_id: str,
        what: str,
        may: Callable[[Principal, str], bool] = Principal.may_act_for,
    ) -> None:
        """Refuses unless `may` allows the caller for the account's owner (by default: only
        the owner, or our own services, move its money). An account that does not exist is
        refused alike, so account ids cannot be probed."""
        # `may` asked of no owner at all: what the caller's role allows, whoever the owner is.
        if may(caller, ""):
            return
        try:
            owner = (await self._accounts.info(account_id)).owner_id
        except NotFound:
            raise denied(what) from None
        if not may(caller, owner):
            raise denied(what)

    async def _authorize_payment(
        self, caller: Principal, payment_id: str, may: Callable[[Principal, str], bool]
    ) -> None:
        """As `get_payment` refuses, without reading the payment for a caller whose role
        already allows it (the caller then reads it under its lock anyway)."""
        if not may(caller, ""):
            await self.get_payment(payment_id, caller=caller, may=may)

    async def _may(
        self, caller: Principal, payment: Payment, may: Callable[[Principal, str], bool]
    ) -> bool:
        """Whether `may` allows the caller for the owner of any account the payment moves
        money of (a transfer's two owners both read it)."""
        for account_id in (payment.source_account_id, payment.destination_account_id):
            if account_id and may(caller, (await self._accounts.info(account_id)).owner_id):
                return True
        return False

    async def _check_currency(self, account_id: str, amount: Money, field: str) -> None:
        currency = await self._accounts.currency_of(account_id)
        if currency != amount.currency:
            raise ValidationError(
                FieldViolation(
                    field, f"account {account_id} holds {currency}, not {amount.currency}"
                )
            )

    async def _create(
        self, request: CreateRequest, make: Callable[[UnitOfWork, str], Awaitable[Payment]]
    ) -> tuple[Payment, bool]:
        """Claims the caller's idempotency key and records the payment in one transaction;
        returns it and True, or (a repeated key) the stored response and False. A concurrent
        request with the same key waits on the claim's unique key for this transaction.

        A refusal while making the payment (e.g. REFUND_EXCEEDS_CAPTURED) is stored as the
        key's response, so a repeat is refused alike."""

        async def attempt() -> tuple[Payment | None, IdempotencyClaim | None, Refusal | None]:
            async with self._uow() as uow:
                payment_id = new_id()
                prior = await uow.payments.claim_key(request.claim(payment_id))
                if prior is not None:
                    return None, prior, None
                try:
                    payment = await make(uow, payment_id)
                except (FailedPrecondition, NotFound) as refusal:
                    return None, None, (payment_id, refusal)  # leaving rolls the claim back
                await uow.payments.add(payment)
                await uow.commit()
            log.info("payment.initiated", payment_id=payment.payment_id, kind=payment.kind.value)
            return payment, None, None

        payment, prior, refused = await retry_on_conflict(attempt)
        if refused is not None:
            await self._store_refusal(request, *refused)
            raise refused[1]
        if prior is not None:
            return await self._replay(prior, request.fingerprint), False
        assert payment is not None
        return payment, True

    async def _store_refusal(
        self, request: CreateRequest, payment_id: str, error: DomainError
    ) -> None:
        claim = replace(
            request.claim(payment_id), error_reason=error.reason, error_message=error.message
        )
        async with self._uow() as uow:
            if await uow.payments.claim_key(claim) is None:
                await uow.commit()

    async def _replay(self, claim: IdempotencyClaim, fingerprint: str) -> Payment:
        """The stored response of a repeated key: the payment as first answered, or the same
        refusal. While the first request is still in flight, waits a little for its answer."""
        claim.check_same_request(fingerprint)
        waited = 0.0
        while not claim.answered:
            if waited >= self._in_flight_wait_s:
                raise RequestInFlight(
                    f"a request with idempotency_key {claim.key!r} is still in flight;"
                    " retry it shortly"
                )
            await asyncio.sleep(IN_FLIGHT_POLL_S)
            waited += IN_FLIGHT_POLL_S
            async with self._uow() as uow:
                latest = await uow.payments.claimed(claim.caller, claim.key)
            if latest is None:
                raise RequestInFlight(f"idempotency_key {claim.key!r} changed; retry it")
            claim = latest
        if claim.error_reason:
            raise Refused(claim.error_reason, claim.error_message)
        payment = await self.get_payment(claim.payment_id)
        if claim.response_version is None or payment.version == claim.response_version:
            return payment
        for change in await self.history(payment.payment_id):
            if change.sequence == claim.response_version:
                return payment.as_of(change)
        return payment

    # -- saga steps -------------------------------------------------------------------------

    async def _hold_funds(self, payment: Payment) -> Payment:
        """Holds a withdrawal's or refund's money (on the request path, and again when the
        saga resumes). A refusal fails the payment and is the key's stored response."""
        with self._deferred_on_outage(payment.payment_id):
            try:
                hold_id = await self._wallet.place_hold(
                    operation_ref=payment.step_ref("hold"),
                    account_id=payment.source_account_id,
                    amount=payment.amount,
                    reference=payment.payment_id,
                )
            except (FailedPrecondition, NotFound) as refusal:
                await self._reject(payment.payment_id, refusal)
                raise
            crash_point("payment.hold_placed")
            held = await self._answer(payment.payment_id, lambda p: p.record_hold(hold_id))
            if held.needs_hold_release():
                await self.release_hold(held.payment_id)
            return held

    async def _transfer(self, payment: Payment) -> Payment:
        with self._deferred_on_outage(payment.payment_id):
            try:
                transaction_id = await self._wallet.transfer(
                    operation_ref=payment.step_ref("transfer"),
                    source_account_id=payment.source_account_id,
                    destination_account_id=payment.destination_account_id,
                    amount=payment.amount,
                    reference=payment.payment_id,
                )
            except (FailedPrecondition, NotFound) as refusal:
                await self._reject(payment.payment_id, refusal)
                raise
            crash_point("payment.transfer_moved")
            return await self._answer(
                payment.payment_id, lambda p: p.complete_transfer(transaction_id)
            )

    @contextlib.contextmanager
    def _deferred_on_outage(self, payment_id: str) -> Iterator[None]:
        """A request-path step the wallet's or the database's outage interrupted (before or
        after the wallet acted) is run again by `resume_deferred` once the outage is over."""
        try:
            yield
        except DependencyUnavailable:
            self._defer(payment_id)
            raise

    async def _reject(self, payment_id: str, refusal: DomainError) -> None:
        await self._answer(
            payment_id, lambda p: p.reject(refusal.reason, refusal.message), refusal=refusal
        )
        log.info("payment.refused", payment_id=payment_id, reason=refusal.reason)

    async def _answer(
        self,
        payment_id: str,
        decide: Callable[[Payment], None],
        *,
        refusal: DomainError | None = None,
    ) -> Payment:
        """Records what the request path's wallet call did (`decide`) and, in the same
        transaction, stores the payment as it now stands (or the refusal) as its idempotency
        key's response."""

        async def record() -> Payment:
            async with self._uow() as uow:
                current = await self._get(uow, payment_id)
                decide(current)
                await self._save(uow, current)
                await uow.payments.answer_claim(
                    payment_id,
                    version=current.version,
                    error_reason=refusal.reason if refusal else "",
                    error_message=refusal.message if refusal else "",
                )
                await uow.commit()
                return current

        return await retry_on_conflict(record)

    async def ask_provider(self, payment_id: str) -> None:
        """Saga step, run from a durable event (`payment.initiated` of a deposit,
        `payment.funds_held` of a withdrawal or refund): records the recovery point (from
        then on the payment cannot be cancelled), asks the gateway to charge, pay out or
        refund with a key derived from the payment, then records what it said, unless the
        payment moved on meanwhile (a redelivery, or the provider's own event was faster).
        A declined withdrawal or refund releases its hold before it fails.

        Raises DependencyUnavailable while the gateway is unreachable or the provider's
        answer is unknown: the event stays pending and the step is retried with the same
        key, which the gateway and the provider deduplicate on.
        """

        async def begin() -> tuple[Payment, ProviderCall] | None:
            async with self._uow() as uow:
                payment = await uow.payments.get(payment_id, for_update=True)
                call = payment.begin_provider_call() if payment is not None else None
                if payment is None or call is None:
                    return None
                await uow.payments.save(payment)
                await uow.commit()
                return payment, call

        begun = await retry_on_conflict(begin)
        if begun is None:
            return
        payment, call = begun
        requested_at = datetime.now(UTC)
        result = await self._call_provider(payment, call)
        crash_point("payment.provider_answered")
        if result.answer is ProviderAnswer.UNKNOWN:
            if result.operation_id and result.operation_id != payment.gateway_operation_id:
                await self._record_answer(payment_id, result, requested_at)
            raise ProviderOutcomeUnknown(
                f"provider outcome of {call.operation} {result.operation_id} unknown; asking again"
            )
        if result.answer is ProviderAnswer.DECLINED and payment.wants_release():
            await self._wallet.release_hold(
                operation_ref=payment.step_ref("release"), hold_id=payment.saga.hold_id
            )

        await self._record_answer(payment_id, result, requested_at)

    async def _record_answer(
        self, payment_id: str, result: ProviderResult, requested_at: datetime
    ) -> None:
        async def record() -> None:
            async with self._uow() as uow:
                current = await uow.payments.get(payment_id, for_update=True)
                if current is None:
                    return
                current.record_provider_answer(
                    result.answer,
                    operation_id=result.operation_id,
                    reason=result.failure_reason,
                    requested_at=requested_at,
                )
                await self._save(uow, current)
                await uow.commit()

        await retry_on_conflict(record)

    async def _call_provider(self, payment: Payment, call: ProviderCall) -> ProviderResult:
        if call.operation == "charge":
            return await self._gateway.charge(
                idempotency_key=call.idempotency_key,
                amount=call.amount,
                payment_method=call.payment_method,
                reference=payment.payment_id,
            )
        if call.operation == "payout":
            return await self._gateway.payout(
                idempotency_key=call.idempotency_key,
                amount=call.amount,
                destination=call.destination,
                reference=payment.payment_id,
            )
        return await self._gateway.refund(
            idempotency_key=call.idempotency_key,
            charge_operation_id=call.charge_operation_id,
            amount=call.amount,
            reference=payment.payment_id,
        )

    async def compensate(self, payment_id: str) -> None:
        """A refunding deposit's refund attempt (from `payment.refunding`, then from each
        `payment.compensation_retry`), each attempt with its own provider key."""

        async def begin() -> tuple[Payment, ProviderCall] | None:
            async with self._uow() as uow:
                payment = await uow.payments.get(payment_id, for_update=True)
                call = payment.compensation_call() if payment is not None else None
                if payment is None or call is None:
                    return None
                await uow.payments.save(payment)
                await uow.commit()
                return payment, call

        begun = await retry_on_conflict(begin)
        if begun is None:
            return
        payment, call = begun
        result = await self._call_provider(payment, call)

        async def record() -> None:
            async with self._uow() as uow:
                current = await self._get(uow, payment_id)
                current.record_compensation_answer(
                    result.answer, operation_id=result.operation_id, reason=result.failure_reason
                )
                await uow.payments.save(current)
                await uow.commit()

        await retry_on_conflict(record)
        if result.answer is ProviderAnswer.UNKNOWN:
            raise ProviderOutcomeUnknown(f"refund {result.operation_id} outcome unknown")

    async def release_hold(self, payment_id: str) -> None:
        """Gives a cancelled payment's held money back (from `payment.cancelled`)."""
        payment = await self.get_payment(payment_id)
        if not payment.needs_hold_release():
            return
        await self._wallet.release_hold(
            operation_ref=payment.step_ref("release"), hold_id=payment.saga.hold_id
        )

        async def record() -> None:
            async with self._uow() as uow:
                current = await self._get(uow, payment_id)
                current.record_hold_released()
                await uow.payments.save(current)
                await uow.commit()

        await retry_on_conflict(record)

    async def resume_stalled(self, *, older_than: timedelta, limit: int = 100) -> int:
        """Picks up payments whose saga stopped between two steps (a process died, or an
        event was lost) and runs their next step again: every step is idempotent on its key,
        so a step that did run is not applied twice. Claimed with SKIP LOCKED and recorded
        as `saga.resumed`, so replicas never resume the same payment at once."""
        async with self._uow() as uow:
            stalled = await uow.payments.stalled(older_than=older_than, limit=limit)
            for payment_id in stalled:
                payment = await self._get(uow, payment_id)
                payment.note_resumed()
                await uow.payments.save(payment)
            await uow.commit()
        for payment_id in stalled:
            try:
                await self.resume(payment_id)
            except DomainError as exc:
                log.warning("payment.resume_deferred", payment_id=payment_id, error=exc.message)
        return len(stalled)

    def _defer(self, payment_id: str) -> None:
        if len(self._deferred) < MAX_DEFERRED:  # beyond it, the resume sweep's
            self._deferred.add(payment_id)

    async def resume_deferred(self) -> int:
        """Runs again the request-path steps an outage interrupted: one first, as a probe;
        if the outage is over, the rest, `DEFERRED_AT_ONCE` at a time (one that meets an
        outage again is deferred again). Returns how many are left."""
        if not self._deferred or not await self._resume_one(self._deferred.pop()):
            return len(self._deferred)
        waiting, self._deferred = list(self._deferred), set()
        room = asyncio.Semaphore(DEFERRED_AT_ONCE)

        async def resume(payment_id: str) -> None:
            async with room:
                await self._resume_one(payment_id)

        await asyncio.gather(*(resume(payment_id) for payment_id in waiting))
        return len(self._deferred)

    async def _resume_one(self, payment_id: str) -> bool:
        """False when an outage is still on (the payment is deferred again)."""
        try:
            await self.resume(payment_id)
        except DependencyUnavailable:
            self._defer(payment_id)
            return False
        except DomainError as exc:
            log.warning("payment.resume_deferred", payment_id=payment_id, error=exc.message)
        return True

    async def recover(self, request: RecoveryRequest) -> RecoveryRecord:
        """The recovery worker's attempt to move a stuck payment on (`Payment.recovery_action`):
        asks the provider again about an operation it has not settled (the gateway applies
        the answer and emits its event, so the payment moves through its normal handlers), or
        runs the saga's next step again with the same keys. The attempt is noted in the audit
        trail once per `attempt_id`, with what it achieved; a repeat acts no more.

        Raises DependencyUnavailable when the gateway, the wallet or the provider cannot be
        reached: nothing was learned, so nothing is noted and the worker asks again."""
        request = replace(
            request,
            payment_id=parse_id(request.payment_id, "payment_id"),
            attempt_id=require(request.attempt_id, "attempt_id"),
            requested_by=require(request.requested_by, "requested_by"),
        )
        if request.rung < 0:
            raise ValidationError(FieldViolation("rung", "must not be negative"))
        async with self._uow() as uow:
            payment = await uow.payments.get(request.payment_id)
            if payment is None:
                raise NotFound("payment", request.payment_id)
            prior = _attempt_in(await uow.payments.steps(request.payment_id), request.attempt_id)
        planned = payment.recovery_action()
        if prior is not None or planned is None:
            outcome = _recorded_outcome(prior) if prior else RecoveryOutcome.NOT_STUCK
            return RecoveryRecord(outcome, payment, prior)
        action, operation_id = planned
        if action is RecoveryAction.SYNC:
            result = await self._sync(operation_id)
        else:
            result = await self._resume_step(payment.payment_id)
        return await self._record_recovery(request, action, result)

    async def _sync(self, operation_id: str) -> RecoveryResult:
        try:
            state = await self._gateway.sync_operation(operation_id)
        except DependencyUnavailable:
            raise
        except DomainError as exc:
            # The gateway refuses (an operation it does not know): a person has to look; the
            # attempt is noted with why, and asked again at the next rung.
            return RecoveryResult(RecoveryOutcome.UNKNOWN, operation_id, error=exc.message)
        outcome = RecoveryOutcome.SETTLED if state.settled else RecoveryOutcome.UNKNOWN
        return RecoveryResult(outcome, operation_id, state.answer)

    async def _resume_step(self, payment_id: str) -> RecoveryResult:
        try:
            await self.resume(payment_id)
        except ProviderOutcomeUnknown:
            return RecoveryResult(RecoveryOutcome.UNKNOWN, answer="unknown")
        except DependencyUnavailable:
            raise
        except DomainError as exc:
            # The step ran and was refused (no funds for a hold, say): the payment took that
            # answer through its state machine; the attempt notes why.
            return RecoveryResult(RecoveryOutcome.RESUMED, error=exc.message)
        return RecoveryResult(RecoveryOutcome.RESUMED)

    async def _record_recovery(
        self, request: RecoveryRequest, action: RecoveryAction, result: RecoveryResult
    ) -> RecoveryRecord:
        """Notes the attempt under the payment's row lock: a twin of the same attempt that
        got here first has noted it, and this one notes nothing."""

        async def record() -> RecoveryRecord:
            async with self._uow() as uow:
                current = await self._get(uow, request.payment_id)
                steps = await uow.payments.steps(request.payment_id)
                prior = _attempt_in(steps, request.attempt_id)
                if prior is not None:
                    return RecoveryRecord(_recorded_outcome(prior), current, prior)
                step = current.record_recovery(request, action, result)
                await self._save(uow, current)
                await uow.commit()
                return RecoveryRecord(_recorded_outcome(step), current, step)

        record_ = await retry_on_conflict(record)
        log.info(
            "payment.recovery_attempted",
            payment_id=request.payment_id,
            action=action.value,
            rung=request.rung,
            outcome=record_.outcome.value,
        )
        return record_

    async def resume(self, payment_id: str) -> None:
        """Runs the payment's next saga step from its recorded recovery point."""
        payment = await self.get_payment(payment_id)
        if payment.status is PaymentStatus.REFUNDING:
            await self.compensate(payment_id)
        elif payment.status is not PaymentStatus.INITIATED:
            return
        elif payment.kind is PaymentKind.TRANSFER:
            await self._transfer(payment)
        elif payment.needs_hold():
            await self._hold_funds(payment)
        else:
            await self.ask_provider(payment_id)

    async def _get(self, uow: UnitOfWork, payment_id: str) -> Payment:
        payment = await uow.payments.get(payment_id, for_update=True)
        if payment is None:
            raise NotFound("payment", payment_id)
        return payment

    async def _save(self, uow: UnitOfWork, payment: Payment) -> None:
        await save_settling_refunds(uow, payment)

    async def watch(
        self,
        payment_id: str,
        *,
        feed: ChangeFeed,
        caller: Principal = SYSTEM,
        recheck_s: float = WATCH_RECHECK_S,
    ) -> AsyncIterator[Payment]:
        """The payment now, then each later state it passes through, in order, until a
        terminal one.

        Subscribes before reading, so no change can fall between the two; on every wake-up
        (and at least every `recheck_s`, so a missed one only delays) it reads the status
        changes past the last one sent, so two changes in quick succession are both sent.
        """
        payment_id = parse_id(payment_id, "payment_id")
        async with feed.subscribe(payment_id) as changed:
            current = await self.get_payment(payment_id, caller=caller)
            yield current
            while not current.status.is_terminal:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=recheck_s)
                changed.clear()
                latest = await self.get_payment(payment_id)
                if latest.version <= current.version:
                    continue
                for change in await self._changes_after(payment_id, current.version):
                    current = latest.as_of(change)
                    yield current

    async def _changes_after(self, payment_id: str, version: int) -> list[StatusChange]:
        async with self._uow() as uow:
            history = await uow.payments.history(payment_id)
        return [change for change in history if change.sequence > version]

    async def purge_idempotency_keys(self, *, older_than: timedelta) -> int:
        """Forgets keys older than the retention, a batch at a time; returns how many. A key
        used again after that makes a new payment (as with Stripe's keys)."""
        purged = 0
        while True:
            async with self._uow() as uow:
                count = await uow.payments.purge_claims(older_than=older_than, limit=10_000)
                await uow.commit()
            purged += count
            if count < 10_000:
                return purged

    async def get_payment(
        self,
        payment_id: str,
        *,
        caller: Principal = SYSTEM,
        may: Callable[[Principal, str], bool] = Principal.may_read,
    ) -> Payment:
        """The payment, if the caller may read it (or do `may` with it). To a caller who
        may not, a payment that does not exist is refused alike (no probing of ids)."""
        payment_id = parse_id(payment_id, "payment_id")
        async with self._uow() as uow:
            payment = await uow.payments.get(payment_id)
        # `may` asked of no owner at all: what the caller's role allows, whoever the owner is.
        if may(caller, ""):
            if payment is None:
                raise NotFound("payment", payment_id)
            return payment
        if payment is None or not await self._may(caller, payment, may):
            raise denied(
                "read this payment" if may is Principal.may_read else "act on this payment"
            )
        return payment

    async def history(self, payment_id: str, *, caller: Principal = SYSTEM) -> list[StatusChange]:
        payment = await self.get_payment(payment_id, caller=caller)
        async with self._uow() as uow:
            return await uow.payments.history(payment.payment_id)

    async def audit_trail(
        self, payment_id: str, *, caller: Principal = SYSTEM
    ) -> list[PaymentStep]:
        payment = await self.get_payment(payment_id, caller=caller)
        async with self._uow() as uow:
            return await uow.payments.steps(payment.payment_id)

    async def list_payments(
        self,
        *,
        account_id: str,
        page_size: int,
        page_token: str,
        where: PaymentFilter | None = None,
        caller: Principal = SYSTEM,
    ) -> PaymentPage:
        if account_id:
            account_id = parse_id(account_id, "account_id")
        if not account_id and not caller.is_operator:
            raise denied("list the payments of every account (name an account you own)")
        if account_id:
            await self._authorize(
                caller, account_id, "list this account's payments", may=Principal.may_read
            )
        after, before_time = (where.created_after, where.created_before) if where else (None, None)
        if after and before_time and after >= before_time:
            raise ValidationError(
                FieldViolation("created_before", "must be later than created_after")
            )
        size, before = page_params(page_size, page_token)
        async with self._uow() as uow:
            rows = await uow.payments.list(
                account_id=account_id, limit=size, before_seq=before, where=where or PaymentFilter()
            )
        token = str(rows[-1][0]) if len(rows) == size else ""
        return PaymentPage([p for _, p in rows], token)
