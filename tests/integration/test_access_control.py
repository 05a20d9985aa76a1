"""Access control on real sockets: every RPC of every service, called with no token, a bad
token, an expired token, another user's token, the owner's token, an operator's and a
service's. Each gets exactly what the policy says (UNAUTHENTICATED, PERMISSION_DENIED, or
through to its handler), and the table must name every RPC the protos define."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf.message import Message

from common.auth import Access, Role
from common.grpc.auth import bearer_channel
from common.tokens import mint, mint_for
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from tests.conftest import Suite
from tests.integration.helpers import clients, usd, wait_for_status

pytestmark = [pytest.mark.integration]
ASYNC = pytest.mark.asyncio(loop_scope="session")

P, W, G = payment_pb2, wallet_pb2, gateway_pb2
ALICE, BOB = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"


@dataclass
class World:
    """Alice's resources, made as the services would (her token; a service for postings)."""

    account: str
    spare: str  # closed by the owner's CloseAccount
    bobs: str
    deposit: str
    hold: str


def key() -> str:
    return str(uuid.uuid4())


Request = Callable[[World], Message]

# Method -> (request, access). CALLER methods are about Alice's resources.
PAYMENT: dict[str, tuple[Request, Access]] = {
    "CreateDeposit": (
        lambda w: P.CreateDepositRequest(
            idempotency_key=key(), account_id=w.account, amount=usd(100)
        ),
        Access.CALLER,
    ),
    "CreateWithdrawal": (
        lambda w: P.CreateWithdrawalRequest(
            idempotency_key=key(), account_id=w.account, amount=usd(10), destination="acct_ok"
        ),
        Access.CALLER,
    ),
    "CreateTransfer": (
        lambda w: P.CreateTransferRequest(
            idempotency_key=key(),
            source_account_id=w.account,
            destination_account_id=w.bobs,
            amount=usd(10),
        ),
        Access.CALLER,
    ),
    "RefundPayment": (
        lambda w: P.RefundPaymentRequest(
            idempotency_key=key(), payment_id=w.deposit, amount=usd(10)
        ),
        Access.CALLER,
    ),
    "CancelPayment": (lambda w: P.CancelPaymentRequest(payment_id=w.deposit), Access.CALLER),
    "GetPayment": (lambda w: P.GetPaymentRequest(payment_id=w.deposit), Access.CALLER),
    "ListPayments": (lambda w: P.ListPaymentsRequest(account_id=w.account), Access.CALLER),
    "ListPaymentEvents": (
        lambda w: P.ListPaymentEventsRequest(payment_id=w.deposit),
        Access.CALLER,
    ),
    "WatchPayment": (lambda w: P.WatchPaymentRequest(payment_id=w.deposit), Access.CALLER),
    "ListReviewCases": (lambda w: P.ListReviewCasesRequest(), Access.OPERATOR),
    "GetReviewCase": (lambda w: P.GetReviewCaseRequest(case_id=key()), Access.OPERATOR),
    "ResolveReviewCase": (
        lambda w: P.ResolveReviewCaseRequest(
            case_id=key(), resolution=P.REVIEW_RESOLUTION_FAILED, note="n"
        ),
        Access.OPERATOR,
    ),
    "RecoverPayment": (
        lambda w: P.RecoverPaymentRequest(payment_id=key()),  # invalid: no attempt id
        Access.SERVICE,
    ),
    "OpenReviewCase": (
        lambda w: P.OpenReviewCaseRequest(payment_id=key(), reason_code="RECONCILIATION_MISMATCH"),
        Access.OPERATOR,
    ),
}
WALLET: dict[str, tuple[Request, Access]] = {
    "OpenAccount": (
        lambda w: W.OpenAccountRequest(operation_ref=key(), owner_id=ALICE, currency="USD"),
        Access.CALLER,
    ),
    "GetAccount": (lambda w: W.GetAccountRequest(account_id=w.account), Access.CALLER),
    "GetBalance": (lambda w: W.GetBalanceRequest(account_id=w.account), Access.CALLER),
    "GetHold": (lambda w: W.GetHoldRequest(hold_id=w.hold), Access.CALLER),
    "ListEntries": (lambda w: W.ListEntriesRequest(account_id=w.account), Access.CALLER),
    "CloseAccount": (
        lambda w: W.AccountStatusRequest(operation_ref=key(), account_id=w.spare),
        Access.CALLER,
    ),
    # Freeze before unfreeze: the operator's pair leaves the account open.
    "FreezeAccount": (
        lambda w: W.AccountStatusRequest(operation_ref=key(), account_id=w.account),
        Access.OPERATOR,
    ),
    "UnfreezeAccount": (
        lambda w: W.AccountStatusRequest(operation_ref=key(), account_id=w.account),
        Access.OPERATOR,
    ),
    "GetTransactions": (lambda w: W.GetTransactionsRequest(), Access.OPERATOR),
    "ListTransactions": (lambda w: W.ListTransactionsRequest(), Access.OPERATOR),
    # Posting RPCs: the service's call is an invalid one (no amount), so nothing moves.
    "Credit": (lambda w: W.CreditRequest(account_id=w.account), Access.SERVICE),
    "Credits": (
        lambda w: W.CreditsRequest(credits=[W.CreditRequest(account_id=w.account)]),
        Access.SERVICE,
    ),
    "Debit": (lambda w: W.DebitRequest(account_id=w.account), Access.SERVICE),
    "Transfer": (lambda w: W.TransferRequest(), Access.SERVICE),
    "PlaceHold": (lambda w: W.PlaceHoldRequest(account_id=w.account), Access.SERVICE),
    "Transfers": (
        lambda w: W.TransfersRequest(transfers=[W.TransferRequest()]),
        Access.SERVICE,
    ),
    "PlaceHolds": (
        lambda w: W.PlaceHoldsRequest(holds=[W.PlaceHoldRequest(account_id=w.account)]),
        Access.SERVICE,
    ),
    "CaptureHold": (lambda w: W.CaptureHoldRequest(), Access.SERVICE),
    "CaptureHolds": (
        lambda w: W.CaptureHoldsRequest(captures=[W.CaptureHoldRequest()]),
        Access.SERVICE,
    ),
    "ReleaseHold": (lambda w: W.ReleaseHoldRequest(), Access.SERVICE),
    "ExpireHolds": (lambda w: W.ExpireHoldsRequest(limit=1), Access.SERVICE),
}
GATEWAY: dict[str, tuple[Request, Access]] = {
    "Charge": (lambda w: G.ChargeRequest(), Access.SERVICE),
    "Charges": (lambda w: G.ChargesRequest(charges=[G.ChargeRequest()]), Access.SERVICE),
    "Payout": (lambda w: G.PayoutRequest(), Access.SERVICE),
    "Payouts": (lambda w: G.PayoutsRequest(payouts=[G.PayoutRequest()]), Access.SERVICE),
    "Refund": (lambda w: G.RefundRequest(), Access.SERVICE),
    "SyncOperation": (lambda w: G.SyncOperationRequest(), Access.SERVICE),
    "HandleProviderEvent": (lambda w: G.HandleProviderEventRequest(), Access.SERVICE),
    "HandleProviderEvents": (lambda w: G.HandleProviderEventsRequest(), Access.SERVICE),
    "GetOperation": (lambda w: G.GetOperationRequest(operation_id=key()), Access.OPERATOR),
    "GetProviderStatus": (lambda w: G.GetProviderStatusRequest(), Access.OPERATOR),
}
SERVICES: dict[str, tuple[Any, str, dict[str, tuple[Request, Access]]]] = {
    "payment": (payment_pb2_grpc.PaymentServiceStub, "payment_target", PAYMENT),
    "wallet": (wallet_pb2_grpc.WalletServiceStub, "wallet_target", WALLET),
    "gateway": (gateway_pb2_grpc.GatewayServiceStub, "gateway_target", GATEWAY),
}
DESCRIPTORS = {
    "payment": payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
    "wallet": wallet_pb2.DESCRIPTOR.services_by_name["WalletService"],
    "gateway": gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"],
}
CALLERS = ("none", "garbage", "expired", "other-key", "other-user", "owner", "operator", "service")


