"""
Routing calls through the node that holds a phone's flow (L{warden.sip.hop}):
the calling node's choice, and the holding node's stateless forwarding, with a
fake transport.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from warden.errors import FlowTokenRefused, StateUnavailable
from warden.model import Binding
from warden.sip.addressing import Addressing
from warden.sip.dialog import Dialog, confirm_uac_dialog
from warden.sip.flow import Flow
from warden.sip.hop import DIALOG, HOP_BRANCH, ROUTE, NodeHop, TokenLifetimes, behind_nat
from warden.sip.message import Message, Request, Response
from warden.sip.parser import parse_datagram
from warden.sip.transport import TransportError

SECRET = b"s" * 32
NODE_A = ("127.0.0.2", 5060)  # holds the phone's flow
NODE_B = ("127.0.0.3", 5070)  # places the call
PHONE = ("127.0.0.1", 40000)
OTHER_PHONE = ("127.0.0.1", 40002)  # another phone with a connection to node A
LIFETIMES = TokenLifetimes(transaction=62.0, dialog=3600.0)
CALL_ID = "c1-0"


class FakeConnection:
    """A stream connection as the transport hub hands it out."""

    is_open = True


class Wire:
    """Records what a hop sends; knows one TCP connection (the phone's)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Message, Flow]] = []
        self.passed: list[Message] = []
        self.connection: FakeConnection | None = FakeConnection()
        self.broken = False

    def send(self, message: Message, flow: Flow) -> None:
        if self.broken:
            raise TransportError("unreachable")
        self.sent.append((parse_datagram(message.to_bytes()), flow))

    def connection_to(self, host: str, port: int) -> Any:
        return self.connection if (host, port) in (PHONE, OTHER_PHONE) else None


def make_hop(wire: Wire, node_id: str = "a", clock: Clock | None = None) -> NodeHop:
    hop = NodeHop(
        node_id,
        clock or Clock(),
        LIFETIMES,
        wire.send,
        wire.connection_to,
        lambda flow: f"{NODE_A[0]}:{NODE_A[1]}" if node_id == "a" else f"{NODE_B[0]}:{NODE_B[1]}",
        lambda message, flow: wire.passed.append(message),
    )
    hop.use_secret(SECRET)
    hop.set_nodes({"a": "127.0.0.2:5060", "b": "127.0.0.3:5070", "c": "0.0.0.0:5060"})
    return hop


def binding(received: str, node_id: str = "a", contact: str = "") -> Binding:
    contact = contact or "sip:1001@127.0.0.1:40000;transport=tcp"
    return Binding("1001", contact, contact, 9e9, received=received, node_id=node_id)


TCP_BINDING = binding("tcp:127.0.0.1:40000")


def invite_from_b(route: str, branch: str = "z9hG4bKb1", method: str = "INVITE") -> Request:
    text = (
        f"{method} sip:1001@127.0.0.1:40000;transport=tcp SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.3:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"Route: {route}\r\n"
        "From: <sip:1000@pbx>;tag=f1\r\n"
        "To: <sip:1001@pbx>\r\n"
        "Call-ID: c1-0\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:warden@127.0.0.3:5070>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    request = parse_datagram(text.encode())
    assert isinstance(request, Request)
    return request


def phone_response(request: Request, status: str) -> bytes:
    """The phone's response (``status`` such as "180 Ringing") to a forwarded INVITE."""
    return (
        f"SIP/2.0 {status}\r\n"
        + "".join(f"Via: {v}\r\n" for v in request.get_all("Via"))
        + "From: <sip:1000@pbx>;tag=f1\r\nTo: <sip:1001@pbx>;tag=p1\r\n"
        "Call-ID: c1-0\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def b_flow() -> Flow:
    return Flow("udp", *NODE_B)


def phone_flow(address: tuple[str, int] = PHONE) -> Flow:
    return Flow("tcp", *address, FakeConnection())


class CallingNodeTests(unittest.TestCase):
    """Node B decides how to reach a binding."""

    def setUp(self) -> None:
        self.wire = Wire()
        self.hop = make_hop(self.wire, "b")

    def test_wanted(self) -> None:
        """Other nodes' TCP and NATed bindings go through them; the rest directly."""
        self.assertTrue(self.hop.wanted(TCP_BINDING))
        udp = binding("udp:127.0.0.1:40000", contact="sip:1001@127.0.0.1:40000")
        self.assertFalse(self.hop.wanted(udp))
        natted = binding("udp:203.0.113.9:61000", contact="sip:1001@192.168.1.20:5060")
        self.assertTrue(behind_nat(natted))
        self.assertTrue(self.hop.wanted(natted))
        self.assertFalse(self.hop.wanted(binding("tcp:127.0.0.1:40000", node_id="b")))
        self.assertFalse(self.hop.wanted(binding("tcp:127.0.0.1:40000", node_id="")))

    def test_not_before_the_secret(self) -> None:
        """Without the cluster's secret nothing is routed through other nodes."""
        hop = NodeHop(
            "b", Clock(), LIFETIMES, self.wire.send, self.wire.connection_to, str,
            self.wire.passed.append,
        )  # fmt: skip
        self.assertFalse(hop.enabled)
        self.assertFalse(hop.wanted(TCP_BINDING))

    def test_route(self) -> None:
        """The INVITE goes to the holding node with a Route naming the flow there;
        the token reads back only for that node, call and kind, and never when
        malformed."""
        routed = self.hop.route(TCP_BINDING, CALL_ID)
        assert routed is not None
        flow, route = routed
        self.assertEqual((flow.transport, flow.host, flow.port), ("udp", *NODE_A))
        self.assertTrue(route.startswith("<sip:127.0.0.2:5060;lr;wnode=a;wflow="), route)
        token = route.split("wflow=")[1].rstrip(">")
        read = self.hop.read_token((ROUTE,), "a", token, CALL_ID)
        self.assertEqual(read, (ROUTE, "tcp:127.0.0.1:40000"))
        self.assertRaises(FlowTokenRefused, self.hop.read_token, (ROUTE,), "c", token, CALL_ID)
        self.assertRaises(FlowTokenRefused, self.hop.read_token, (ROUTE,), "a", token, "c2-0")
        self.assertRaises(FlowTokenRefused, self.hop.read_token, (DIALOG,), "a", token, CALL_ID)
        data, stamp, signature = token.split(".")
        for malformed in (
            f"{token}.x",
            f"{data}.{stamp[:1]}\u00b2{stamp[2:]}.{signature}",  # a non-ASCII digit
            f"{data}.{stamp[:1]}.{signature}",
            f"!!.{stamp}.{signature}",
        ):
            self.assertRaises(
                FlowTokenRefused, self.hop.read_token, (ROUTE,), "a", malformed, CALL_ID
            )

    def test_dead_or_unaddressed_node(self) -> None:
        """A node without a heartbeat (or with a wildcard address) is not a route."""
        self.assertIsNone(self.hop.route(binding("tcp:127.0.0.1:40000", node_id="z"), CALL_ID))
        self.assertIsNone(self.hop.route(binding("tcp:127.0.0.1:40000", node_id="c"), CALL_ID))

    def test_reach(self) -> None:
        """Addressing.reach: through the node, directly, or not at all."""
        addressing = Addressing("127.0.0.3", lambda: 5070, self.wire.connection_to)
        addressing.hop = self.hop
        reached = addressing.reach(TCP_BINDING, CALL_ID)
        assert reached is not None
        self.assertEqual(reached[0].host, NODE_A[0])
        self.assertEqual(len(reached[1]), 1)
        # The node died: a UDP phone is still dialled directly, a TCP one is not.
        self.hop.set_nodes({"b": "127.0.0.3:5070"})
        natted = binding("udp:203.0.113.9:61000", contact="sip:1001@192.168.1.20:5060")
        self.assertEqual(
            addressing.reach(natted, CALL_ID), (Flow("udp", "203.0.113.9", 61000), [])
        )
        self.wire.connection = None
        self.assertIsNone(addressing.reach(TCP_BINDING, CALL_ID))

    def test_holders_known_fetches_an_unknown_holder(self) -> None:
        """A binding held by a node not (yet) known makes one fetch of the live
        nodes, shared by every call waiting meanwhile; once it is done the
        holder is a route. Known holders, bindings dialled directly and a
        fetch less than a second after the last one wait for nothing."""
        fetches: list[Deferred[None]] = []

        def refresh() -> Deferred[None]:
            fetches.append(Deferred())
            return fetches[-1]

        clock = Clock()
        hop = make_hop(self.wire, "b", clock)
        hop.refresh_nodes = refresh
        hop.set_nodes({"b": "127.0.0.3:5070"})  # A's heartbeat not seen yet
        direct = binding("udp:127.0.0.1:40000", contact="sip:1001@127.0.0.1:40000")
        self.successResultOf(hop.holders_known([direct]))
        first, second = hop.holders_known([TCP_BINDING]), hop.holders_known([TCP_BINDING])
        self.assertEqual(len(fetches), 1)
        self.assertNoResult(first)
        hop.set_nodes({"a": "127.0.0.2:5060", "b": "127.0.0.3:5070"})
        fetches[0].callback(None)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertIsNotNone(hop.route(TCP_BINDING, CALL_ID))
        self.successResultOf(hop.holders_known([TCP_BINDING]))
        self.assertEqual(len(fetches), 1)
        gone = binding("tcp:127.0.0.1:40000", node_id="z")
        self.successResultOf(hop.holders_known([gone]))  # fetched under a second ago
        clock.advance(1.0)
        waiting = hop.holders_known([gone])
        fetches[1].errback(Failure(StateUnavailable("redis down")))
        self.successResultOf(waiting)
        self.assertIsNone(hop.route(gone, CALL_ID))

    def test_holders_known_outside_a_cluster(self) -> None:
        """A single node (no way to fetch nodes) never waits."""
        self.assertIsNone(self.hop.refresh_nodes)
        self.successResultOf(self.hop.holders_known([binding("tcp:127.0.0.1:40000", "z")]))

    def test_preloaded_route_kept(self) -> None:
        """A 2xx without Record-Route keeps the pre-loaded route; one with it replaces it."""
        dialog = Dialog(
            "c1", "t1", None, "<sip:a@x>", "<sip:b@x>", 1, None, "sip:b@y", ["<sip:n;lr>"],
            b_flow(), "sip:warden@x", "x",
        )  # fmt: skip
        bare = parse_datagram(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=t1\r\n"
            b"To: <sip:b@x>;tag=t2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        assert isinstance(bare, Response)
        confirm_uac_dialog(dialog, bare)
        self.assertEqual(dialog.route_set, ["<sip:n;lr>"])
        bare.add("Record-Route", "<sip:m;lr>")
        confirm_uac_dialog(dialog, bare)
        self.assertEqual(dialog.route_set, ["<sip:m;lr>"])


class HoldingNodeTests(unittest.TestCase):
    """Node A forwards requests and responses between node B and the phone."""

    def setUp(self) -> None:
        self.wire = Wire()
        self.clock = Clock()
        self.hop = make_hop(self.wire, "a", self.clock)
        caller = make_hop(Wire(), "b", self.clock)
        routed = caller.route(TCP_BINDING, CALL_ID)
        assert routed is not None
        self.route = routed[1]

    def forwarded(self) -> tuple[Request, Flow]:
        self.assertEqual(len(self.wire.sent), 1, self.wire.sent)
        message, flow = self.wire.sent.pop()
        assert isinstance(message, Request)
        return message, flow

    def test_invite_to_phone(self) -> None:
        """Route popped, Via and two Record-Routes added, Max-Forwards decremented."""
        self.hop.receive(invite_from_b(self.route), b_flow())
        request, flow = self.forwarded()
        self.assertEqual((flow.transport, flow.host, flow.port), ("tcp", *PHONE))
        self.assertIs(flow.connection, self.wire.connection)
        self.assertEqual(request.get_all("Route"), [])
        vias = request.vias
        self.assertEqual(len(vias), 2)
        self.assertEqual(vias[0].transport, "TCP")
        self.assertTrue((vias[0].branch or "").startswith(HOP_BRANCH))
        self.assertEqual(request.get("Max-Forwards"), "69")
        routes = request.get_all("Record-Route")
        self.assertEqual(len(routes), 2)
        self.assertIn("transport=tcp", routes[0])
        self.assertNotIn("transport=", routes[1])
        self.assertIn("wnode=a", routes[1])
        self.assertEqual(self.wire.passed, [])

    def test_retransmission_and_cancel_share_the_branch(self) -> None:
        """The same incoming branch gives the same outgoing one (CANCEL matches)."""
        self.hop.receive(invite_from_b(self.route), b_flow())
        first, _ = self.forwarded()
        self.hop.receive(invite_from_b(self.route, method="CANCEL"), b_flow())
        cancel, _ = self.forwarded()
        self.assertEqual(first.top_via.branch, cancel.top_via.branch)
        self.assertEqual(cancel.get_all("Record-Route"), [])
        self.hop.receive(invite_from_b(self.route, branch="z9hG4bKother"), b_flow())
        other, _ = self.forwarded()
        self.assertNotEqual(first.top_via.branch, other.top_via.branch)

    def test_response_goes_back(self) -> None:
        """The phone's response loses our Via and goes where the request came from."""
        self.hop.receive(invite_from_b(self.route), b_flow())
        request, _ = self.forwarded()
        response = parse_datagram(phone_response(request, "180 Ringing"))
        self.hop.receive(response, phone_flow())
        self.assertEqual(len(self.wire.sent), 1)
        sent, flow = self.wire.sent.pop()
        assert isinstance(sent, Response)
        self.assertEqual((flow.transport, flow.host, flow.port), ("udp", *NODE_B))
        self.assertEqual([v.branch for v in sent.vias], ["z9hG4bKb1"])

    def test_forged_response_dropped(self) -> None:
        """A response with our branch prefix but no valid flow signature goes nowhere."""
        response = parse_datagram(
            f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.2;branch={HOP_BRANCH}x;wrx=aGk.AAAA\r\n"
            "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKv\r\nFrom: <sip:a@x>;tag=1\r\n"
            "To: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        self.hop.receive(response, b_flow())
        self.assertEqual((self.wire.sent, self.wire.passed), ([], []))

    def test_bye_from_phone(self) -> None:
        """The phone's in-dialog request goes on to the node in its Request-URI."""
        self.hop.receive(invite_from_b(self.route), b_flow())
        invite, _ = self.forwarded()
        route_set = invite.get_all("Record-Route")
        text = (
            "BYE sip:warden@127.0.0.3:5070 SIP/2.0\r\n"
            "Via: SIP/2.0/TCP 127.0.0.1:40000;branch=z9hG4bKp1\r\n"
            + "".join(f"Route: {r}\r\n" for r in route_set)
            + "From: <sip:1001@pbx>;tag=p1\r\nTo: <sip:1000@pbx>;tag=f1\r\n"
            "Call-ID: c1-0\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        )
        self.hop.receive(parse_datagram(text.encode()), phone_flow())
        bye, flow = self.forwarded()
        self.assertEqual((flow.transport, flow.host, flow.port), ("udp", *NODE_B))
        self.assertEqual(bye.get_all("Route"), [])
        self.assertEqual(bye.vias[0].transport, "UDP")
        self.assertEqual(bye.get_all("Record-Route"), [])

    def record_routes(self) -> list[str]:
        """The Record-Route set of the call's INVITE as the phone receives it."""
        self.hop.receive(invite_from_b(self.route), b_flow())
        invite, _ = self.forwarded()
        return invite.get_all("Record-Route")

    def in_dialog(self, method: str, routes: list[str], call_id: str = CALL_ID) -> Request:
        """An in-dialog request from the phone along ``routes``, to node B."""
        text = (
            f"{method} sip:warden@127.0.0.3:5070 SIP/2.0\r\n"
            "Via: SIP/2.0/TCP 127.0.0.1:40000;branch=z9hG4bKp9\r\n"
            + "".join(f"Route: {r}\r\n" for r in routes)
            + "From: <sip:1001@pbx>;tag=p1\r\nTo: <sip:1000@pbx>;tag=f1\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        )
        request = parse_datagram(text.encode())
        assert isinstance(request, Request)
        return request

    def refused(self) -> Flow:
        """The one thing sent was a 403; nothing was forwarded. Returns where it went."""
        self.assertEqual(len(self.wire.sent), 1, self.wire.sent)
        response, flow = self.wire.sent.pop()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 403)
        self.assertEqual(self.hop.forwarded, 0)
        return flow

    def test_no_open_relay(self) -> None:
        """From the phone, only live nodes are forwarded to: anything else gets 403."""
        request = self.in_dialog("MESSAGE", self.record_routes())
        request.uri_text = "sip:victim@198.51.100.7"
        request.raw = None
        self.hop.forwarded = 0
        self.hop.receive(request, phone_flow())
        self.refused()

    def test_token_from_outside_the_cluster(self) -> None:
        """A valid token presented from an address that is no live node is refused
        (403), whether it is the INVITE's route token or a Record-Route token."""
        outsider = Flow("udp", "198.51.100.7", 5060)
        self.hop.receive(invite_from_b(self.route), outsider)
        self.assertEqual(self.refused(), outsider)
        routes = self.record_routes()
        self.hop.forwarded = 0
        bye = invite_from_b(routes[-1], method="BYE")
        bye.set("To", "<sip:1001@pbx>;tag=p1")
        self.hop.receive(bye, outsider)
        self.refused()
        # Node B that left the cluster (no heartbeat) is an outsider too.
        self.hop.set_nodes({"a": "127.0.0.2:5060"})
        self.hop.receive(invite_from_b(self.route), b_flow())
        self.refused()

    def test_node_that_just_joined(self) -> None:
        """A valid token from an address that is no known node makes the holding
        node fetch the live nodes once: a node that joined since its last
        heartbeat is then served; an outsider is refused, and the next outsider
        within a second is refused without another fetch."""
        fetches: list[Deferred[None]] = []

        def refresh() -> Deferred[None]:
            fetches.append(Deferred())
            return fetches[-1]

        self.hop.refresh_nodes = refresh
        self.hop.set_nodes({"a": "127.0.0.2:5060"})  # B's heartbeat not seen yet
        self.hop.receive(invite_from_b(self.route), b_flow())
        self.hop.receive(invite_from_b(self.route, branch="z9hG4bKb2"), b_flow())
        self.assertEqual((len(fetches), self.wire.sent), (1, []))
        self.hop.set_nodes({"a": "127.0.0.2:5060", "b": "127.0.0.3:5070"})
        fetches[0].callback(None)
        self.assertEqual(len(self.wire.sent), 2)
        self.assertEqual({m.method for m, _ in self.wire.sent}, {"INVITE"})  # type: ignore[union-attr]
        self.wire.sent.clear()
        self.hop.forwarded = 0
        outsider = Flow("udp", "198.51.100.7", 5060)
        self.clock.advance(1.0)
        self.hop.receive(invite_from_b(self.route), outsider)
        self.assertEqual((len(fetches), self.wire.sent), (2, []))
        fetches[1].errback(Failure(StateUnavailable("redis down")))
        self.refused()
        self.hop.receive(invite_from_b(self.route), outsider)
        self.assertEqual(len(fetches), 2)
        self.refused()

    def test_route_token_expires(self) -> None:
        """The INVITE's route token lasts one INVITE transaction (ring timeout +
        Timer B): a CANCEL just before its end passes, an INVITE just after is refused."""
        self.clock.advance(LIFETIMES.transaction - 0.01)
        self.hop.receive(invite_from_b(self.route, method="CANCEL"), b_flow())
        self.forwarded()
        self.clock.advance(1.02)
        self.hop.forwarded = 0
        self.hop.receive(invite_from_b(self.route), b_flow())
        self.refused()

    def test_dialog_token_outlives_the_invite(self) -> None:
        """Record-Route tokens last the dialog lifetime: a BYE from either side an
        hour into the call passes; one after the lifetime is refused."""
        routes = self.record_routes()
        self.clock.advance(LIFETIMES.dialog - 1.0)
        self.hop.receive(self.in_dialog("BYE", routes), phone_flow())
        _bye, flow = self.forwarded()
        self.assertEqual((flow.host, flow.port), NODE_B)
        from_b = invite_from_b(routes[-1], method="BYE")
        from_b.set("To", "<sip:1001@pbx>;tag=p1")
        self.hop.receive(from_b, b_flow())
        self.forwarded()
        self.clock.advance(1.02)
        self.hop.forwarded = 0
        self.hop.receive(self.in_dialog("BYE", routes), phone_flow())
        self.refused()

    def test_token_replayed_against_another_flow(self) -> None:
        """A token names one phone's flow and one call: another phone presenting
        it (to reach the first phone), or anyone using it for another call, is
        refused and nothing reaches the phone."""
        routes = self.record_routes()
        self.hop.forwarded = 0
        replayed = invite_from_b(routes[-1], method="INVITE")
        replayed.set("To", "<sip:1001@pbx>;tag=p1")
        self.hop.receive(replayed, phone_flow(OTHER_PHONE))
        self.assertEqual(self.refused().port, OTHER_PHONE[1])
        # The route token and the Record-Route token, used for another call.
        other_call = invite_from_b(self.route)
        other_call.set("Call-ID", "c2-0")
        self.hop.receive(other_call, b_flow())
        self.refused()
        self.hop.receive(self.in_dialog("BYE", routes, call_id="c2-0"), phone_flow())
        self.refused()
        # The phone never sees a route token; presented by it, it is refused.
        self.hop.receive(self.in_dialog("BYE", [self.route]), phone_flow())
        self.refused()

    def test_response_from_elsewhere_dropped(self) -> None:
        """A response carrying our Via goes back only when it comes from the host
        the request was forwarded to, within the transaction's lifetime."""
        self.hop.receive(invite_from_b(self.route), b_flow())
        request, _ = self.forwarded()
        text = phone_response(request, "200 OK")
        self.hop.receive(parse_datagram(text), Flow("udp", "198.51.100.7", 5060))
        self.clock.advance(LIFETIMES.transaction + 1)
        self.hop.receive(parse_datagram(text), phone_flow())
        self.assertEqual((self.wire.sent, self.wire.passed), ([], []))

    def test_forged_route(self) -> None:
        """A Route naming this node with a bad signature is refused with 403."""
        forged = self.route.replace("wflow=", "wflow=A")
        self.hop.receive(invite_from_b(forged), b_flow())
        response, flow = self.wire.sent.pop()
        assert isinstance(response, Response)
        self.assertEqual((response.status, flow.host), (403, NODE_B[0]))

    def test_flow_gone(self) -> None:
        """The phone's connection closed: 430 Flow Failed (RFC 5626); an ACK gets nothing."""
        self.wire.connection = None
        self.hop.receive(invite_from_b(self.route), b_flow())
        response, _ = self.wire.sent.pop()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 430)
        self.hop.receive(invite_from_b(self.route, method="ACK"), b_flow())
        self.assertEqual(self.wire.sent, [])

    def test_max_forwards(self) -> None:
        """Max-Forwards 0 ends the hop with 483."""
        request = invite_from_b(self.route)
        request.set("Max-Forwards", "0")
        self.hop.receive(request, b_flow())
        response, _ = self.wire.sent.pop()
        assert isinstance(response, Response)
        self.assertEqual(response.status, 483)

    def test_send_failure_is_quiet(self) -> None:
        """A failed send is logged, nothing raised."""
        self.wire.broken = True
        self.hop.receive(invite_from_b(self.route), b_flow())
        self.assertEqual(self.hop.forwarded, 0)

    def test_other_messages_pass_through(self) -> None:
        """Requests without our Route, other nodes' Routes, and responses go on."""
        plain = invite_from_b("<sip:127.0.0.9;lr>")
        self.hop.receive(plain, b_flow())
        other = invite_from_b(self.route.replace("wnode=a", "wnode=b"))
        self.hop.receive(other, b_flow())
        response = parse_datagram(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKmine\r\n"
            b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\n"
            b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        self.hop.receive(response, b_flow())
        self.assertEqual(self.wire.passed, [plain, other, response])
        self.assertEqual(self.wire.sent, [])
