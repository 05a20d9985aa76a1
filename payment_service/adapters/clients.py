"""gRPC clients for the wallet and gateway services, behind the service layer's ports.

Every call's deadline is the configured timeout, or less when the request being served has
less time left (`common.grpc.deadlines`), so a caller's deadline reaches every hop.

Charges, payouts, credits, holds, captures and transfers go in batches (design.md section 5,
"Batches, not items"): the saga runs many payments at once, and a unary call costs ~1.7 ms of
CPU on each side, so the calls of one kind asked for while its batch call (Charges, Payouts,
Credits, PlaceHolds, CaptureHolds, Transfers) is in flight go together in the next
(`_Coalesced`, over common.group_commit: alone, a request is a batch of one and waits for
nobody). Each caller gets its own answer, or its own error translated as the unary call's
would be. Refunds and releases, rare, stay unary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar, cast

import grpc
import structlog

from common import tracing
from common.group_commit import GroupCommit, Job
from common.grpc.client import translate_item_status, translate_rpc_error
from common.grpc.convert import money_to_proto
from common.grpc.deadlines import remaining
from common.logging import correlation_id_var
from common.money import Money
from payment_service.domain.saga import ProviderAnswer
from payment_service.service_layer.ports import AccountInfo, OperationState, ProviderResult
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc

T = TypeVar("T")

log = structlog.get_logger(__name__)

# A batch's answer to one of its requests meaning "send it alone, as the unary call" (the
# server does not know the batch call yet: a rolling deploy).
_UNARY = object()

# Any status not listed (CREATED, or one a newer gateway adds) means the outcome is unknown:
# the saga asks again with the same key rather than guess.
_ANSWER = {
    gateway_pb2.OPERATION_STATUS_PENDING: ProviderAnswer.ACCEPTED,
    gateway_pb2.OPERATION_STATUS_SUCCEEDED: ProviderAnswer.ACCEPTED,
    gateway_pb2.OPERATION_STATUS_FAILED: ProviderAnswer.DECLINED,
}


class _Client:
    service = ""

    def __init__(self, *, timeout_s: float) -> None:
        self._timeout = timeout_s

    async def _call(self, rpc: Callable[..., Awaitable[T]], request: object) -> T:
        try:
            return await rpc(request, timeout=remaining(self._timeout))
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(exc, service=self.service) from exc


class _Traced(Protocol):
    """An item of a batch call: it carries its own flow's trace context and correlation id."""

    traceparent: str
    tracestate: str
    correlation_id: str


Req = TypeVar("Req", bound=_Traced)
Out = TypeVar("Out")


