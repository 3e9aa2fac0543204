"""
The registrar end to end: a real ``twistd warden``, extensions imported with
``wardenctl``, and SIPp registering them with digest authentication (RFC 3261
§10, §22) over UDP and TCP; bindings survive a restart (SIGTERM, start again on
the same data directory).
"""

from __future__ import annotations

import signal

from tests.integration.clients import LOCALHOST, poll
from tests.integration.harness import (
    REALM,
    WARDENCTL,
    IntegrationTestCase,
    Users,
    WardenProcess,
    free_port,
    provision,
    require_sipp,
    run_process,
    run_sipp,
    sipp_register_args,
    user_password,
    write_user_files,
)
from tests.integration.sipp_traces import SippStats, read_sipp_errors, read_sipp_stats
from warden.sip.headers import parse_address


class SippRegistrationTests(IntegrationTestCase):
    """SIPp registers many extensions against a real Warden."""

    def setUp(self) -> None:
        """SIPp is needed (skipped locally, a failure under CI=true, when missing)."""
        super().setUp()
        require_sipp(self)

    async def register_all(
        self,
        warden: WardenProcess,
        users: Users,
        rate: float,
        transport: str = "u1",
        local_port: int = 0,
    ) -> SippStats:
        """Run the register scenario once for every user; fail unless all succeed."""
        run_dir = self.workdir()
        calls = len(users.numbers)
        args = sipp_register_args(
            warden.address, users.sipp_csv, calls, rate, transport, local_port, timeout=120
        )
        result = await run_sipp(args, run_dir, timeout=180)
        stats = read_sipp_stats(run_dir)
        context = (
            f"sipp exit {result.code}; created {stats.created}, successful"
            f" {stats.successful}, failed {stats.failed}\n{result.stderr}\n"
            f"{read_sipp_errors(run_dir)}"
        )
        self.assertEqual(result.code, 0, context)
        self.assertEqual((stats.successful, stats.failed), (calls, 0), context)
        return stats

    async def test_thousand_registrations_udp(self) -> None:
        """
        1,000 extensions each register once over UDP (401 challenge, then digest
        credentials): SIPp exits 0, counts 1,000 successful and 0 failed calls,
        and the database holds 1,000 bindings.
        """
        warden = await self.start_warden()
        users = await provision(warden.config_path, 1000)
        await self.register_all(warden, users, rate=200)
        self.assertEqual(warden.count_bindings(), 1000)

    async def test_registrations_tcp(self) -> None:
        """
        200 extensions register over one TCP connection (``-t t1``); every
        registration succeeds and 200 bindings are stored.
        """
        warden = await self.start_warden()
        users = await provision(warden.config_path, 200)
        await self.register_all(warden, users, rate=100, transport="t1")
        self.assertEqual(warden.count_bindings(), 200)

    async def test_restart_keeps_bindings(self) -> None:
        """
        Bindings are durable: after 100 extensions register, Warden shuts down
        cleanly on SIGTERM leaving 100 rows in ``bindings``; started again on the
        same data directory it logs that it restored 100 bindings, still has 100
        rows, and answers an authenticated REGISTER query (no Contact) with the
        Contact SIPp registered.
        """
        warden = await self.start_warden()
        users = await provision(warden.config_path, 100)
        sipp_port = free_port()
        await self.register_all(warden, users, rate=100, local_port=sipp_port)

        # twistd re-raises the signal that stopped it once it has shut down cleanly.
        self.assertIn(await warden.stop(), (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down.", warden.log_text())
        self.assertEqual(warden.count_bindings(), 100)

        await warden.start()
        self.assertIn("100 bindings restored", warden.log_text())
        self.assertEqual(warden.count_bindings(), 100)
        client = await self.sip_client(warden)
        for number in (users.numbers[0], users.numbers[57], users.numbers[-1]):
            response = await client.register(number, users.passwords[number])
            self.assertEqual(response.status, 200, f"query for {number}: {response.headers}")
            contacts = [parse_address(v) for v in response.get_all("Contact")]
            self.assertEqual(
                [(c.uri.user, c.uri.host, c.uri.port) for c in contacts],
                [(number, LOCALHOST, sipp_port)],
            )
            expires = int(contacts[0].param("expires") or 0)
            self.assertTrue(3000 < expires <= 3600, f"expires={expires}")


class RealmMismatchTests(IntegrationTestCase):
    """Extensions stored for another realm than the server's are explained, not silent."""

    async def test_import_for_another_realm_is_explained(self) -> None:
        """
        ``wardenctl --domain other.test extension import`` on the data directory
        of a Warden whose realm is warden.test stores digests for other.test: at
        start Warden logs one warning with the count and the fix, and a phone of
        such an extension, registering with its right password, gets 403 and a
        log line naming both realms.
        """
        workdir = self.workdir()
        data_dir = WardenProcess(workdir).data_dir
        _, extensions_csv = write_user_files(workdir, 3, first=4001)
        ctl = [*WARDENCTL, "--data-dir", str(data_dir), "--domain", "other.test"]
        imported = await run_process(
            [*ctl, "extension", "import", str(extensions_csv)], workdir, 60
        )
        self.assertEqual(imported.code, 0, imported.stderr)
        self.assertIn("for realm other.test", imported.stdout)
        warden = await self.start_warden(workdir=workdir)
        started = "3 of 3 extensions have passwords stored for another realm ('other.test')"
        self.assertTrue(await poll(lambda: started in warden.log_text(), 5.0), warden.log_tail())
        self.assertIn(f"than this server's realm '{REALM}'", warden.log_text())
        client = await self.sip_client(warden)
        contact = f"<sip:4001@{LOCALHOST}:5999>"
        response = await client.register("4001", user_password("4001"), contact)
        self.assertEqual(response.status, 403)
        named = (
            "Extension 4001 from 127.0.0.1 cannot authenticate:"
            " its password is stored for realm 'other.test'"
        )
        self.assertTrue(await poll(lambda: named in warden.log_text(), 5.0), warden.log_tail())
