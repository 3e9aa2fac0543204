"""
``wardenctl voicemail``: the voicemail plugin's mailboxes::

    wardenctl voicemail pin NUMBER [--clear]
    wardenctl voicemail list NUMBER [--json]
    wardenctl voicemail email NUMBER ADDRESS | --clear

``pin`` reads the new PIN (4 to 12 digits) from the terminal, asked twice
without echo, or from the first line of standard input, never from the command
line; it is stored as a scrypt hash, and a lock after wrong PINs is lifted.
``--clear`` removes the PIN (the mailbox then opens only with ``*97`` from its
own extension). ``list`` shows the mailbox's messages, oldest first.
``email`` sets the address each new message is emailed to, with its audio
(sent when ``[voicemail] smtp_host`` is set); ``--clear`` stops it.

Exit status: 0 done, 1 no such extension (or the database failed), 2 a PIN
that is not 4 to 12 digits, or two that differ, or an address that is not one.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

import attrs
from twisted.internet import threads
from twisted.internet.interfaces import IReactorTime

from warden import present
from warden import secrets as warden_secrets
from warden.config import WardenConfig
from warden.digits import is_digits
from warden.features.smtp import is_email_address
from warden.interfaces import IDirectory, IVoicemailStore
from warden.model.voicemail import Mailbox

if TYPE_CHECKING:
    from warden.store.backend import Stores

__all__ = ["add_commands", "run", "run_voicemail"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
MIN_PIN_DIGITS = 4
MAX_PIN_DIGITS = 12


def add_commands(areas: Any) -> None:
    """Add ``voicemail pin``, ``list`` and ``email`` to wardenctl's sub-parsers."""
    voicemail = areas.add_parser("voicemail", help="voicemail mailboxes: PINs, messages")
    commands = voicemail.add_subparsers(dest="command", metavar="COMMAND", required=True)
    pin = commands.add_parser(
        "pin", help="set a mailbox's PIN (read from the terminal or standard input)"
    )
    pin.add_argument("number", help="the mailbox (extension number)")
    pin.add_argument("--clear", action="store_true", help="remove the PIN instead")
    mail = commands.add_parser("email", help="email a mailbox's new messages to an address")
    mail.add_argument("number", help="the mailbox (extension number)")
    mail.add_argument("address", nargs="?", default="", help="the address (name@example.org)")
    mail.add_argument("--clear", action="store_true", help="stop emailing its messages")
    listing = commands.add_parser("list", help="list a mailbox's messages")
    listing.add_argument("number", help="the mailbox (extension number)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    voicemail.set_defaults(voicemail=True)


def read_pin(stdin: TextIO) -> str | None:
    """The new PIN: asked twice on a terminal (None when they differ), else one line."""
    if stdin.isatty():
        first = getpass.getpass("New PIN: ")
        second = getpass.getpass("New PIN again: ")
        return first if first == second else None
    return stdin.readline(64).strip()


async def run_voicemail(
    args: argparse.Namespace,
    store: IVoicemailStore,
    directory: IDirectory,
    out: TextIO,
    err: TextIO,
    stdin: TextIO,
    reactor: Any = None,
    fips: bool = False,
) -> int:
    """
    Run ``voicemail pin`` or ``voicemail list``; the exit status. With ``fips``
    a PIN is hashed with PBKDF2-HMAC-SHA256 (``[security] fips``).
    """
    number: str = args.number
    if not is_digits(number) or await directory.get_extension(number) is None:
        print(f"wardenctl: no extension {number}", file=err)
        return EXIT_FAILED
    if args.command == "list":
        messages = await store.list_messages(number)
        rows = [
            {
                "id": m.message_id, "folder": m.folder,
                "received": present.iso_time(m.received_at), "caller": m.caller,
                "caller_name": m.caller_name, "seconds": m.duration, "bytes": m.size,
            }
            for m in messages
        ]  # fmt: skip
        if args.json:
            print(json.dumps(rows, indent=2), file=out)
            return EXIT_OK
        print(f"{'RECEIVED':<19}  {'FOLDER':<6}  {'FROM':<24}  {'SECONDS':>7}  ID", file=out)
        for m in messages:
            caller = f"{m.caller} ({m.caller_name})" if m.caller_name else m.caller
            print(
                f"{present.local_time(m.received_at):<19}  {m.folder:<6}  {caller[:24]:<24}"
                f"  {m.duration:>7.1f}  {m.message_id}",
                file=out,
            )
        return EXIT_OK
    box = await store.get_mailbox(number)
    if args.command == "email":
        return await _set_email(args, store, box, out, err)
    if args.clear:
        await store.set_mailbox(attrs.evolve(box, pin_hash="", failed_logins=0, locked_until=0.0))
        print(f"PIN of mailbox {number} removed", file=out)
        return EXIT_OK
    pin = read_pin(stdin)
    if pin is None:
        print("wardenctl: the two PINs differ", file=err)
        return EXIT_USAGE
    if not (is_digits(pin) and MIN_PIN_DIGITS <= len(pin) <= MAX_PIN_DIGITS):
        print("wardenctl: a PIN is 4 to 12 digits", file=err)
        return EXIT_USAGE
    pins = warden_secrets.PasswordHasher(fips)
    if reactor is not None:
        hashed = await threads.deferToThreadPool(reactor, reactor.getThreadPool(), pins.hash, pin)
    else:
        hashed = pins.hash(pin)
    await store.set_mailbox(attrs.evolve(box, pin_hash=hashed, failed_logins=0, locked_until=0.0))
    print(f"PIN of mailbox {number} set", file=out)
    return EXIT_OK


async def _set_email(
    args: argparse.Namespace, store: IVoicemailStore, box: Mailbox, out: TextIO, err: TextIO
) -> int:
    address: str = "" if args.clear else args.address.strip()
    if args.clear == bool(args.address):
        print("wardenctl: give an ADDRESS or --clear", file=err)
        return EXIT_USAGE
    if address and not is_email_address(address):
        print(f"wardenctl: not an email address: {address!r}", file=err)
        return EXIT_USAGE
    await store.set_mailbox(attrs.evolve(box, email=address))
    if address:
        print(f"new messages of mailbox {box.number} are emailed to {address}", file=out)
    else:
        print(f"messages of mailbox {box.number} are no longer emailed", file=out)
    return EXIT_OK


def run(args: argparse.Namespace, config: WardenConfig) -> int:
    """Run a ``voicemail`` command on the configured store; the exit status."""
    from warden.ctl.store import react_on_store
    from warden.store.voicemail import SQLVoicemailStore

    async def work(reactor: IReactorTime, stores: Stores) -> int:
        return await run_voicemail(
            args, SQLVoicemailStore(stores.pool), stores.directory, sys.stdout, sys.stderr,
            sys.stdin, reactor, config.security.fips,
        )  # fmt: skip

    return react_on_store(config, work)