class _Coalesced(Generic[Req, Out]):
    """One unary call (Charge, Credit, ...) sent in batches by its batch call (Charges, ...):
    the requests made while one batch call is in flight go together in the next (group commit;
    alone, a request is a batch of one and waits for nobody). Each caller gets its own answer,
    or its own error translated as the unary call's would be; a whole-call failure fails each
    request as the unary call would have; UNIMPLEMENTED (an older server during a rolling
    deploy) switches to the unary call for good; an answer whose length does not match the
    batch sends each request alone rather than risk one taking another's result."""

    def __init__(
        self,
        client: _Client,
        *,
        unary: Callable[[], Callable[..., Awaitable[Out]]],
        batch: Callable[[list[Req], float], Awaitable[Any]],
        answer: Callable[[Any], Out],
        name: str,
        max_batch: int,
    ) -> None:
        """`batch(requests, timeout_s)` makes the batch call; `answer` takes a request's
        answer out of its result (each result also carries its `status`)."""
        self._client = client
        self._unary = unary
        self._batch = batch
        self._answer = answer
        self._name = name
        # False for good once the server answered the batch call with UNIMPLEMENTED.
        self.batching = True
        self._group = GroupCommit(self._send, _send_alone, max_batch=max_batch)

    async def call(self, request: Req) -> Out:
        if self.batching:
            # The batch holds many flows: each request carries its own trace and correlation id.
            carrier = tracing.inject({})
            request.traceparent = carrier.get("traceparent", "")
            request.tracestate = carrier.get("tracestate", "")
            request.correlation_id = correlation_id_var.get()
            deadline = asyncio.get_running_loop().time() + remaining(self._client._timeout)
            answer = await self._group.submit((request, deadline))
            if answer is not _UNARY:
                return cast(Out, answer)
        # Sent alone by its caller, so in the caller's own trace, deadline and request id.
        return await self._client._call(self._unary(), request)

    async def _send(self, jobs: list[Job]) -> None:
        """One batch call for the requests waiting (the group commit's batch runner): each
        job settles with its answer or fails with its own translated error."""
        if not self.batching:
            await _send_alone(jobs)
            return
        service = self._client.service
        requests = [request for request, _ in (job.spec for job in jobs)]
        timeout = max(deadline for _, deadline in (job.spec for job in jobs))
        try:
            response = await self._batch(
                requests, max(0.0, timeout - asyncio.get_running_loop().time())
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                # An older server during a rolling deploy: one unary call per request from now on.
                log.info(
                    f"{service}.{self._name.lower()}_unimplemented",
                    fallback=self._name.removesuffix("s"),  # Charges -> Charge
                )
                self.batching = False
                await _send_alone(jobs)
                return
            # The whole call failed (the server unavailable, the deadline passed, ...): every
            # request of it fails as its unary call would have.
            for job in jobs:
                error = translate_rpc_error(exc, service=service)
                error.__cause__ = exc
                job.fail(error)
            return
        results = [(result.status, self._answer(result)) for result in response.results]
        if len(results) != len(jobs):
            # Not the contract's answer (one per request, in order): no request may take
            # another's result, so each is sent again on its own (the group commit's `run_alone`).
            raise RuntimeError(f"{len(results)} results for {len(jobs)} {self._name} requests")
        for job, (status, answer) in zip(jobs, results, strict=True):
            if status.code == grpc.StatusCode.OK.value[0]:
                job.settle(answer)
            else:
                job.fail(translate_item_status(status, service=service))


async def _send_alone(jobs: list[Job]) -> None:
    """Each caller sends its request as a unary call itself (a server without the batch call,
    or a batch that failed in a way no request's answer explains)."""
    for job in jobs:
        job.settle(_UNARY)


class WalletClient(_Client):
    """The wallet's postings for the saga. Credits, holds, captures and transfers go in
    batches (Credits, PlaceHolds, CaptureHolds, Transfers), each coalesced on its own by
    `_Coalesced` as the gateway's charges are; the rest are unary calls."""

    service = "wallet"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, max_batch: int = 32) -> None:
        super().__init__(timeout_s=timeout_s)
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)
        self._credits: _Coalesced[wallet_pb2.CreditRequest, wallet_pb2.LedgerTransaction] = (
            _Coalesced(
                self,
                unary=lambda: self._stub.Credit,
                batch=lambda requests, timeout_s: self._stub.Credits(
                    wallet_pb2.CreditsRequest(credits=requests), timeout=timeout_s
                ),
                answer=lambda result: result.transaction,
                name="Credits",
                max_batch=max_batch,
            )
        )
        self._holds: _Coalesced[wallet_pb2.PlaceHoldRequest, wallet_pb2.Hold] = _Coalesced(
            self,
            unary=lambda: self._stub.PlaceHold,
            batch=lambda requests, timeout_s: self._stub.PlaceHolds(
                wallet_pb2.PlaceHoldsRequest(holds=requests), timeout=timeout_s
            ),
            answer=lambda result: result.hold,
            name="PlaceHolds",
            max_batch=max_batch,
        )
        self._captures: _Coalesced[wallet_pb2.CaptureHoldRequest, wallet_pb2.LedgerTransaction] = (
            _Coalesced(
                self,
                unary=lambda: self._stub.CaptureHold,
                batch=lambda requests, timeout_s: self._stub.CaptureHolds(
                    wallet_pb2.CaptureHoldsRequest(captures=requests), timeout=timeout_s
                ),
                answer=lambda result: result.transaction,
                name="CaptureHolds",
                max_batch=max_batch,
            )
        )
        self._transfers: _Coalesced[wallet_pb2.TransferRequest, wallet_pb2.LedgerTransaction] = (
            _Coalesced(
                self,
                unary=lambda: self._stub.Transfer,
                batch=lambda requests, timeout_s: self._stub.Transfers(
                    wallet_pb2.TransfersRequest(transfers=requests), timeout=timeout_s
                ),
                answer=lambda result: result.transaction,
                name="Transfers",
                max_batch=max_batch,
            )
        )

    async def get_account(self, account_id: str) -> AccountInfo:
        account = await self._call(
            self._stub.GetAccount, wallet_pb2.GetAccountRequest(account_id=account_id)
        )
        return AccountInfo(
            account_id=account.account_id, currency=account.currency, owner_id=account.owner_id
        )

    async def credit(self, *, operation_ref: str, account_id: str, amount: Money) -> None:
        await self._credits.call(
            wallet_pb2.CreditRequest(
                operation_ref=operation_ref,
                account_id=account_id,
                amount=money_to_proto(amount),
                description="deposit",
            )
        )

    async def place_hold(
        self, *, operation_ref: str, account_id: str, amount: Money, reference: str
    ) -> str:
        hold = await self._holds.call(
            wallet_pb2.PlaceHoldRequest(
                operation_ref=operation_ref,
                account_id=account_id,
                amount=money_to_proto(amount),
                reference=reference,
            )
        )
        return hold.hold_id

    async def capture_hold(
        self, *, operation_ref: str, hold_id: str, account_id: str, provider: str
    ) -> None:
        await self._captures.call(
            wallet_pb2.CaptureHoldRequest(
                operation_ref=operation_ref,
                hold_id=hold_id,
                provider=provider,
                account_id=account_id,
            )
        )

    async def release_hold(self, *, operation_ref: str, hold_id: str, account_id: str) -> None:
        await self._call(
            self._stub.ReleaseHold,
            wallet_pb2.ReleaseHoldRequest(
                operation_ref=operation_ref, hold_id=hold_id, account_id=account_id
            ),
        )

    async def transfer(
        self,
        *,
        operation_ref: str,
        source_account_id: str,
        destination_account_id: str,
        amount: Money,
        reference: str,
    ) -> str:
        transaction = await self._transfers.call(
            wallet_pb2.TransferRequest(
                operation_ref=operation_ref,
                source_account_id=source_account_id,
                destination_account_id=destination_account_id,
                amount=money_to_proto(amount),
                reference=reference,
            )
        )
        return transaction.transaction_id


