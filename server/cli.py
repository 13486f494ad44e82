"""``vidscan-server``: serve, migrate, mint tokens, manage quotas."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

from pydantic import ValidationError

from server import logs, tracing
from server.config import Settings, load_settings
from server.main import open_repository, token_authority
from server.processes import run_workers, serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidscan-server", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the gRPC server (default)")
    commands.add_parser("worker", help="run analysis workers only (needs TRITON_URL)")
    commands.add_parser("migrate", help="apply database migrations")
    mint = commands.add_parser("mint-token", help="print a bearer token for a user id")
    mint.add_argument("user_id")
    mint.add_argument("--hours", type=float, default=12.0)
    quota = commands.add_parser("set-quota", help="set a user's remaining uploads")
    quota.add_argument("user_id")
    quota.add_argument("remaining", type=int)
    show = commands.add_parser("get-quota", help="print a user's remaining uploads")
    show.add_argument("user_id")
    return parser


async def _with_repository(settings: Settings, action: str, args: argparse.Namespace) -> None:
    async with open_repository(settings) as repo:
        if action == "set-quota":
            await repo.set_quota(user_id=args.user_id, remaining=args.remaining)
            print(f"{args.user_id}: {args.remaining} uploads remaining")
        elif action == "get-quota":
            print(await repo.get_quota(user_id=args.user_id))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            print(
                f"vidscan-server: configuration: {where + ': ' if where else ''}{message}",
                file=sys.stderr,
            )
        return 2
    logs.configure(level=settings.log_level, fmt=settings.log_format)
    command = args.command or "serve"
    if command in ("serve", "worker"):
        try:
            tracing.choice(os.environ)
        except ValueError as exc:
            print(f"vidscan-server: configuration: {exc}", file=sys.stderr)
            return 2
    if command == "serve":
        problem = settings.serving_problem()
        if problem is not None:
            print(f"vidscan-server: configuration: {problem}", file=sys.stderr)
            return 2
        return asyncio.run(serve(settings))
    elif command == "worker":
        asyncio.run(run_workers(settings))
    elif command == "mint-token":
        print(token_authority(settings).mint(args.user_id, lifetime=timedelta(hours=args.hours)))
    elif command in ("migrate", "set-quota", "get-quota"):
        asyncio.run(_with_repository(settings, command, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
