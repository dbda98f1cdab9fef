"""The stream receiver: an ASGI app (Starlette, served by uvicorn) that takes the vendor's pushed
stream (JSON or Avro) and makes each payload a durable file in the landing folder."""

from ev_assets.receiver.app import ReceiverConfig, create_app

__all__ = ["ReceiverConfig", "create_app"]
