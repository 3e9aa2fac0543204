"""
Tests for the caller identity Warden asserts (warden.sip.b2bua, transfer,
headers.name_addr): display names are RFC 3261 quoted-strings (§25.1), so no
extension name can change the URI or add a header.
"""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_b2bua import BOB, CallTestCase, only
from warden.sip.dialog import strip_tag
from warden.sip.headers import name_addr, parse_address, quote_string
from warden.sip.message import Request

SPOOFS = (
    'Police" <sip:911@evil.example>;x="',
    'A \\" B \\',
    "Front Desk\r\nP-Asserted-Identity: <sip:911@evil.example>",
)


class QuotingTests(SynchronousTestCase):
    """quote_string, name_addr and strip_tag."""

    def test_round_trip(self) -> None:
        """Quotes and backslashes are escaped; the parsed name is the name again."""
        for name in ('Alice "Al" Smith', "back\\slash", "ünïcode ☎"):
            address = parse_address(name_addr(name, "sip:1001@pbx.test"))
            self.assertEqual((address.display, str(address.uri)), (name, "sip:1001@pbx.test"))

    def test_line_breaks_removed(self) -> None:
        """CR and LF cannot appear in a quoted-string: they become spaces."""
        self.assertEqual(quote_string("a\r\nb"), '"a  b"')
        self.assertNotIn("\n", name_addr(SPOOFS[2], "sip:1@h"))

    def test_no_name(self) -> None:
        """Without a display name the name-addr is just the URI in brackets."""
        self.assertEqual(name_addr("", "sip:1@h"), "<sip:1@h>")

    def test_strip_tag_keeps_escapes(self) -> None:
        """A peer's escaped display name stays escaped in the To/From Warden echoes."""
        value = '"A \\"B\\"" <sip:1@h>;tag=x'
        self.assertEqual(strip_tag(value), '"A \\"B\\"" <sip:1@h>')


class AssertedIdentityTests(CallTestCase):
    """What the callee sees of a caller whose name holds quotes or line breaks."""

    def name_alice(self, name: str) -> None:
        """Give 1001 the display name ``name`` directly in the directory."""
        directory = self.stack.directory
        alice = self.stack.successResultOf_(directory.get_extension("1001"))
        self.stack.successResultOf_(directory.update_extension(attrs.evolve(alice, name=name)))

    def test_names_cannot_spoof(self) -> None:
        """From and P-Asserted-Identity name 1001 with the display name as given,
        and no extra header appears, whatever the name holds."""
        for name in SPOOFS:
            self.name_alice(name)
            mark = self.stack.mark()
            self.alice.call("1002")
            bob_invite = only(self.stack.sent_since(mark), BOB, "INVITE")
            assert isinstance(bob_invite, Request)
            for header in ("From", "P-Asserted-Identity"):
                address = parse_address(bob_invite.get(header) or "")
                self.assertEqual(address.uri.user, "1001", (name, header))
                self.assertEqual(address.display, name.replace("\r\n", "  "), header)
            self.assertEqual(len(bob_invite.get_all("P-Asserted-Identity")), 1)
            self.stack.deliver(self.bob.answer(bob_invite, 486), BOB)
