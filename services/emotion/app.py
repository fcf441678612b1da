"""Emotion service application: registers the servicer and owns its lifecycle."""

from __future__ import annotations

import grpc

from masterx.emotion.v1 import emotion_pb2_grpc
from masterx_runtime.server import ServiceApp


class EmotionServicer(emotion_pb2_grpc.EmotionServiceServicer):
    """Not built yet: every RPC answers UNIMPLEMENTED (see README, service status)."""


class EmotionApp(ServiceApp):
    name = "emotion"
    service_names = ("masterx.emotion.v1.EmotionService",)
    default_grpc_port = 50051
    default_metrics_port = 9101

    def register(self, server: grpc.aio.Server) -> None:
        emotion_pb2_grpc.add_EmotionServiceServicer_to_server(EmotionServicer(), server)
