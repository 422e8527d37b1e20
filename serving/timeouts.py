"""A header read timeout for the HTTP server, which uvicorn (under BentoML) does not have.

uvicorn closes idle keep-alive connections, but a client that connects and then sends its
request headers slowly, or never finishes them, holds the connection (and a file descriptor)
forever: the "slowloris" attack. This protocol closes a connection whose request headers are not
complete `HEADER_TIMEOUT_S` after it opened or after its previous response; body reads are timed
by the request guard (`serving/http.py`).

BentoML builds uvicorn's config with `http="auto"`; `install()` points "auto" at this class in the
API server process (uvicorn resolves the name when the server starts, after the service module
is imported). It is uvicorn's h11 protocol otherwise unchanged; where httptools is installed,
uvicorn's "auto" would have picked that faster parser, and this choice gives it up for the timeout
(h11 is what this project installs).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving import settings


class HeaderTimeoutProtocol(H11Protocol):
    header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # still waiting for (the rest of) a request's headers
            self._arm()
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's headers are timed from here; uvicorn's keep-alive timer still closes
        # a connection that sends nothing at all.
        self._disarm()
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(settings.HEADER_TIMEOUT_S, self._expired)

    def _disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _expired(self) -> None:
        self.header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def install() -> None:
    import uvicorn.config

    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:HeaderTimeoutProtocol"
