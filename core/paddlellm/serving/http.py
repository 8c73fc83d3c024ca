"""The HTTP/1.1 protocol the server runs under uvicorn: uvicorn's h11 protocol, except that a
request the parser refuses (a NUL or line break inside a header value, a malformed request
line, ...) is answered in OpenAI's error shape instead of a plain-text 400 -- and with a 401
``invalid_api_key`` when the malformed header is ``Authorization``, so a client with a mangled
key sees what went wrong. RFC 9110 requires such messages to be rejected; they never reach
the application.
"""
from __future__ import annotations

import json
import re

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

__all__ = ["OpenAIErrorH11Protocol"]

_HEAD_BYTES = 64 * 1024  # what is kept of a request's head to explain a refusal
_BAD_AUTH = re.compile(rb"(?im)^authorization[ \t]*:[^\n]*[\x00-\x08\x0b-\x1f\x7f]")


def _body(message: str, code: str, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "param": param, "code": code}}).encode("ascii")


class OpenAIErrorH11Protocol(H11Protocol):
    """uvicorn's ``H11Protocol`` with OpenAI-shaped answers to unparsable requests."""

    def data_received(self, data: bytes) -> None:
        head = getattr(self, "_paddlellm_head", b"")
        if len(head) < _HEAD_BYTES:
            self._paddlellm_head = (head + data)[:_HEAD_BYTES]
        super().data_received(data)

    def on_response_complete(self) -> None:
        self._paddlellm_head = b""
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        text = getattr(self, "_paddlellm_head", b"").replace(b"\r\n", b"\n")
        header_lines = text[text.find(b"\n") + 1:]  # after the request line
        if _BAD_AUTH.search(header_lines):
            status, headers = 401, [(b"www-authenticate", b"Bearer")]
            body = _body("Incorrect API key provided: the Authorization header holds a control "
                         "character; pass it as 'Authorization: Bearer <key>'", "invalid_api_key")
        else:
            status, headers = 400, []
            body = _body("Invalid HTTP request: the request line or a header is malformed "
                         "(e.g. a control character in a header value).", "invalid_http_request")
        headers += [(b"content-type", b"application/json"), (b"connection", b"close"),
                    (b"content-length", str(len(body)).encode())]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers,
                                                             reason=STATUS_PHRASES[status])))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # the connection cannot take a response any more
            pass
        self.transport.close()
