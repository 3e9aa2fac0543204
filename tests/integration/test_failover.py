"""
Two Warden nodes serving one PBX, end to end: node A on 127.0.0.2 and node B on
127.0.0.3 (Linux routes all of 127/8 to the loopback), sharing the throwaway
PostgreSQL (extensions, call records) and Redis (bindings, live calls, call
counters, heartbeats).

The callee, a SIPp UAS, registers through A; a SIPp UAC calls it through B with
G.711 RTP both ways (B reaches the UDP phone directly). Node A is SIGKILLed
during a call anchored on B: the call goes on to its end; the callee stays
reachable (a UDP binding of a dead node is still dialled directly); after it
re-registers through B its binding names B; A restarts and rejoins by itself;
every completed call has its record.

A phone registered over TCP through A can only be reached on its connection:
a call placed through B goes B -> A -> phone (A forwards on the phone's flow and
Record-Routes, so the BYE takes the same path), with RTP through B's relay.
An INVITE too large for a datagram (RFC 3261 §18.1.1) travels from B to A over
TCP.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from tests.integration.clients import LOCALHOST, poll
from tests.integration.harness import (
    REGISTER_SCENARIO,
    IntegrationTestCase,
    WardenProcess,
    free_media_port,
    free_port,
    provision,
    require_sipp,
    run_sipp,
    sipp_command,
    sipp_register_args,
    spawn,
    wardenctl,
)
from tests.integration.sipp_traces import read_sipp_errors, read_sipp_stats
from tests.integration.test_calls import PCAP, SCENARIOS, poll_async
from tests.integration.test_postgres_store import postgresql_settings
from warden.cluster import live_nodes
from warden.ops.loadtest.agent import SipAgent
from warden.ops.loadtest.results import Account
from warden.sip.hop import HOP_BRANCH
from warden.store.redis import RedisLocationService, connect_state
from warden.testing import servers

NODE_A, NODE_B = "127.0.0.2", "127.0.0.3"


class NodeProcess(WardenProcess):
    """A Warden node listening (SIP and media) on its own loopback address."""

    def __init__(self, workdir: Path, host: str, settings: dict[str, dict[str, object]]) -> None:
        self.host = host
        merged = {name: dict(table) for name, table in settings.items()}
        merged.setdefault("sip", {})["interface"] = host
        merged.setdefault("server", {}).update({"domains": [LOCALHOST, host], "node_id": ""})
        super().__init__(workdir, settings=merged)

    @property
    def address(self) -> tuple[str, int]:
        """Where this node's SIP listeners are."""
        return (self.host, self.port)


