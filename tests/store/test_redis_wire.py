"""
The direct command path to Redis (``warden.store.redis_wire``): command
packing, EVALSHA with its EVAL fallback, the choice of a ready connection, and
the decoded-bindings cache of ``RedisLocationService``
(``warden.store.binding_json.BindingTexts``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import DeferredQueue
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.store.conformance import binding
from warden.store import redis_wire
from warden.store.binding_json import BindingTexts, binding_json
from warden.store.redis_wire import DirectCommands, DirectSender, Script, pack_command


class FakeConnection(DirectCommands):
    """A txredisapi protocol's state as DirectCommands uses it, on a StringTransport."""

    def __init__(self) -> None:
        self.connected = 1
        self.pipelining = False
        self.inMulti = False
        self.transport = StringTransport()
        self.replyQueue: DeferredQueue[Any] = DeferredQueue()

    def sent(self) -> bytes:
        """What was written, once; the buffer is emptied."""
        data: bytes = self.transport.value()
        self.transport.clear()
        return data


class FakeFactory:
    """A txredisapi factory's pool of connections."""

    def __init__(self, *pool: Any) -> None:
        self.pool = list(pool)


class PackTests(SynchronousTestCase):
    """Commands are packed as RESP arrays of bulk strings."""

    def test_resp(self) -> None:
        """Strings are sent as UTF-8 bulk strings, bytes as they are."""
        self.assertEqual(
            pack_command(["SET", "ké", b"\xff"]),
            b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$1\r\n\xff\r\n",
        )

    def test_python_packer_matches(self) -> None:
        """Without hiredis, the pure-Python packer sends the same bytes."""
        args = ["EVALSHA", "abc", "2", "warden:x:loc:100", "", "sip:ä@h", b"\r\n"]
        self.patch(redis_wire, "_hiredis_pack", None)
        self.assertEqual(
            pack_command(args),
            b"*7\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n2\r\n$16\r\nwarden:x:loc:100\r\n"
            b"$0\r\n\r\n$8\r\nsip:\xc3\xa4@h\r\n$2\r\n\r\n\r\n",
        )


class DirectSenderTests(SynchronousTestCase):
    """Scripts run by SHA-1 on a ready connection; the source is sent only when needed."""

    script = Script.of("return ARGV[1]")

    def test_script_sha(self) -> None:
        """A script is named by the SHA-1 of its source, as Redis names it."""
        self.assertEqual(self.script.sha, hashlib.sha1(b"return ARGV[1]").hexdigest())

    def test_evalsha(self) -> None:
        """A script goes out as EVALSHA with its keys and arguments; the reply fires."""
        conn = FakeConnection()
        sender = DirectSender(FakeFactory(conn))
        d = sender.script(self.script, ["k"], ["v"])
        self.assertEqual(conn.sent(), pack_command(["EVALSHA", self.script.sha, "1", "k", "v"]))
        conn.replyQueue.put("v")
        self.assertEqual(self.successResultOf(d), "v")

    def test_unknown_script_is_sent(self) -> None:
        """NOSCRIPT (a restarted Redis) makes the sender retry once with EVAL."""
        conn = FakeConnection()
        d = DirectSender(FakeFactory(conn)).script(self.script, [], ["v"])
        conn.sent()
        conn.replyQueue.put(RuntimeError("NOSCRIPT No matching script. Please use EVAL."))
        self.assertNoResult(d)
        self.assertEqual(conn.sent(), pack_command(["EVAL", "return ARGV[1]", "0", "v"]))
        conn.replyQueue.put("v")
        self.assertEqual(self.successResultOf(d), "v")

    def test_other_errors_fail(self) -> None:
        """Any other error reply fails the command, without a retry."""
        conn = FakeConnection()
        d = DirectSender(FakeFactory(conn)).script(self.script, [], [])
        conn.sent()
        conn.replyQueue.put(RuntimeError("ERR boom"))
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(conn.sent(), b"")

    def test_ready_connection(self) -> None:
        """Only a connected protocol outside MULTI and pipelines is used."""
        down, multi, ready = FakeConnection(), FakeConnection(), FakeConnection()
        down.connected = 0
        multi.inMulti = True
        self.assertIs(DirectSender(FakeFactory(down, multi, ready)).connection(), ready)
        self.assertIsNone(DirectSender(FakeFactory(down, multi)).connection())
        self.assertIsNone(DirectSender(FakeFactory(object())).connection())
        self.assertIsNone(DirectSender(None).connection())


class BindingTextsTests(SynchronousTestCase):
    """Decoded bindings are reused only for exactly the texts they came from."""

    def test_same_texts_reused(self) -> None:
        """Reading the texts last seen gives the same bindings without decoding."""
        texts = BindingTexts()
        a = binding("100", "a", 2000.0)
        first = texts.decode("100", [binding_json(a)], {})
        self.assertEqual(first, [a])
        self.assertIs(texts.decode("100", [binding_json(a)], {}), first)

    def test_changed_texts_decoded(self) -> None:
        """A changed text is decoded; an unchanged one is reused; known ones are used."""
        texts = BindingTexts()
        a, b, c = (binding("100", k, 2000.0) for k in "abc")
        texts.decode("100", [binding_json(a)], {})
        b2 = binding("100", "b", 3000.0)
        found = texts.decode(
            "100", [binding_json(a), binding_json(b2), binding_json(c)], {binding_json(c): c}
        )
        self.assertEqual(found, [a, b2, c])
        self.assertIs(found[2], c)
        self.assertNotEqual(found[1], b)

    def test_bounded(self) -> None:
        """At most ``limit`` AORs are kept, the least recently seen dropped first."""
        texts = BindingTexts(limit=2)
        for aor in ["100", "200", "100", "300"]:
            texts.decode(aor, [binding_json(binding(aor, "a", 2000.0))], {})
        self.assertEqual(sorted(texts._last), ["100", "300"])
        texts.forget("100")
        self.assertEqual(sorted(texts._last), ["300"])