def test_the_table_names_every_rpc() -> None:
    for name, (_, _, table) in SERVICES.items():
        assert set(table) == {m.name for m in DESCRIPTORS[name].methods}, name


# CALLER methods that open an account or move its money: the owner's alone (and our
# services'); an operator reads and supports, but never acts as a customer.
OWNER_ONLY = {"CreateDeposit", "CreateWithdrawal", "CreateTransfer", "OpenAccount"}


def expected(method: str, access: Access, caller: str) -> grpc.StatusCode | None:
    """The refusal this caller gets, or None: through to the handler."""
    if caller in ("none", "garbage", "expired", "other-key"):
        return grpc.StatusCode.UNAUTHENTICATED
    if method in OWNER_ONLY:
        return None if caller in ("owner", "service") else grpc.StatusCode.PERMISSION_DENIED
    allowed = {
        Access.CALLER: {"owner", "operator", "service"},
        Access.OPERATOR: {"operator", "service"},
        Access.SERVICE: {"service"},
    }[access]
    return None if caller in allowed else grpc.StatusCode.PERMISSION_DENIED


def token_of(suite: Suite, caller: str) -> str:
    settings = suite.settings
    return {
        "none": "",
        "garbage": "not.a.token",
        "expired": mint_for(settings, subject=ALICE, roles=(Role.USER,), ttl_s=-120),
        "other-key": mint(
            b"k" * 48, subject=ALICE, roles=[Role.USER], audience="paysuite", ttl_s=60
        ),
        "other-user": mint_for(settings, subject=BOB, roles=(Role.USER,)),
        "owner": mint_for(settings, subject=ALICE, roles=(Role.USER,)),
        "operator": mint_for(settings, subject="operator:dana", roles=(Role.OPERATOR,)),
        "service": mint_for(settings, subject="service:tests", roles=(Role.SERVICE,)),
    }[caller]


