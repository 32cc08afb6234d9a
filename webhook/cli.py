"""The ``storeops`` command: the generator's commands plus the service's."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from generator import cli
from webhook import serving


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(cli.build_parser(serving.add_commands), argv)


if __name__ == "__main__":
    sys.exit(main())
