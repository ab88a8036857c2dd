"""One node process: `python -m node.main --config cluster.toml --node n0`.

`tally up` starts one of these per [[node]]; it runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from consensus.pbft.replica import Replica
from ledger.encoding import decode_any
from ledger.store import Store
from node.auth import KeyAuthenticator
from node.bootstrap import load_genesis, load_key, pbft_config
from node.config import ClusterConfig, ConfigError, load_config
from node.rpc import methods
from node.rpc.jsonrpc import Dispatcher, make_app
from node.runtime import NodeRuntime
from node.transport.tcp import TcpTransport

log = logging.getLogger("tally.node")


def build_node(cfg: ClusterConfig, node_id: str) -> tuple[NodeRuntime, web.Application]:
    spec = cfg.node(node_id)
    genesis = load_genesis(cfg)
    key = load_key(cfg.node_key_path(node_id))
    cfg.db_path(node_id).parent.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.db_path(node_id), genesis, synchronous=cfg.sqlite_synchronous)
    records = [decode_any(r) for r in store.consensus_records()]
    config = pbft_config(cfg, genesis)
    replica = Replica(config, node_id, key, store.state, store.last_header, records)
    transport = TcpTransport(
        node_id,
        (spec.host, spec.port),
        {n.id: (n.host, n.port) for n in cfg.nodes},
        KeyAuthenticator(genesis.chain_id, node_id, key, genesis.members),
        max_frame=cfg.max_frame_bytes,
    )
    runtime = NodeRuntime(node_id, genesis, replica, store, transport)
    token = cfg.admin_token_path.read_text().strip() if cfg.admin_token_path.exists() else None
    dispatcher = Dispatcher(admin_token=token)
    methods.register(dispatcher, runtime, cfg.nodes)
    return runtime, make_app(dispatcher)


async def serve(cfg: ClusterConfig, node_id: str) -> None:
    runtime, app = build_node(cfg, node_id)
    spec = cfg.node(node_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, spec.host, spec.rpc_port).start()
    log.info(
        "node %s up: chain %s height %d, peers on %d, rpc on %d",
        node_id,
        runtime.chain_id,
        runtime.store.height,
        spec.port,
        spec.rpc_port,
    )
    await stop.wait()
    log.info("node %s stopping", node_id)
    await runner.cleanup()
    await runtime.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.main", description=__doc__)
    parser.add_argument("-c", "--config", default="cluster.toml")
    parser.add_argument("--node", required=True, help="the [[node]] id to run")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(load_config(args.config), args.node))
    except ConfigError as e:
        log.error("%s", e)
        return 2
    except OSError as e:
        log.error("cannot start node %s: %s", args.node, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