class GatewayClient(_Client):
    """The gateway's calls; charges and payouts each go in batches of their own (Charges,
    Payouts) through _Coalesced, as the module's docstring says of charges."""

    service = "gateway"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float, max_batch: int = 32) -> None:
        super().__init__(timeout_s=timeout_s)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        self._charges: _Coalesced[gateway_pb2.ChargeRequest, gateway_pb2.Operation] = _Coalesced(
            self,
            unary=lambda: self._stub.Charge,
            batch=lambda requests, timeout_s: self._stub.Charges(
                gateway_pb2.ChargesRequest(charges=requests), timeout=timeout_s
            ),
            answer=lambda result: result.operation,
            name="Charges",
            max_batch=max_batch,
        )
        self._payouts: _Coalesced[gateway_pb2.PayoutRequest, gateway_pb2.Operation] = _Coalesced(
            self,
            unary=lambda: self._stub.Payout,
            batch=lambda requests, timeout_s: self._stub.Payouts(
                gateway_pb2.PayoutsRequest(payouts=requests), timeout=timeout_s
            ),
            answer=lambda result: result.operation,
            name="Payouts",
            max_batch=max_batch,
        )

    async def charge(
        self, *, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> ProviderResult:
        request = gateway_pb2.ChargeRequest(
            idempotency_key=idempotency_key,
            amount=money_to_proto(amount),
            payment_method=payment_method,
            reference=reference,
        )
        return _result(await self._charges.call(request))

    async def payout(
        self, *, idempotency_key: str, amount: Money, destination: str, reference: str
    ) -> ProviderResult:
        request = gateway_pb2.PayoutRequest(
            idempotency_key=idempotency_key,
            amount=money_to_proto(amount),
            destination=destination,
            reference=reference,
        )
        return _result(await self._payouts.call(request))

    async def refund(
        self, *, idempotency_key: str, charge_operation_id: str, amount: Money, reference: str
    ) -> ProviderResult:
        return _result(
            await self._call(
                self._stub.Refund,
                gateway_pb2.RefundRequest(
                    idempotency_key=idempotency_key,
                    charge_operation_id=charge_operation_id,
                    amount=money_to_proto(amount),
                    reference=reference,
                ),
            )
        )

    async def sync_operation(self, operation_id: str) -> OperationState:
        # trigger "" is the contract's value for a sync asked by an operator or the recovery
        # worker (here, through RecoverPayment); "unverified_webhook" is the webhook adapter's.
        operation = await self._call(
            self._stub.SyncOperation, gateway_pb2.SyncOperationRequest(operation_id=operation_id)
        )
        status = gateway_pb2.OperationStatus.Name(operation.status)
        return OperationState(
            operation_id=operation.operation_id,
            status=status.removeprefix("OPERATION_STATUS_").lower(),
            failure_reason=operation.failure_reason,
        )


def _result(operation: gateway_pb2.Operation) -> ProviderResult:
    return ProviderResult(
        operation_id=operation.operation_id,
        answer=_ANSWER.get(operation.status, ProviderAnswer.UNKNOWN),
        failure_reason=operation.failure_reason,
    )
