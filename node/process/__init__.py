"""The node process: the driver that carries out a replica's actions, its asyncio shell,
the miner, the block server and the RPC methods."""
