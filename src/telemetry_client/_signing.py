"""Signing each attempt of a request, the Standard Webhooks way.

A request is one message: its ``webhook-id`` is minted once and stays the same for every retry,
as Standard Webhooks asks (Telemetry may use it to recognise a retry). Each attempt is signed
anew with its own ``webhook-timestamp``, so a retry after a long backoff is not refused as stale,
and the timestamps of one message's attempts strictly increase (an attempt within the same
second as the one before is stamped one second later), so the receiver's replay check, which
refuses an id *and* timestamp it has already verified, never mistakes a retry for a replay.
The signature covers the body exactly as sent: after gzip compression, when compressed.
"""

from __future__ import annotations

import httpx

from auditevt import WebhookSigner

__all__ = ["AttemptSigner"]


class AttemptSigner:
    """Signs the attempts of one request; call it before each attempt is sent."""

    __slots__ = ("_last_timestamp", "_message_id", "_request", "_signer")

    def __init__(self, signer: WebhookSigner, request: httpx.Request) -> None:
        self._signer = signer
        self._request = request
        self._message_id = signer.new_message_id()
        self._last_timestamp = -1

    @property
    def message_id(self) -> str:
        """The ``webhook-id`` every attempt carries."""
        return self._message_id

    def __call__(self) -> None:
        timestamp = max(self._signer.now(), self._last_timestamp + 1)
        self._last_timestamp = timestamp
        headers = self._signer.headers(
            self._request.content, message_id=self._message_id, timestamp=timestamp
        )
        self._request.headers.update(headers)
