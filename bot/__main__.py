"""``python -m bot [--config PATH] [-v]``: run the Discord bot (also ``imagegate bot``).

The token comes from the environment variable named by ``[discord] token_env``
(``DISCORD_TOKEN`` by default). Without it, or with a bad config, this prints one line and
exits non-zero; it never shows a traceback unless ``-v`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from core import ImageGateError, ImageService, Settings, load_settings

from . import logs
from .app import start_bot, token_from_env, why_stopped

log = logging.getLogger("imagegate.bot")


def run_bot(settings: Settings, args: argparse.Namespace | None = None) -> int:
    """Run the bot until stopped; returns the exit code (the CLI's ``bot`` handler)."""
    token = token_from_env(settings)
    if token is None:
        print(
            f"imagegate bot: no Discord token. Set the {settings.discord.token_env} environment"
            " variable to your bot's token (Developer Portal → your application → Bot);"
            " see docs/discord.md.",
            file=sys.stderr,
        )
        return 2
    verbose = bool(getattr(args, "verbose", False))
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO if verbose else logging.WARNING,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    logs.install(token)
    try:
        asyncio.run(_serve(settings, token))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM (below)
        return 0
    except ImageGateError as exc:
        print(f"imagegate bot: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an environment problem: one line, details with -v
        if verbose:
            log.error("bot stopped", exc_info=exc)
        hint = "" if verbose else "; run with -v for details"
        print(f"imagegate bot: {why_stopped(exc)}{hint}", file=sys.stderr)
        return 1
    return 0


async def _serve(settings: Settings, token: str) -> None:
    service = await ImageService.open(settings)
    _stop_on_signals()
    try:
        await start_bot(service, settings, token=token)
    finally:
        await service.aclose()


def _stop_on_signals() -> None:
    """Stop cleanly on SIGINT (Ctrl-C) and SIGTERM (``docker stop``, systemd): the gateway is
    closed and the instance lease dropped, so this process's holds are not left waiting for it
    to lapse. Installed on the loop, as ``imagegate serve`` does, so a SIGINT stops the bot even
    when started in the background by a shell, which makes it inherit SIGINT ignored."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no loop signal handlers on Windows
            loop.add_signal_handler(sig, task.cancel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="Run the imagegate Discord bot."
    )
    parser.add_argument("--config", metavar="PATH", help="TOML config file")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ImageGateError as exc:
        print(f"imagegate bot: {exc.message}", file=sys.stderr)
        return 1
    return run_bot(settings, args)


if __name__ == "__main__":
    sys.exit(main())
