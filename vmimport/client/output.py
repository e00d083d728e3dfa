"""Printing for people (rich tables and progress bars, on a terminal) or for programs
(``--output json``: one JSON document on stdout, nothing else there)."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)
from rich.table import Table

stdout = Console(highlight=False)
# Progress and notes go to stderr, so that stdout holds only the result.
stderr = Console(stderr=True, highlight=False)


def print_json(document) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list]) -> Table:
    result = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        # the id (first column) stays whole, to be copied; the others fold to fit the width
        result.add_column(column, overflow="fold", no_wrap=index == 0)
    for row in rows:
        result.add_row(*["" if cell is None else str(cell) for cell in row])
    return result


def transfer_progress(quiet: bool = False) -> Progress:
    """Bytes done / total, rate and time left: for uploads and downloads."""
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=stderr,
                    disable=quiet)


def task_progress(quiet: bool = False) -> Progress:
    """A task's percentage and its current phase (the task's StatusMessage)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[phase]}"), console=stderr,
                    disable=quiet)
