"""Bad input gets a clear status and message, and the service keeps serving."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.errors import error_detail_from
from services.emotion.app import EmotionApp

Emotion = tuple[EmotionApp, emotion_pb2_grpc.EmotionServiceStub, grpc.aio.Channel]
METHOD = "/masterx.emotion.v1.EmotionService/"


def _raw(text_bytes: bytes, field: int = 1) -> bytes:
    """A message with one length-delimited field holding arbitrary bytes (protobuf wire format)."""
    assert len(text_bytes) < 128
    return bytes([(field << 3) | 2, len(text_bytes)]) + text_bytes


async def _expect(call: object, code: grpc.StatusCode, *words: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    err = info.value
    assert err.code() == code, err.details()
    for w in words:
        assert w in (err.details() or ""), err.details()
    return err


async def test_empty_whitespace_and_oversized_text(emotion: Emotion) -> None:
    app, stub, _ = emotion
    err = await _expect(stub.Analyze(emotion_pb2.AnalyzeRequest(text="")), grpc.StatusCode.INVALID_ARGUMENT, "empty")
    detail = error_detail_from(err)
    assert detail is not None and detail.reason == "EMPTY_TEXT" and detail.field == "text"
    await _expect(
        stub.Analyze(emotion_pb2.AnalyzeRequest(text=" \n\t\u3000\u200b ")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "whitespace",
    )
    big = "é" * (app.cfg.max_text_bytes // 2 + 1)  # 2 bytes per character: just over the byte limit
    await _expect(
        stub.Analyze(emotion_pb2.AnalyzeRequest(text=big)),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{app.cfg.max_text_bytes + 2} bytes",
        "EMOTION_MAX_TEXT_BYTES",
    )
    ok = await stub.Analyze(emotion_pb2.AnalyzeRequest(text="still here?"))
    assert len(ok.result.scores) == 28


async def test_invalid_utf8_is_invalid_argument_not_internal(emotion: Emotion) -> None:
    _, stub, chan = emotion
    analyze = chan.unary_unary(METHOD + "Analyze")  # no serializers: raw bytes on the wire
    err = await _expect(analyze(_raw(b"caf\xc3(\xff")), grpc.StatusCode.INVALID_ARGUMENT, "text is not valid UTF-8")
    detail = error_detail_from(err)
    assert detail is not None and detail.reason == "INVALID_UTF8" and detail.field == "text"

    good_item = emotion_pb2.AnalyzeRequest(text="fine").SerializeToString()
    bad_item = _raw(b"\xfe\xfe")
    batch = _raw(good_item) + _raw(bad_item)
    batch_call = chan.unary_unary(METHOD + "AnalyzeBatch")
    await _expect(batch_call(batch), grpc.StatusCode.INVALID_ARGUMENT, "items[1].text is not valid UTF-8")

    garbage = chan.unary_unary(METHOD + "Analyze")
    await _expect(garbage(b"\x0a\xff\xff\xff"), grpc.StatusCode.INVALID_ARGUMENT, "not a valid AnalyzeRequest")
    ok = await stub.Analyze(emotion_pb2.AnalyzeRequest(text="and now a valid one"))
    assert ok.result.primary_emotion


async def test_invalid_utf8_in_a_stream_yields_an_error_response(emotion: Emotion) -> None:
    _, _, chan = emotion
    stream = chan.stream_stream(METHOD + "StreamAnalyze")
    good = emotion_pb2.AnalyzeRequest(text="hello there", request_id="a").SerializeToString()
    bad = _raw(b"\xff\xfe") + _raw(b"b", field=5)  # text invalid, request_id "b"
    last = emotion_pb2.AnalyzeRequest(text="bye now", request_id="c").SerializeToString()

    async def requests() -> AsyncIterator[bytes]:
        for m in (good, bad, last):
            yield m

    out = [emotion_pb2.AnalyzeResponse.FromString(r) async for r in stream(requests())]
    assert [r.request_id for r in out] == ["a", "b", "c"]
    assert out[1].error == "INVALID_ARGUMENT: text is not valid UTF-8"
    assert not out[0].error and not out[2].error and out[2].result.primary_emotion


async def test_batch_limits(emotion: Emotion) -> None:
    app, stub, _ = emotion
    n = app.cfg.max_request_batch + 1
    too_many = emotion_pb2.AnalyzeBatchRequest(items=[emotion_pb2.AnalyzeRequest(text="hi")] * n)
    await _expect(stub.AnalyzeBatch(too_many), grpc.StatusCode.INVALID_ARGUMENT, f"{n} items", "limit")
    await _expect(stub.AnalyzeBatch(emotion_pb2.AnalyzeBatchRequest()), grpc.StatusCode.INVALID_ARGUMENT, "empty")
    one_bad = emotion_pb2.AnalyzeBatchRequest(
        items=[emotion_pb2.AnalyzeRequest(text="fine"), emotion_pb2.AnalyzeRequest(text="  ")]
    )
    await _expect(stub.AnalyzeBatch(one_bad), grpc.StatusCode.INVALID_ARGUMENT, "items[1].text")


async def test_malformed_ids_and_context(emotion: Emotion) -> None:
    _, stub, _ = emotion
    await _expect(
        stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi", user_id="no spaces allowed")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "user_id",
    )
    await _expect(
        stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi", context=common_pb2.StudentContext(engagement=1.5))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "context.engagement must be in [0, 1]",
    )
    await _expect(
        stub.Analyze(emotion_pb2.AnalyzeRequest(text="hi", context=common_pb2.StudentContext(time_on_task_seconds=-3))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "time_on_task_seconds",
    )


async def test_unknown_user_and_missing_user(emotion: Emotion) -> None:
    _, stub, _ = emotion
    err = await _expect(
        stub.GetTrajectory(emotion_pb2.GetTrajectoryRequest(user_id="nobody-here")),
        grpc.StatusCode.NOT_FOUND,
        "no history",
        "nobody-here",
    )
    detail = error_detail_from(err)
    assert detail is not None and detail.reason == "UNKNOWN_USER"
    await _expect(stub.GetTrajectory(emotion_pb2.GetTrajectoryRequest()), grpc.StatusCode.INVALID_ARGUMENT, "user_id")
    await _expect(
        stub.GetTrajectory(emotion_pb2.GetTrajectoryRequest(user_id="u", limit=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit",
    )


async def test_outcome_needs_an_outcome_and_evidence(emotion: Emotion) -> None:
    _, stub, _ = emotion
    await _expect(
        stub.RecordOutcome(emotion_pb2.RecordOutcomeRequest(user_id="s1", text="hmm")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "outcome is required",
    )
    await _expect(
        stub.RecordOutcome(emotion_pb2.RecordOutcomeRequest(user_id="s1", outcome=emotion_pb2.OUTCOME_KIND_RESOLVED)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "send the analysed text or the EmotionResult",
    )
    partial = common_pb2.EmotionResult(scores=[common_pb2.EmotionScore(label="joy", probability=0.9)])
    await _expect(
        stub.RecordOutcome(
            emotion_pb2.RecordOutcomeRequest(user_id="s1", outcome=emotion_pb2.OUTCOME_KIND_RESOLVED, result=partial)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "lacks labels",
    )
