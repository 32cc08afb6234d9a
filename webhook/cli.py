"""The ``storeops`` command: the generator's commands plus the service's and ``storeops status``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from generator import cli
from webhook import migration, serving
from webhook.intake import command as intakecommand
from webhook.status import command as statuscommand


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serving.add_commands(subparsers)
    statuscommand.add_commands(subparsers)
    intakecommand.add_commands(subparsers)
    migration.add_commands(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(cli.build_parser(add_commands), argv)


if __name__ == "__main__":
    sys.exit(main())
