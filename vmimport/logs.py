"""How log records are written: text lines (the default) or, with ``log_format = "json"``, one
JSON object per line for log collectors. Both carry only what the message says: the code never
puts a secret (key secret, session token, KMS material) in a log message."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message"[, "process", "exception"]}, one line each."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(), "process": record.process,
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


class OnlyUpgrades(logging.Filter):
    """Alembic says at INFO which plugins it set up and which dialect it uses, on every start;
    only its "Running upgrade ..." lines tell something (the schema changed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (not record.name.startswith("alembic") or record.levelno > logging.INFO
                or record.getMessage().startswith("Running upgrade"))


def configure(level: str, log_format: str, verbose: bool = False) -> None:
    """The process's logging: records at ``level`` and above in ``log_format``; alembic's
    chatter left out unless ``verbose``."""
    logging.basicConfig(level=level.upper())
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(log_format))
        if not verbose:  # a logger's filter misses its children: the handlers filter
            handler.addFilter(OnlyUpgrades())