_world: World | None = None


async def world(suite: Suite) -> World:
    global _world
    if _world is not None:
        return _world
    alice = mint_for(suite.settings, subject=ALICE, roles=(Role.USER,))
    bob = mint_for(suite.settings, subject=BOB, roles=(Role.USER,))
    async with clients(suite, alice) as c, clients(suite, bob) as b, clients(suite) as service:
        account, spare = [
            (
                await c.wallet.OpenAccount(
                    W.OpenAccountRequest(operation_ref=key(), owner_id=ALICE, currency="USD")
                )
            ).account_id
            for _ in range(2)
        ]
        bobs = (
            await b.wallet.OpenAccount(
                W.OpenAccountRequest(operation_ref=key(), owner_id=BOB, currency="USD")
            )
        ).account_id
        deposit = await c.payments.CreateDeposit(
            P.CreateDepositRequest(idempotency_key=key(), account_id=account, amount=usd(5000))
        )
        await wait_for_status(c, deposit.payment_id, {P.PAYMENT_STATUS_COMPLETED})
        hold = await service.wallet.PlaceHold(
            W.PlaceHoldRequest(operation_ref=key(), account_id=account, amount=usd(1))
        )
    _world = World(account, spare, bobs, deposit.payment_id, hold.hold_id)
    return _world


async def call(suite: Suite, service: str, method: str, token: str, w: World) -> grpc.StatusCode:
    stub_type, target, table = SERVICES[service]
    request = table[method][0](w)
    target_address = getattr(suite, target)
    channel = (
        bearer_channel(target_address, token)
        if token
        else grpc.aio.insecure_channel(target_address)
    )
    async with channel:
        rpc = getattr(stub_type(channel), method)
        try:
            if method == "WatchPayment":
                stream = rpc(request, timeout=10)
                await stream.read()
                stream.cancel()
            else:
                await rpc(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


CASES = [(service, method) for service, (_, _, table) in SERVICES.items() for method in table]


@ASYNC
@pytest.mark.parametrize(("service", "method"), CASES, ids=[f"{s}.{m}" for s, m in CASES])
async def test_each_caller_gets_what_the_policy_says(
    suite: Suite, service: str, method: str
) -> None:
    w = await world(suite)
    access = SERVICES[service][2][method][1]
    got = {
        caller: await call(suite, service, method, token_of(suite, caller), w) for caller in CALLERS
    }
    for caller, code in got.items():
        refusal = expected(method, access, caller)
        if refusal is None:
            assert code not in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ), (caller, got)
        else:
            assert code is refusal, (caller, got)


