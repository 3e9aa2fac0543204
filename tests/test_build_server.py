"""
The composition root's seams (L{warden.server.build_server}): a store built in
memory, a media relay and feature objects given by the caller, on the memory
reactor of L{warden.testing.reactor}; and that reactor itself.
"""

from __future__ import annotations

import gc
import os

import attrs
from twisted.internet import threads
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from warden.interfaces import IDurableLocation, IWardenReactor
from warden.model import Binding
from warden.server import warden_reactor
from warden.sip.hooks import CallHookBase
from warden.testing.memory import MemoryLocationService
from warden.testing.reactor import MemoryWardenReactor
from warden.testing.sipstack import FakeSipStack, stack_config


class MemoryWardenReactorTests(SynchronousTestCase):
    """The test reactor provides what Warden is built on."""

    def test_provides_the_warden_reactor(self) -> None:
        """verifyObject passes, and warden_reactor accepts it."""
        reactor = MemoryWardenReactor()
        self.assertTrue(verifyObject(IWardenReactor, reactor))
        self.assertIs(warden_reactor(reactor), reactor)

    def test_warden_reactor_names_what_is_missing(self) -> None:
        """A reactor without threads or UDP is refused with the interface named."""
        e = self.assertRaises(TypeError, warden_reactor, object())
        self.assertIn("does not provide IReactor", str(e))

    def test_thread_pool_runs_at_once(self) -> None:
        """deferToThreadPool fires with the result, or the failure, at once."""
        reactor = MemoryWardenReactor()
        pool = reactor.getThreadPool()
        d = threads.deferToThreadPool(reactor, pool, lambda: 6 * 7)
        self.assertEqual(self.successResultOf(d), 42)
        failed = threads.deferToThreadPool(reactor, pool, lambda: 1 // 0)
        self.failureResultOf(failed, ZeroDivisionError)

    def test_udp_binds_on_the_network(self) -> None:
        """listenUDP binds a port of the reactor's fake network."""
        reactor = MemoryWardenReactor()
        port = reactor.listenUDP(4000, DatagramProtocol(), "192.0.2.1")
        self.assertIs(reactor.network.ports[4000], port)


class MemoryLocationTests(SynchronousTestCase):
    """The memory location service is a durable one with nothing to do."""

    def test_durable(self) -> None:
        """verifyObject passes; load counts the bindings held; close fires."""
        location = MemoryLocationService()
        self.assertTrue(verifyObject(IDurableLocation, location))
        binding = Binding(aor="1001", contact="sip:1001@192.0.2.5", key="1001@192.0.2.5",
                          expires_at=10.0)  # fmt: skip
        self.successResultOf(location.apply("1001", [binding], []))
        self.assertEqual(self.successResultOf(location.load()), 1)
        self.assertIsNone(self.successResultOf(location.close()))


class Hook(CallHookBase):
    """A call hook that is not an installed plugin."""


class BuiltStackTests(SynchronousTestCase):
    """A stack built by build_server on a store in memory."""

    def test_no_database(self) -> None:
        """Nothing is opened under the data directory: no database, no locks, no spool."""
        data_dir = os.path.abspath(self.mktemp())
        config = stack_config(frozenset({"pbx.test"}))
        config = attrs.evolve(config, server=attrs.evolve(config.server, data_dir=data_dir))
        stack = FakeSipStack(config=config)
        self.assertEqual(stack.sip.settings.realm, "pbx.test")
        self.assertFalse(os.path.exists(data_dir))

    def test_start_and_stop(self) -> None:
        """The root loads the memory bindings, starts the SIP service; stop closes the relay."""
        stack = FakeSipStack()
        # The stack's UDP listener is fed directly, on a fake socket of its own;
        # starting the root binds it on the reactor's fake network instead.
        stack.udp.transport = None
        stack.root.startService()
        self.assertTrue(stack.sip.running)
        self.assertTrue(stack.udp.transport is not None)
        self.successResultOf(stack.root.stopService())
        self.assertFalse(stack.sip.running)
        # Nothing failed unseen: a failure left in a Deferred is logged when collected.
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_features_are_providers(self) -> None:
        """A feature object given to build_server runs as a call hook of the calls."""
        hook = Hook()
        stack = FakeSipStack(hooks=[hook])
        assert stack.sip.calls is not None
        self.assertEqual(list(stack.sip.calls.hooks.hooks), [hook])