class FailoverTests(IntegrationTestCase):
    """Active-active nodes on shared PostgreSQL and Redis; one of them dies."""

    timeout = 400

    def setUp(self) -> None:
        """SIPp, its pcap, PostgreSQL and Redis are needed."""
        super().setUp()
        require_sipp(self)
        if not PCAP.exists():
            self.fail(f"{PCAP} is missing (Debian package sip-tester)")
        self.redis = servers.redis()
        self.cluster = uuid.uuid4().hex

    async def start_node(
        self, host: str, node_id: str, store: dict[str, dict[str, object]], media: int
    ) -> NodeProcess:
        settings = {
            **store,
            "state": {"url": self.redis.url, "timeout": 0.5, "heartbeat_interval": 0.5},
            "cluster": {"name": self.cluster, "node_id": node_id},
            "media": {"port_min": media, "port_max": media + 99},
            # Unreachable callees must fail (480), not reach a mailbox.
            "voicemail": {"enabled": False},
        }
        node = NodeProcess(self.workdir(), host, settings)
        self._wardens.append(node)
        self.addCleanup(node.cleanup)
        await node.start()
        return node

    async def two_nodes(
        self, first: int, media: int, count: int = 2
    ) -> tuple[NodeProcess, NodeProcess, Any, Any]:
        """
        Nodes A and B on the throwaway PostgreSQL, ``count`` extensions from
        ``first``, and a Redis connection once both heartbeats are seen.
        """
        store = postgresql_settings(self)
        a = await self.start_node(NODE_A, "a", store, media)
        users = await provision(a.config_path, count, first=first)
        b = await self.start_node(NODE_B, "b", store, media + 200)
        state = self.state()

        async def both() -> bool:
            return [n.node_id for n in await live_nodes(state)] == ["a", "b"]

        self.assertTrue(await poll_async(both, 10))
        return a, b, users, state

    def state(self) -> Any:
        from twisted.internet import reactor

        state = connect_state(self.redis.url, reactor, self.cluster, 5.0)
        self.addCleanup(state.close)
        return state

    async def register(self, node: NodeProcess, csv: Path, port: int) -> None:
        run_dir = self.workdir()
        result = await run_sipp(sipp_register_args(node.address, csv, 1, 10, local_port=port),
                                run_dir)  # fmt: skip
        self.assertEqual(result.code, 0, result.stderr + read_sipp_errors(run_dir))

    def answer(self, port: int, node: NodeProcess, calls: int) -> Any:
        """A SIPp UAS on ``port`` answering ``calls`` calls, echoing their RTP."""
        uas_args = [
            "-sf", str(SCENARIOS / "call_uas.xml"), "-i", LOCALHOST, "-p", str(port),
            "-mp", str(free_media_port()), "-rtp_echo", "-m", str(calls), "-trace_err",
            f"{node.host}:{node.port}",
        ]  # fmt: skip
        uas, process = spawn(sipp_command(uas_args), self.workdir())
        self.addCleanup(lambda: process.signalProcess("KILL") if uas.running else None)
        return uas

    def uac_args(
        self,
        node: NodeProcess,
        caller_csv: Path,
        hold_ms: int,
        scenario: Path = SCENARIOS / "call_uac.xml",
    ) -> list[str]:
        return [
            f"{node.host}:{node.port}",
            "-sf", str(scenario), "-inf", str(caller_csv), "-i", LOCALHOST,
            "-p", str(free_port()), "-mp", str(free_media_port()), "-m", "1", "-l", "1",
            "-d", str(hold_ms), "-timeout", "60s", "-timeout_error", "-trace_stat", "-trace_err",
        ]  # fmt: skip

    async def call(
        self,
        node: NodeProcess,
        caller_csv: Path,
        hold_ms: int = 1500,
        scenario: Path = SCENARIOS / "call_uac.xml",
    ) -> None:
        """One call through ``node``; it must succeed."""
        run_dir = self.workdir()
        args = self.uac_args(node, caller_csv, hold_ms, scenario)
        result = await run_sipp(args, run_dir, timeout=90)
        stats = read_sipp_stats(run_dir)
        context = f"UAC exit {result.code}\n{result.stderr}\n{read_sipp_errors(run_dir)}"
        self.assertEqual((result.code, stats.successful, stats.failed), (0, 1, 0), context)

    def caller_csv(self, users: Any, caller: str, callee: str) -> Path:
        """A SIPp injection file: ``caller`` (with its password) dials ``callee``."""
        path = self.workdir() / "caller.csv"
        pw = users.passwords[caller]
        path.write_text(f"SEQUENTIAL\n{caller};{pw};{callee};[authentication username={caller} password={pw}]\n")  # fmt: skip  # noqa: E501
        return path

    async def natted_phone(self, a: NodeProcess, users: Any, number: str) -> tuple[Any, Path]:
        """
        A SIPp UAS registered through A as a UDP phone behind a NAT (its Via
        and Contact name 192.0.2.55, not where its REGISTER came from: RFC
        3581 answers it at its source), answering one call and tracing the
        messages it gets; returns it and its trace directory.
        """
        work = self.workdir()
        natted = work / "register_natted.xml"
        contact = "[local_ip]:[local_port];transport=[transport]"
        via = "[local_ip]:[local_port];branch="
        scenario = REGISTER_SCENARIO.read_text().replace(contact, "192.0.2.55:5060")
        natted.write_text(scenario.replace(via, "192.0.2.55:5060;rport;branch="))
        csv, pw = work / "udp_callee.csv", users.passwords[number]
        csv.write_text(f"SEQUENTIAL\n{number};{pw};[authentication username={number} password={pw}]\n")  # fmt: skip  # noqa: E501
        uas_port = free_port()
        args = sipp_register_args(a.address, csv, 1, 10, local_port=uas_port, scenario=natted)
        registered_dir = self.workdir()
        result = await run_sipp(args, registered_dir)
        self.assertEqual(result.code, 0, result.stderr + read_sipp_errors(registered_dir))
        uas_dir = self.workdir()
        uas_args = [
            "-sf", str(SCENARIOS / "call_uas.xml"), "-i", LOCALHOST, "-p", str(uas_port),
            "-mp", str(free_media_port()), "-rtp_echo", "-m", "1", "-trace_msg",
            f"{a.host}:{a.port}",
        ]  # fmt: skip
        uas, process = spawn(sipp_command(uas_args), uas_dir)
        self.addCleanup(lambda: process.signalProcess("KILL") if uas.running else None)
        return uas, uas_dir

    async def records(self, node: NodeProcess) -> list[dict[str, Any]]:
        listed = await wardenctl(node.config_path, "cdr", "list", "--json")
        self.assertEqual(listed.code, 0, listed.stderr)
        records: list[dict[str, Any]] = json.loads(listed.stdout)
        return records

    async def test_cross_node_calls_and_failover(self) -> None:
        """Register via A, call via B; kill A mid-call; re-register via B; A rejoins."""
        a, b, users, state = await self.two_nodes(first=4000, media=33000)
        caller, callee = users.numbers

        # The callee's UAS registers through A and answers 3 calls, echoing RTP.
        work = self.workdir()
        uas_port = free_port()
        callee_csv = work / "callee.csv"
        pw = users.passwords[callee]
        callee_csv.write_text(f"SEQUENTIAL\n{callee};{pw};[authentication username={callee} password={pw}]\n")  # fmt: skip  # noqa: E501
        await self.register(a, callee_csv, uas_port)
        location = RedisLocationService(state)
        bindings = await location.bindings_for(callee, 0.0)
        self.assertEqual([bd.node_id for bd in bindings], ["a"])
        uas = self.answer(uas_port, b, calls=3)
        caller_csv = work / "caller.csv"
        pw = users.passwords[caller]
        caller_csv.write_text(f"SEQUENTIAL\n{caller};{pw};{callee};[authentication username={caller} password={pw}]\n")  # fmt: skip  # noqa: E501

        # 1. Through B to a phone registered through A.
        await self.call(b, caller_csv)

        # 2. A call anchored on B; A dies while it is up.
        uac_dir = self.workdir()
        uac, uac_process = spawn(sipp_command(self.uac_args(b, caller_csv, 6000)), uac_dir)
        self.addCleanup(lambda: uac_process.signalProcess("KILL") if uac.running else None)

        async def call_is_up() -> bool:
            live = await wardenctl(b.config_path, "calls", "--json")
            calls = json.loads(live.stdout) if live.code == 0 else []
            return [c["node_id"] for c in calls] == ["b"]

        self.assertTrue(await poll_async(call_is_up, 20), b.log_tail())
        await a.kill()
        self.assertTrue(await poll(lambda: not uac.running, 60), "the call did not end")
        stats = read_sipp_stats(uac_dir)
        context = f"UAC exit {uac.code}\n{uac.output()}\n{read_sipp_errors(uac_dir)}"
        self.assertEqual((uac.code, stats.successful, stats.failed), (0, 1, 0), context)

        # A's heartbeat expires: B sees one live node.
        async def only_b() -> bool:
            return [n.node_id for n in await live_nodes(state)] == ["b"]

        self.assertTrue(await poll_async(only_b, 10))

        # 3. The UDP phone registered through the dead A is still reached directly.
        await self.call(b, caller_csv)

        self.assertTrue(await poll(lambda: not uas.running, 15))
        self.assertEqual(uas.code, 0, uas.output())

        # 4. It re-registers through B (one registration cycle) and is reached.
        await self.register(b, callee_csv, uas_port)
        bindings = await location.bindings_for(callee, 0.0)
        self.assertEqual([bd.node_id for bd in bindings], ["b"])
        uas = self.answer(uas_port, b, calls=1)
        await self.call(b, caller_csv)
        self.assertTrue(await poll(lambda: not uas.running, 15))
        self.assertEqual(uas.code, 0, uas.output())

        # A restarts on the same configuration and rejoins without manual steps.
        await a.start()

        async def both() -> bool:
            return [n.node_id for n in await live_nodes(state)] == ["a", "b"]

        self.assertTrue(await poll_async(both, 10))

        # Every completed call has its record, written by B into PostgreSQL,
        # visible from either node.
        for node in (a, b):
            records = await self.records(node)
            self.assertEqual(len(records), 4, records)
            self.assertEqual({r["node_id"] for r in records}, {"b"})
            self.assertEqual({r["disposition"] for r in records}, {"ANSWERED"})
            for record in records:
                for side in ("a", "b"):
                    self.assertGreater(record["media"][side]["packets_in"], 20, record)

    async def test_tcp_phone_reached_through_its_node(self) -> None:
        """A call through B to a phone on a TCP connection to A goes through A."""
        from twisted.internet import reactor

        a, b, users, state = await self.two_nodes(first=4100, media=33400, count=3)
        caller, callee, natted_callee = users.numbers
        phone = SipAgent(reactor, NODE_A, a.port, transport="tcp", local_ip=LOCALHOST)
        await phone.start()
        self.addCleanup(phone.stop)
        registered = await phone.register(Account(callee, users.passwords[callee]))
        self.assertTrue(registered.ok, registered)
        bindings = await RedisLocationService(state).bindings_for(callee, 0.0)
        self.assertEqual([(bd.node_id, bd.received[:4]) for bd in bindings], [("a", "tcp:")])

        # B learns A's address from A's heartbeat, then routes through A.
        caller_csv = self.caller_csv(users, caller, callee)
        await self.call(b, caller_csv, hold_ms=2000)

        async def recorded() -> bool:
            listed = await wardenctl(b.config_path, "cdr", "list", "--json")
            return listed.code == 0 and len(json.loads(listed.stdout)) == 1

        self.assertTrue(await poll_async(recorded, 20))
        [record] = await self.records(b)
        self.assertEqual((record["disposition"], record["node_id"]), ("ANSWERED", "b"), record)
        for side in ("a", "b"):
            self.assertGreater(record["media"][side]["packets_in"], 20, record)
        # The phone answered once, got its ACK, and the caller's BYE ended its call.
        self.assertEqual((phone.answerer.answered, phone.answerer.unacknowledged), (1, 0))
        self.assertEqual(phone.answerer.calls, {})

        # A UDP phone behind a NAT (its Via and Contact are not where its
        # REGISTER came from; 192.0.2.55 is unreachable) is reached through A too.
        uas, uas_dir = await self.natted_phone(a, users, natted_callee)
        await self.call(b, self.caller_csv(users, caller, natted_callee), hold_ms=1000)
        self.assertTrue(await poll(lambda: not uas.running, 15))
        self.assertEqual(uas.code, 0, uas.output())
        trace = "".join(f.read_text() for f in uas_dir.glob("*_messages.log"))
        self.assertIn(f"SIP/2.0/UDP {NODE_A}:{a.port};branch={HOP_BRANCH}", trace)

        # The phone's connection is gone: A answers B's INVITE with 430 and B
        # reports the callee unavailable instead of hanging.
        await phone.stop()
        run_dir = self.workdir()
        result = await run_sipp(self.uac_args(b, caller_csv, 500), run_dir, timeout=90)
        stats = read_sipp_stats(run_dir)
        self.assertEqual((stats.successful, stats.failed), (0, 1), result.stderr)
        self.assertIn("SIP/2.0 480", read_sipp_errors(run_dir))

    async def test_large_invite_between_nodes_over_tcp(self) -> None:
        """
        A 5 KB INVITE (a caller offering many codecs) placed through B to a
        phone whose NAT binding A holds travels from B to A over TCP (RFC 3261
        §18.1.1: its Via from B says TCP), A forwards it whole, and the call is
        answered, carries media and hangs up through the same path.
        """
        a, b, users, _ = await self.two_nodes(first=4200, media=33800)
        caller, callee = users.numbers
        uas, uas_dir = await self.natted_phone(a, users, callee)
        scenario = self.workdir() / "call_uac_many_codecs.xml"
        codecs = range(96, 128)
        attributes = "".join(
            f"      a=rtpmap:{pt} X-CODEC-{pt}/8000\n"
            f"      a=fmtp:{pt} mode-set=0,1,2,3,4,5,6,7; profile-level-id={pt:06x}; {'x' * 48}\n"
            for pt in codecs
        )
        text = (SCENARIOS / "call_uac.xml").read_text()
        text = text.replace("RTP/AVP 8 101", "RTP/AVP 8 101 " + " ".join(map(str, codecs)))
        scenario.write_text(text.replace("      a=ptime:20\n", "      a=ptime:20\n" + attributes))
        await self.call(b, self.caller_csv(users, caller, callee), 1000, scenario)
        self.assertTrue(await poll(lambda: not uas.running, 15))
        self.assertEqual(uas.code, 0, uas.output())
        trace = "".join(f.read_text() for f in uas_dir.glob("*_messages.log"))
        [size] = re.findall(r"message received \[(\d+)\] bytes :\s+INVITE ", trace)
        self.assertGreater(int(size), 5000, trace)
        self.assertIn(f"SIP/2.0/UDP {NODE_A}:{a.port};branch={HOP_BRANCH}", trace)
        self.assertIn(f"Via: SIP/2.0/TCP {NODE_B}:{b.port};", trace)
        self.assertIn("a=fmtp:127 ", trace)

        async def recorded() -> bool:
            listed = await wardenctl(b.config_path, "cdr", "list", "--json")
            return listed.code == 0 and len(json.loads(listed.stdout)) == 1

        self.assertTrue(await poll_async(recorded, 20))
        [record] = await self.records(b)
        self.assertEqual(record["disposition"], "ANSWERED", record)
