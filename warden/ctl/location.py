"""
``wardenctl location``: the dispatchable locations of emergency calls (the
e911 plugin, ADR 0027)::

    wardenctl location add NAME --civic "country=US,A1=CA,A3=San Jose,RD=Main St,HNO=100"
    wardenctl location list [--json]
    wardenctl location remove NAME
    wardenctl location map NETWORK NAME        (10.1.2.0/24; devices that move)
    wardenctl location unmap NETWORK

An extension's own location is set with ``wardenctl extension set NUMBER
--location NAME`` (``--location ""`` clears it). ``add`` replaces a location of
the same name. Civic address elements are the RFC 4119 / RFC 5139 names
(``country``, ``A1`` ... ``A6``, ``RD``, ``HNO``, ``FLR``, ``ROOM``, ...); an
unknown one is refused. Each change is in the audit log.

Exit status: 0 done, 1 no such location (or the database failed), 2 a civic
address, name or network that cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from twisted.internet.interfaces import IReactorTime

from warden.config import WardenConfig
from warden.ctl.audit import CliAudit, action_of
from warden.interfaces import ICivicLocationStore
from warden.model.emergency import (
    CIVIC_ELEMENTS,
    CivicError,
    CivicLocation,
    check_location_name,
    parse_civic,
    parse_network,
)

if TYPE_CHECKING:
    from warden.store.backend import Stores

__all__ = ["add_commands", "run", "run_location"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_commands(areas: Any) -> None:
    """Add ``location add|list|remove|map|unmap`` to wardenctl's sub-parsers."""
    location = areas.add_parser(
        "location", help="dispatchable locations of emergency calls (E911)"
    )
    commands = location.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add = commands.add_parser("add", help="add or replace a location (civic address)")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--civic", required=True,
        help="ELEMENT=value,... with RFC 5139 element names: " + ", ".join(CIVIC_ELEMENTS),
    )  # fmt: skip
    listing = commands.add_parser("list", help="list locations, extensions and networks")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    remove = commands.add_parser(
        "remove", help="remove a location (and its extension and network assignments)"
    )
    remove.add_argument("name", metavar="NAME")
    mapping = commands.add_parser("map", help="map a network (CIDR) to a location")
    mapping.add_argument("network", metavar="NETWORK")
    mapping.add_argument("name", metavar="NAME")
    unmap = commands.add_parser("unmap", help="forget a network's location")
    unmap.add_argument("network", metavar="NETWORK")
    location.set_defaults(civic_location=True)


async def _list(store: ICivicLocationStore, as_json: bool, out: TextIO) -> None:
    locations = await store.list_locations()
    extensions = await store.list_extension_locations()
    networks = await store.list_networks()
    if as_json:
        document = {
            "locations": [{"name": x.name, "civic": x.civic, "text": x.text} for x in locations],
            "extensions": [{"number": n, "location": loc} for n, loc in extensions],
            "networks": [{"network": n, "location": loc} for n, loc in networks],
        }
        print(json.dumps(document, indent=2), file=out)
        return
    print(f"{'LOCATION':<24}  ADDRESS", file=out)
    for x in locations:
        print(f"{x.name:<24}  {x.text}", file=out)
    for title, rows in (("EXTENSION", extensions), ("NETWORK", networks)):
        if rows:
            print(f"\n{title:<24}  LOCATION", file=out)
            for key, name in rows:
                print(f"{key:<24}  {name}", file=out)


async def run_location(
    args: argparse.Namespace,
    store: ICivicLocationStore,
    audit: CliAudit,
    out: TextIO,
    err: TextIO,
) -> int:
    """Run one ``location`` command and audit it; the exit status."""
    try:
        code = await _run(args, store, audit, out, err)
    except CivicError as e:
        print(f"wardenctl: {e}", file=err)
        code = EXIT_USAGE
    except KeyError as e:
        print(f"wardenctl: no location {e.args[0]}", file=err)
        code = EXIT_FAILED
    if args.command != "list":
        await audit.record(action_of(args), code)
    return code


async def _run(
    args: argparse.Namespace,
    store: ICivicLocationStore,
    audit: CliAudit,
    out: TextIO,
    err: TextIO,
) -> int:
    command = args.command
    if command == "list":
        await _list(store, args.json, out)
        return EXIT_OK
    if command == "add":
        name = check_location_name(args.name)
        location = CivicLocation(name, parse_civic(args.civic))
        audit.target, audit.detail = name, {"civic": sorted(location.civic)}
        new = await store.put_location(location)
        print(f"{'added' if new else 'replaced'} location {name}: {location.text}", file=out)
        return EXIT_OK
    if command == "remove":
        audit.target = args.name
        if not await store.remove_location(args.name):
            raise KeyError(args.name)
        print(f"removed location {args.name}", file=out)
        return EXIT_OK
    network = parse_network(args.network)
    audit.target = network
    if command == "map":
        audit.detail = {"location": args.name}
        await store.map_network(network, args.name)
        print(f"network {network} is at location {args.name}", file=out)
        return EXIT_OK
    if not await store.unmap_network(network):
        print(f"wardenctl: network {network} has no location", file=err)
        return EXIT_FAILED
    print(f"network {network} unmapped", file=out)
    return EXIT_OK


async def set_extension_location(
    store: ICivicLocationStore, number: str, name: str, out: TextIO
) -> None:
    """
    ``extension set NUMBER --location NAME``: assign ``name`` ("" clears).

    Raises:
        KeyError: no location ``name``.
    """
    await store.set_extension_location(number, name)
    if name:
        print(f"extension {number} is at location {name}", file=out)
    else:
        print(f"extension {number} has no location of its own", file=out)


def run(args: argparse.Namespace, config: WardenConfig) -> int:
    """Run a ``location`` command on the configured store; the exit status."""
    from warden.ctl.store import react_on_store
    from warden.store.backend import admin_stores
    from warden.store.civic import SQLCivicLocationStore

    async def work(reactor: IReactorTime, stores: Stores) -> int:
        audit = CliAudit(admin_stores(stores.pool)[1], reactor)
        civic = SQLCivicLocationStore(stores.pool)
        return await run_location(args, civic, audit, sys.stdout, sys.stderr)

    return react_on_store(config, work)