@ASYNC
async def test_another_users_ids_cannot_be_probed(suite: Suite) -> None:
    """A user asking for a payment or account that does not exist is refused exactly as for
    one that is someone else's; an operator learns that it does not exist."""
    bob = token_of(suite, "other-user")
    operator = token_of(suite, "operator")
    w = await world(suite)
    for payment_id in (w.deposit, str(uuid.uuid4())):
        async with clients(suite, bob) as b:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await b.payments.GetPayment(P.GetPaymentRequest(payment_id=payment_id))
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert payment_id not in (refused.value.details() or "")
    async with clients(suite, operator) as o:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await o.payments.GetPayment(P.GetPaymentRequest(payment_id=str(uuid.uuid4())))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND


@ASYNC
async def test_idempotency_keys_are_scoped_to_the_caller(suite: Suite) -> None:
    """The same key from two users is two requests, not a reuse of one."""
    shared = key()
    made = []
    for user in (f"u1-{shared[:8]}", f"u2-{shared[:8]}"):
        token = mint_for(suite.settings, subject=user, roles=(Role.USER,))
        async with clients(suite, token) as c:
            account = await c.wallet.OpenAccount(
                W.OpenAccountRequest(operation_ref=key(), owner_id=user, currency="USD")
            )
            payment = await c.payments.CreateDeposit(
                P.CreateDepositRequest(
                    idempotency_key=shared, account_id=account.account_id, amount=usd(100)
                )
            )
            made.append(payment.payment_id)
    assert made[0] != made[1]


@ASYNC
async def test_a_review_is_recorded_under_the_verified_operator(suite: Suite) -> None:
    """`resolved_by` in the request is ignored: the case names the token's subject."""
    async with clients(suite) as service:
        w = await world(suite)
        await service.payments.OpenReviewCase(
            P.OpenReviewCaseRequest(
                payment_id=w.deposit, reason_code="RECONCILIATION_MISMATCH", reason="checking"
            )
        )
        cases = await service.payments.ListReviewCases(P.ListReviewCasesRequest())
    case = next(c for c in cases.cases if c.payment_id == w.deposit)
    async with clients(suite, token_of(suite, "operator")) as o:
        resolved = await o.payments.ResolveReviewCase(
            P.ResolveReviewCaseRequest(
                case_id=case.case_id,
                resolution=P.REVIEW_RESOLUTION_COMPLETED,
                note="agrees with the provider",
                resolved_by="someone-else",
            )
        )
    assert resolved.resolved_by == "operator:dana"


@ASYNC
async def test_the_http_facade_passes_on_its_callers_token(suite: Suite) -> None:
    from webhook_adapter.app import start

    w = await world(suite)
    runner, port = await start(suite.settings, "127.0.0.1:0")
    url = f"http://127.0.0.1:{port}/account/{w.account}/deposit"
    body = {"amount_minor": 100, "currency": "USD"}
    answers = {}
    try:
        async with aiohttp.ClientSession() as http:
            for caller in ("none", "garbage", "other-user", "owner"):
                headers = {"Idempotency-Key": key()}
                if caller != "none":
                    headers["Authorization"] = f"Bearer {token_of(suite, caller)}"
                async with http.post(url, json=body, headers=headers) as response:
                    answers[caller] = (response.status, await response.json())
    finally:
        await runner.cleanup()
    assert answers["none"][0] == 401, answers
    assert answers["none"][1]["error"]["code"] == "unauthenticated"
    assert answers["garbage"][0] == 401, answers
    assert answers["other-user"][0] == 403, answers
    assert answers["other-user"][1]["error"]["reason"] == "PERMISSION_DENIED"
    assert answers["owner"][0] == 202, answers
