"""One node process: `python -m node.process.main --config cluster.toml --node n0`.

`tally up` starts one of these per [[node]]; it runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from consensus.pow.config import PowConfig
from ledger.block import Genesis
from ledger.crypto import KeyPair
from ledger.store import STATE_HISTORY, Store, StoreDamaged
from node.cluster import broker
from node.cluster.bootstrap import load_genesis, load_key
from node.cluster.config import ClusterConfig, ConfigError, load_config
from node.cluster.tlscerts import client_context
from node.engines import chain_engines
from node.faults.byzantine import Byzantine
from node.faults.controller import FaultController
from node.faults.network import FaultyTransport, NetworkRules
from node.process import admin, limits, methods, streaming
from node.process.factory import consensus_config, mines, open_replica
from node.process.metrics import CONTENT_TYPE_LATEST
from node.process.miner import Miner
from node.process.runtime import NodeRuntime
from node.rpc.jsonrpc import DISPATCHER, Dispatcher, make_app, start_site
from node.transport.auth import KeyAuthenticator
from node.transport.envelope import Opener, Sealer
from node.transport.mqtt import MqttLink, MqttTransport
from node.transport.tcp import TcpTransport

log = logging.getLogger("tally.node")


def build_node(
    cfg: ClusterConfig, node_id: str, twin: bool = False
) -> tuple[NodeRuntime, web.Application]:
    """The node's runtime and RPC app.  A twin (fault injection) shares the member's key but
    has its own store and an unlisted peer port, so it only speaks, as that member."""
    cfg.node(node_id)  # an unknown id fails here, with the ids there are
    genesis = load_genesis(cfg)
    key = load_key(cfg.node_key_path(node_id))
    db = cfg.twin_db_path(node_id) if twin else cfg.db_path(node_id)
    db.parent.mkdir(parents=True, exist_ok=True)
    config = consensus_config(cfg, genesis)
    keep = config.kept_blocks if isinstance(config, PowConfig) else STATE_HISTORY
    store = open_store(cfg, db, genesis, keep)  # checked before anything else starts
    listen_port = 0 if twin else None
    replica = open_replica(config, node_id, key, store)
    miner = Miner() if mines(config) else None
    inner = build_transport(cfg, node_id, key, genesis, listen_port)
    rules = NetworkRules(node_id)
    transport = FaultyTransport(inner, rules, cfg.node_ids(), seed=int.from_bytes(os.urandom(4)))
    byzantine = Byzantine(node_id, cfg.node_ids(), seed=int.from_bytes(os.urandom(4)))
    faults = FaultController(node_id, rules, byzantine)
    for fault in cfg.faults:  # cluster.toml [[fault]] entries for this node
        if fault.node in ("*", node_id) and fault.category != "process" and fault.kind != "twins":
            faults.inject(fault, 0.0, store.height)
    runtime = NodeRuntime(
        node_id, genesis, replica, store, transport, key, faults, miner, cfg.rpc.subscriber_queue
    )
    token = cfg.admin_token_path.read_text().strip() if cfg.admin_token_path.exists() else None
    dispatcher = Dispatcher(admin_token=token)
    methods.register(dispatcher, runtime, cfg.nodes)
    admin.register(dispatcher, runtime)
    app = make_app(dispatcher)

    async def metrics(_: web.Request) -> web.Response:
        # CONTENT_TYPE_LATEST carries a charset, which aiohttp wants apart
        kind, _sep, charset = CONTENT_TYPE_LATEST.partition("; charset=")
        return web.Response(body=runtime.metrics.render(), content_type=kind, charset=charset)

    app.router.add_get("/metrics", metrics)
    streaming.routes(app, runtime.hub)
    return runtime, app


def open_store(
    cfg: ClusterConfig, db: Path, genesis: Genesis, keep_states: int = STATE_HISTORY
) -> Store:
    """The node's store, checked (SQLite's integrity_check, the stored chain's head and the
    state root) before the node serves anything.  A damaged one raises StoreDamaged with
    `damaged_store = "refuse"`; with "rebuild" it is moved aside (kept for inspection) and the
    node starts from an empty store, which state transfer fills from its peers."""

    def open_checked() -> Store:
        return Store(
            db,
            genesis,
            engines=chain_engines(),
            synchronous=cfg.sqlite_synchronous,
            verify="full",
            keep_states=keep_states,
        )

    try:
        return open_checked()
    except StoreDamaged as e:
        if cfg.damaged_store != "rebuild":
            raise
        aside = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        for suffix in ("", "-wal", "-shm"):  # the WAL belongs to the file it was written for
            part = db.with_name(db.name + suffix)
            if part.exists():
                part.rename(aside.with_name(aside.name + suffix))
        log.warning(
            "%s; moved aside to %s (damaged_store = rebuild): starting from an empty store, "
            "to be filled from peers",
            e,
            aside.name,
        )
    return open_checked()


def build_transport(
    cfg: ClusterConfig, node_id: str, key: KeyPair, genesis: Genesis, listen_port: int | None
) -> TcpTransport | MqttTransport:
    """The configured transport, before fault injection wraps it."""
    if cfg.transport == "mqtt":
        where = broker.address(cfg)
        m = cfg.mqtt
        username, password = broker.credentials(cfg, node_id)
        link = MqttLink(
            where.host,
            where.port,
            cfg.topic_prefix,
            tls=client_context(*cfg.tls_paths(node_id)) if where.tls else None,
            username=username,
            password=password,
            protocol=m.protocol,
            keepalive_s=m.keepalive_s,
        )
        # The epoch orders this node's runs for its peers' replay windows.
        sealer = Sealer(genesis.chain_id, node_id, key, epoch=time.time_ns() // 1000)
        opener = Opener(genesis.chain_id, node_id, genesis.members, m.max_age_ms)
        return MqttTransport(
            node_id, cfg.node_ids(), link, sealer, opener, max_frame=cfg.max_frame_bytes
        )
    spec = cfg.node(node_id)
    return TcpTransport(
        node_id,
        (spec.host, listen_port or spec.port),
        {n.id: (n.host, n.port) for n in cfg.nodes},
        KeyAuthenticator(genesis.chain_id, node_id, key, genesis.members),
        max_frame=cfg.max_frame_bytes,
    )


async def serve(cfg: ClusterConfig, node_id: str, twin: bool = False) -> None:
    runtime, app = build_node(cfg, node_id, twin)
    spec = cfg.node(node_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dispatcher = app[DISPATCHER]
    dispatcher.max_batch = cfg.rpc.max_batch
    await runtime.start()
    # keepalive_timeout closes a connection idle before, between or inside requests' headers;
    # make_app applies the same timeout to a body, and a refused body lingers 1 s at most
    idle = cfg.rpc.idle_timeout_s
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=idle, lingering_time=1.0)
    await runner.setup()
    listener = None
    if not twin:  # a twin has no RPC: it is only a second voice for the member's key
        cap = limits.connection_cap(cfg.rpc.max_connections, limits.fd_limits())
        if cap < cfg.rpc.max_connections:
            log.warning("[rpc] max_connections lowered to %d by the fd limit", cap)
        listener = await start_site(
            runner, spec.host, spec.rpc_port, dispatcher.http, cap, limits.ACCEPT_BACKLOG
        )
    flusher = asyncio.create_task(limits.flush_repeats_forever())
    peers = f"broker {cfg.topic_prefix}/" if cfg.transport == "mqtt" else f"peers on {spec.port}"
    log.info(
        "node %s up: chain %s height %d, %s, rpc on %d",
        node_id,
        runtime.chain_id,
        runtime.store.height,
        peers,
        spec.rpc_port,
    )
    await stop.wait()
    log.info("node %s stopping", node_id)
    flusher.cancel()
    if listener is not None:
        listener.close()
    await runner.cleanup()
    await runtime.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.process.main", description=__doc__)
    parser.add_argument("-c", "--config", default="cluster.toml")
    parser.add_argument("--node", required=True, help="the [[node]] id to run")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--twin",
        action="store_true",
        help="fault injection: run a second process with this node's key",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    limits.install_node_logging()  # the same line at most LOG_BURST times a minute
    fds = limits.raise_fd_limit()
    log.debug("file descriptors: soft limit %s, hard limit %s", fds.soft, fds.hard)
    try:
        asyncio.run(serve(load_config(args.config), args.node, args.twin))
    except ConfigError as e:
        log.error("%s", e)
        return 2
    except OSError as e:
        log.error("cannot start node %s: %s", args.node, e)
        return 1
    except StoreDamaged as e:  # damaged_store = "refuse": nothing was served from it
        log.error(
            "cannot start node %s: %s (refusing: damaged_store = refuse; move the file aside "
            'or set damaged_store = "rebuild" to fetch the chain from peers)',
            args.node,
            e,
        )
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
