from __future__ import annotations

from common.events import GATEWAY_STREAM
from gateway_service.adapters.event_mapping import to_outgoing
from gateway_service.domain import events
from paysuite.events.v1 import events_pb2
from tests.gateway_service.conftest import EUR_12_50, PAYMENT_METHOD


def fact(cls: type[events.OperationFact], **changes: object) -> events.OperationFact:
    fields: dict[str, object] = {
        "operation_id": "0b4c7a40-3f4e-4b9a-9a55-9f1f8f0c1d2e",
        "kind": "charge",
        "status": "succeeded",
        "amount": EUR_12_50,
        "reference": "pay-1",
        "idempotency_key": "pay-1:charge",
        "provider": "simulator",
        "provider_reference": "ch_1",
        "failure_reason": "",
        "version": 3,
        "causation_id": "evt_1",
        **changes,
    }
    return cls(**fields)  # type: ignore[arg-type]  # the tests vary the fields, so they are objects


def payload(envelope: events_pb2.EventEnvelope) -> events_pb2.OperationStatusChanged:
    message = events_pb2.OperationStatusChanged()
    assert envelope.payload.Unpack(message)
    return message


def test_a_status_change_is_published_as_kind_dot_status() -> None:
    outgoing = to_outgoing(fact(events.OperationStatusChanged))

    envelope = outgoing.envelope
    assert outgoing.stream == GATEWAY_STREAM
    assert envelope.event_type == "charge.succeeded"
    assert (envelope.aggregate_type, envelope.aggregate_id, envelope.aggregate_version) == (
        "operation",
        "0b4c7a40-3f4e-4b9a-9a55-9f1f8f0c1d2e",
        3,
    )
    assert (envelope.correlation_id, envelope.causation_id) == ("pay-1", "evt_1")
    assert envelope.producer == "gateway-service"
    assert envelope.event_id
    body = payload(envelope)
    assert (body.status, body.kind, body.provider_reference) == ("succeeded", "charge", "ch_1")
    assert (body.amount.amount_minor, body.amount.currency) == (1250, "EUR")
    assert (body.reference, body.idempotency_key) == ("pay-1", "pay-1:charge")


def test_the_payment_method_never_leaves_in_an_event() -> None:
    envelope = to_outgoing(fact(events.OperationStatusChanged)).envelope

    assert PAYMENT_METHOD.encode() not in envelope.SerializeToString()


def test_a_contradicting_outcome_is_published_as_a_conflict() -> None:
    conflict = fact(
        events.ContradictingOutcomeReceived,
        status="failed",
        failure_reason="contradicting provider event evt_2: ...",
        causation_id="evt_2",
        version=4,
    )

    envelope = to_outgoing(conflict).envelope

    assert envelope.event_type == "operation.conflict"
    assert (envelope.aggregate_version, envelope.causation_id) == (4, "evt_2")
    body = payload(envelope)
    assert body.status == "failed"
    assert body.failure_reason.startswith("contradicting provider event evt_2")


def test_a_pending_charge_without_provider_event_has_no_causation() -> None:
    envelope = to_outgoing(
        fact(events.OperationStatusChanged, status="pending", causation_id="")
    ).envelope

    assert envelope.event_type == "charge.pending"
    assert envelope.causation_id == ""
