"""A logging filter that keeps secrets out of log lines.

discord.py logs REST URLs at DEBUG level, and interaction callback and webhook URLs carry the
interaction's token; the bot token itself is never logged by discord.py, but it is redacted
too in case a library ever does. Installed on the handlers by ``run_bot``.
"""

from __future__ import annotations

import logging
import re

_URL_TOKENS = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]{20,}")


class RedactSecrets(logging.Filter):
    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 8]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return _URL_TOKENS.sub(r"\1[token]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install(*secrets: str) -> None:
    """Redact ``secrets`` (and URL tokens) on every handler of the root logger; idempotent."""
    for handler in logging.getLogger().handlers:
        existing = next((f for f in handler.filters if isinstance(f, RedactSecrets)), None)
        if existing is None:
            handler.addFilter(RedactSecrets(*secrets))
        else:
            existing.secrets.extend(
                s for s in secrets if s and len(s) >= 8 and s not in existing.secrets
            )
