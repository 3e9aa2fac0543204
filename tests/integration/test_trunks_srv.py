"""
A trunk found through DNS (RFC 3263, ADR 0034) end to end: a real ``twistd
warden`` whose trunk host ``pbx.test`` has no port, a local authoritative DNS
server (L{tests.integration.ha_srv.start_dns}) named in ``[dns] servers``
publishing two SRV targets of ``_sip._udp.pbx.test`` on 127.0.0.2, each a
SIPp ITSP: the priority-10 one answers 503, and the call goes through the
priority-20 one, before any other trunk.
"""

from __future__ import annotations

from tests.integration.ha_srv import ZONE, start_dns
from tests.integration.harness import LOCALHOST, provision
from tests.integration.sipp_traces import read_sipp_messages
from tests.integration.test_trunks import (
    ACCOUNT,
    CALLER_ID,
    DIALLED,
    ITSP_HOST,
    TrunkHarness,
    trunks_toml,
)


class SrvTrunkTests(TrunkHarness):
    """The trunk's servers come from SRV records; a failing one hands over to the next."""

    async def test_second_srv_target_takes_the_call(self) -> None:
        """
        The first SRV target (priority 10) answers 503; the same call goes to
        the second (priority 20), which answers; ``wardenctl trunks`` shows
        the second target in use.
        """
        first, first_port, first_dir = self.itsp(ITSP_HOST, "itsp_unavailable_uas.xml", 1)
        second, second_port, second_dir = self.itsp(ITSP_HOST, "itsp_uas.xml", 1)
        listening, dns_port = start_dns([(10, "a", first_port), (20, "b", second_port)], ITSP_HOST)
        self.addCleanup(listening.stopListening)
        toml = trunks_toml(
            [{"name": "pool", "host": ZONE, "register": False, "username": ACCOUNT,
              "password_file": "@PASSWORD_FILE@", "from_number": CALLER_ID}],
            [{"pattern": "_9NXXNXXXXXX", "strip": 1, "prefix": "1", "trunks": ["pool"]}],
            [],
        )  # fmt: skip
        warden = await self.warden_with(f'[dns]\nservers = ["{LOCALHOST}:{dns_port}"]\n\n{toml}')
        users = await provision(warden.config_path, 2, first=2000)
        await self.dial(warden, users, DIALLED)
        await self.sipp_finished(first, first_dir)
        await self.sipp_finished(second, second_dir)
        self.assertIn(f"INVITE sip:15552345678@{ZONE} SIP/2.0", read_sipp_messages(first_dir))
        self.assertIn(f"INVITE sip:15552345678@{ZONE} SIP/2.0", read_sipp_messages(second_dir))
        [pool] = await self.trunks_state(warden)
        self.assertEqual(
            (pool["target"], pool["address"], pool["port"]), (f"b.{ZONE}", ITSP_HOST, second_port)
        )
        self.assertEqual(
            pool["targets"], [f"{ITSP_HOST}:{first_port}", f"{ITSP_HOST}:{second_port}"]
        )
