"""What every scenario gets: options, the private Redis, the publisher and the log folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.load import Loader
from bench.options import Options
from bench.servers import RedisServer, System, SystemServer


@dataclass
class Context:
    options: Options
    redis: RedisServer
    loader: Loader
    log_dir: Path

    def server(self, system: System) -> SystemServer:
        """A started server of `system` (stop it when done)."""
        server = SystemServer(system, self.redis.url, self.log_dir)
        server.start()
        return server
