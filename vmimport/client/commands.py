"""The client's subcommands of ``vmimport`` (the server's are in ``vmimport.cli``)."""

from __future__ import annotations

import sys

from .session import ClientError, add_endpoint_options


def _guarded(command):
    """Run a client command: a ClientError is one line on stderr and exit status 1."""
    def run(args) -> int:
        try:
            return command(args)
        except ClientError as exc:
            print(f"vmimport {args.command}: {exc}", file=sys.stderr)
            return 1
    return run


def add_client_commands(sub) -> None:
    from . import exporting, importing, listing

    def add(name: str, help_text: str, command):
        parser = sub.add_parser(name, help=help_text, description=help_text)
        add_endpoint_options(parser)
        parser.add_argument("--output", choices=["table", "json"], default="table",
                            help="json: one JSON document on stdout, no progress bars")
        parser.set_defaults(func=_guarded(command))
        return parser

    importing.add_arguments(add("import", "import a disk image as an AMI (or a snapshot), "
                                "following the task to its end", importing.run))
    exporting.add_arguments(add("export", "export an AMI to a disk image file", exporting.run))
    parser = add("tasks", "list import and export tasks", listing.tasks)
    parser.add_argument("--watch", action="store_true",
                        help="keep the table up to date until Ctrl-C")
    add("images", "list your AMIs", listing.images)
    add("snapshots", "list your snapshots", listing.snapshots)
