"""
``wardenctl registrations`` and ``wardenctl nodes``: what the cluster's shared
state (``[state] url``, Redis) holds: every binding with the node and flow it
arrived on, and the nodes whose heartbeat is alive.

A binding whose node is not alive is shown with that node marked ``(down)``:
a UDP phone there is still reached directly; a TCP phone is reached again once
it re-registers through a live node.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from warden.cluster import NodeInfo, live_nodes
from warden.config import WardenConfig
from warden.model import Binding
from warden.store.redis import RedisLiveCalls, RedisLocationService, RedisState, connect_state

# Seconds wardenctl waits for Redis per command.
CTL_TIMEOUT = 5.0


def add_commands(areas: Any) -> None:
    """Add ``registrations`` and ``nodes`` to wardenctl's sub-parsers."""
    registrations = areas.add_parser(
        "registrations", help="list registered phones, with the node each came through"
    )
    registrations.add_argument("extension", nargs="?", help="only this extension")
    registrations.add_argument("--json", action="store_true", help="print JSON")
    registrations.set_defaults(handler=_registrations)
    nodes = areas.add_parser("nodes", help="list the cluster's live nodes")
    nodes.add_argument("--json", action="store_true", help="print JSON")
    nodes.set_defaults(handler=_nodes)


def open_state(config: WardenConfig, reactor: Any) -> RedisState | None:
    """The shared state of ``config`` for wardenctl, or None without ``[state] url``."""
    if not config.state.url:
        return None
    return connect_state(config.state.url, reactor, config.cluster.name, CTL_TIMEOUT, poolsize=1)


def live_calls(state: RedisState) -> RedisLiveCalls:
    """The live calls of every node (``wardenctl calls`` with ``[state] url``)."""
    return RedisLiveCalls(state)


async def _with_state(ctx: Any, command: Any) -> None:
    """Run ``command(state)`` on the shared state of ``ctx.config``, then close it."""
    from warden.ctl.main import EXIT_FAILED, CommandError
    from warden.errors import StateUnavailable

    state = open_state(ctx.config, ctx.clock)
    if state is None:
        raise CommandError(
            f"{ctx.args.area} needs [state] url: without it each node keeps its own state",
            EXIT_FAILED,
        )
    try:
        await command(state)
    except StateUnavailable as e:
        raise CommandError(str(e), EXIT_FAILED) from None
    finally:
        await state.close()


def binding_json(binding: Binding, now: float, alive: set[str]) -> dict[str, Any]:
    """A binding for ``--json``: every field, seconds left, and its node's liveness."""
    return {
        **attrs.asdict(binding),
        "expires_in": max(0, int(binding.expires_at - now)),
        "node_alive": binding.node_id in alive,
    }


def registrations_table(bindings: list[Binding], now: float, alive: set[str]) -> list[str]:
    """Extension, contact, flow, node (``(down)`` when dead), seconds left."""
    from warden.present import table

    rows = [("EXTENSION", "CONTACT", "FLOW", "NODE", "EXPIRES")]
    for b in bindings:
        node = b.node_id or "-"
        if b.node_id and b.node_id not in alive:
            node += " (down)"
        rows.append((b.aor, b.contact, b.received, node, str(max(0, int(b.expires_at - now)))))
    return table(rows)


def nodes_table(nodes: list[NodeInfo], now: float) -> list[str]:
    """Node, SIP address, up for, last heartbeat (seconds ago)."""
    from warden.present import clock_duration, table

    rows = [("NODE", "SIP", "UP", "SEEN")]
    for n in nodes:
        seen = f"{max(0.0, now - n.seen_at):.1f}s ago"
        rows.append((n.node_id, n.sip, clock_duration(now - n.started_at), seen))
    return table(rows)


async def _registrations(ctx: Any) -> None:
    await _with_state(ctx, lambda state: _list_registrations(ctx, state))


async def _list_registrations(ctx: Any, state: RedisState) -> None:
    now = ctx.clock.seconds()
    location = RedisLocationService(state)
    if ctx.args.extension:
        bindings = sorted(await location.bindings_for(ctx.args.extension, now), key=_key)
    else:
        bindings = await location.all_bindings(now)
    alive = {n.node_id for n in await live_nodes(state)}
    if ctx.args.json:
        ctx.print(json.dumps([binding_json(b, now, alive) for b in bindings], indent=2))
    elif bindings:
        for line in registrations_table(bindings, now, alive):
            ctx.print(line)
    else:
        ctx.print("no registrations")


def _key(binding: Binding) -> str:
    return binding.key


async def _nodes(ctx: Any) -> None:
    await _with_state(ctx, lambda state: _list_nodes(ctx, state))


async def _list_nodes(ctx: Any, state: RedisState) -> None:
    nodes = await live_nodes(state)
    now = ctx.clock.seconds()
    if ctx.args.json:
        ctx.print(json.dumps([attrs.asdict(n) for n in nodes], indent=2))
    elif nodes:
        for line in nodes_table(nodes, now):
            ctx.print(line)
    else:
        ctx.print("no live nodes")
