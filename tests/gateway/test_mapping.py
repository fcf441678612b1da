"""gRPC status -> HTTP error mapping, and protobuf <-> JSON with friendly enum names."""

from __future__ import annotations

import grpc
import pytest

from masterx.common.v1 import common_pb2
from masterx.reasoning.v1 import reasoning_pb2
from masterx_runtime.testing.grpc_server import rpc_error
from services.gateway.errors import from_rpc_error
from services.gateway.protojson import enum_choices, from_dict, to_dict


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.FAILED_PRECONDITION, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 502),
        (grpc.StatusCode.UNKNOWN, 502),
        (grpc.StatusCode.DATA_LOSS, 502),
    ],
)
def test_status_codes_map_to_http(code: grpc.StatusCode, status: int) -> None:
    err = from_rpc_error(rpc_error(code, "boom"), "router")
    assert err.status == status
    assert err.code == code.name
    body = err.body("rid-1")["error"]
    assert body["service"] == "router"
    assert body["status"] == status
    assert body["request_id"] == "rid-1"
    assert "boom" in body["message"]


def test_error_detail_trailer_is_carried_into_the_body() -> None:
    detail = common_pb2.ErrorDetail(reason="UNKNOWN_PROVIDER", field="pinned_provider", service="router")
    err = from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "no provider 'x'", detail), "router")
    body = err.body()["error"]
    assert (body["reason"], body["field"], body["param"]) == ("UNKNOWN_PROVIDER", "pinned_provider", "pinned_provider")
    assert body["message"] == "no provider 'x'"
    assert body["type"] == "not_found_error"


def test_unavailable_without_detail_names_the_service_in_the_message() -> None:
    err = from_rpc_error(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"), "emotion")
    assert err.message.startswith("emotion service unavailable")


def test_enums_become_friendly_names_and_back() -> None:
    result = common_pb2.EmotionResult(
        primary_emotion="confusion",
        learning_state=common_pb2.LEARNING_STATE_CONFUSED,
        intervention=common_pb2.Intervention(level=common_pb2.INTERVENTION_LEVEL_HIGH, reasons=["stuck"]),
    )
    out = to_dict(result)
    assert out["learning_state"] == "confused"
    assert out["intervention"] == {"level": "high", "reasons": ["stuck"], "score": 0.0}
    assert out["pad"] is None  # unset message fields are null, not empty objects
    assert enum_choices(common_pb2.Category.DESCRIPTOR) == [
        "coding",
        "math",
        "research",
        "language",
        "empathy",
        "general",
    ]


def test_from_dict_accepts_friendly_and_full_enum_names() -> None:
    msg = from_dict(
        {"purpose": "review", "part_type": "PART_TYPE_LINEAR", "bounds": {"min": 1.0}, "terms": 3},
        reasoning_pb2.GenerateProblemRequest,
    )
    assert msg.purpose == reasoning_pb2.PURPOSE_REVIEW
    assert msg.part_type == reasoning_pb2.PART_TYPE_LINEAR
    assert msg.bounds.HasField("min") and not msg.bounds.HasField("max")
    assert to_dict(msg)["bounds"] == {"min": 1.0, "max": None}


def test_from_dict_reports_the_field_path_of_a_bad_enum() -> None:
    with pytest.raises(ValueError, match=r"steps\[0\]\.skills|purpose: unknown value 'sometimes'"):
        from_dict({"purpose": "sometimes"}, reasoning_pb2.GenerationTrace)
    with pytest.raises(ValueError, match="no field named"):
        from_dict({"nope": 1}, reasoning_pb2.GenerationTrace)


def test_trace_round_trips_through_json() -> None:
    trace = reasoning_pb2.GenerationTrace(
        steps=[reasoning_pb2.TraceStep(term=4, total_before=3, total_after=7, skills=["fiveComplements.4=5-1"])],
        total_complexity_cost=2.5,
        purpose=reasoning_pb2.PURPOSE_FOCUS,
        part_type=reasoning_pb2.PART_TYPE_ABACUS,
        skill_mastery=[reasoning_pb2.SkillMasteryContext(skill="x", mastery=reasoning_pb2.MASTERY_STATE_RUSTY)],
    )
    data = to_dict(trace)
    assert data["skill_mastery"][0]["mastery"] == "rusty"
    assert from_dict(data, reasoning_pb2.GenerationTrace) == trace


def test_the_http_error_table_is_one_consistent_table() -> None:
    from services.gateway.errors import HTTP_ERRORS, HTTP_STATUS, bad_request, http_row

    statuses = [row.status for row in HTTP_ERRORS]
    assert len(statuses) == len(set(statuses)), "one row per HTTP status"
    codes = [code for row in HTTP_ERRORS for code in row.grpc]
    assert len(codes) == len(set(codes)), "a gRPC status maps to one HTTP status"
    assert {code: row.status for row in HTTP_ERRORS for code in row.grpc} == HTTP_STATUS
    assert http_row(418).code == "HTTP_ERROR" and http_row(418).type == "server_error"
    assert bad_request("too big", status=413).body()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert bad_request("bad", "x", 422).body()["error"]["type"] == "invalid_request_error"
