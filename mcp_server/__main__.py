"""``python -m mcp_server [--config PATH] [--transport stdio|http]``: the MCP server alone."""

from __future__ import annotations

import argparse
import logging
import sys

from core import ImageGateError, load_settings

from .serve import run_mcp


def main(argv: list[str] | None = None) -> int:
    """Find the config as every entry point does, then serve over the chosen transport."""
    parser = argparse.ArgumentParser(prog="python -m mcp_server", description=__doc__)
    parser.add_argument("--config", metavar="PATH", help="TOML config file")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL + 1,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run_mcp(load_settings(args.config), args)
    except ImageGateError as exc:
        print(f"imagegate: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
