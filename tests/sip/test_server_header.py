"""
The ``Server`` header (RFC 3261 §20.35) of Warden's responses: the product name
without its version by default, the configured text, or none at all.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from warden.config import parse_config_text
from warden.errors import ConfigError
from warden.sip.dispatch import build_stateless_error
from warden.sip.message import Request, Response
from warden.testing.sipstack import FakeSipStack

OPTIONS = (
    b"OPTIONS sip:pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-server-1\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:pbx.test>\r\n"
    b"From: <sip:probe@pbx.test>;tag=a1\r\n"
    b"Call-ID: server-header-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class ServerHeaderTests(SynchronousTestCase):
    """What the Server header says."""

    def answer(self, stack: FakeSipStack, data: bytes = OPTIONS) -> Response:
        """The one response to ``data``."""
        (response,) = stack.send_udp(data)
        assert isinstance(response, Response)
        return response

    def test_default_names_no_version(self) -> None:
        """By default responses say ``Server: Warden``, with no version number."""
        self.assertEqual(self.answer(FakeSipStack()).get("Server"), "Warden")

    def test_configured_text(self) -> None:
        """The configured text is sent instead (core and stateless parse errors)."""
        stack = FakeSipStack()
        stack.dispatcher.server_header = stack.hub.server_header = "PBX"
        self.assertEqual(self.answer(stack).get("Server"), "PBX")
        broken = OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: seventy")
        self.assertEqual(self.answer(stack, broken).get("Server"), "PBX")

    def test_empty_sends_none(self) -> None:
        """An empty setting sends no Server header at all."""
        stack = FakeSipStack()
        stack.dispatcher.server_header = ""
        self.assertIsNone(self.answer(stack).get("Server"))
        request = Request("OPTIONS", "sip:pbx.test", [])
        request.headers.extend(
            [("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"), ("From", "<sip:a@b>;tag=1"),
             ("To", "<sip:b@c>"), ("Call-ID", "c"), ("CSeq", "1 OPTIONS")]
        )  # fmt: skip
        response = build_stateless_error(request, 400, "Bad Request", "")
        assert response is not None
        self.assertIsNone(response.get("Server"))

    def test_config_key(self) -> None:
        """[sip] server_header defaults to "Warden" and refuses control characters."""
        self.assertEqual(parse_config_text("").sip.server_header, "Warden")
        self.assertEqual(parse_config_text('[sip]\nserver_header = ""').sip.server_header, "")
        with self.assertRaises(ConfigError) as caught:
            parse_config_text('[sip]\nserver_header = "a\\r\\nX-Evil: 1"', "warden.toml")
        self.assertIn("warden.toml: sip.server_header: must be at most 100", str(caught.exception))
