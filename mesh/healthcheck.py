"""`python -m mesh.healthcheck HOST:PORT`: exit 0 when the service reports SERVING (container health checks)."""

from __future__ import annotations

import asyncio
import sys

from mesh.stack import health_of


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m mesh.healthcheck HOST:PORT")
    status = asyncio.run(health_of(sys.argv[1], timeout_s=2.0))
    print(status)
    sys.exit(0 if status == "SERVING" else 1)


if __name__ == "__main__":
    main()
