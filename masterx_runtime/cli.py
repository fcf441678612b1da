"""The ``masterx`` command: ``up`` runs everything locally; ``env`` prints the settings table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="masterx", description="MasterX local tooling")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start Redis, MongoDB-wire server and all services; Ctrl-C stops all")
    p_up.add_argument("--state-dir", type=Path, default=Path(".masterx"), help="data and logs (default .masterx)")
    p_up.add_argument(
        "--any-ports", action="store_true", help="free ports instead of the well-known ones (tests, second copy)"
    )
    sub.add_parser("env", help="print the table of environment variables (markdown)")
    args = parser.parse_args(argv)
    if args.cmd == "up":
        from masterx_runtime.launcher import up

        sys.exit(up(args.state_dir, fixed_ports=not args.any_ports))
    if args.cmd == "env":
        from masterx_runtime.config import markdown_table

        print(markdown_table())


if __name__ == "__main__":
    main()
