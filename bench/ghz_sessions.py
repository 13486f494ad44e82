"""Prepares ghz's data file for UploadVideo: one pre-created session per request.

A session takes one upload, and only the server makes session ids, so the data file
is a ghz template that picks session number ``.RequestNumber`` (0..N-1) out of an
inline list (sprig's ``splitList``); run ghz with ``-n N`` to use each once.

The load comes from many users (``VIDSCAN_TOKENS``: comma-separated bearer tokens),
so that no one user meets the server's per-user limits. Session i is created with
token ``i mod len(tokens)``, and the configs in bench/ghz/ send request i with that
same token: a session can only be uploaded by the user who created it.

    export VIDSCAN_TOKENS=$(python -m bench.ghz_sessions --mint-tokens 200)
    python -m bench.ghz_sessions --target HOST:PORT -n 300 --out upload.json
    ghz --config bench/ghz/upload-video.json --data-file upload.json -n 300 -c 10 HOST:PORT

Only grpcio and the generated stubs are needed (no test helpers); ``--mint-tokens``
also needs the server package and its JWT secret (``VIDSCAN_JWT_SECRET``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from vidscan.v1 import upload_pb2, upload_pb2_grpc

# Linux caps one environment string (NAME=value) at 128 KiB (MAX_ARG_STRLEN).
MAX_ENV_STRING = 128 * 1024


def tokens_env(tokens: Sequence[str]) -> dict[str, str]:
    """The environment ghz reads the tokens from (bench/ghz/*.json)."""
    value = ",".join(tokens)
    if len("VIDSCAN_TOKENS=") + len(value) >= MAX_ENV_STRING:
        raise ValueError(f"{len(tokens)} tokens ({len(value)} bytes) exceed one env string")
    return {"VIDSCAN_TOKENS": value}


def create_sessions(
    target: str, tokens: Sequence[str], count: int, *, secure: bool = False
) -> list[str]:
    """``count`` sessions, session i created by user ``tokens[i % len(tokens)]``."""
    credentials = grpc.ssl_channel_credentials() if secure else None
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
        request = upload_pb2.CreateUploadSessionRequest()
        sessions = []
        for i in range(count):
            metadata = (("authorization", f"Bearer {tokens[i % len(tokens)]}"),)
            reply = stub.CreateUploadSession(request, metadata=metadata)
            sessions.append(str(reply.session.session_id))
        return sessions


def mint_tokens(count: int, prefix: str = "bench-load") -> list[str]:
    """Tokens for users PREFIX-000 ... with the server's settings (its JWT secret)."""
    from server.config import load_settings
    from server.main import token_authority

    authority = token_authority(load_settings())
    return [authority.mint(f"{prefix}-{i:03d}") for i in range(count)]


def data_template(sessions: list[str], video: bytes, filename: str = "clip.mp4") -> str:
    """The messages of one UploadVideo stream: header, the file, finish.

    The file is the clip plus a 26-byte MP4 `free` box holding a nonce and the request
    number, so that every request uploads different bytes (vidscan deduplicates a user's
    identical uploads, which would skip validation and storage for all but the first).
    The clip must not end inside a box that runs to the end of the file (size 0).
    """
    pick = "{{index (splitList `,` `" + ",".join(sessions) + "`) .RequestNumber}}"
    nonce = os.urandom(4).hex()  # and differ from earlier runs' request 0, 1, ...
    tail = "{{printf `%c%c%c%cfree" + nonce + "%010d` 0 0 0 26 .RequestNumber | b64enc}}"
    messages = [
        {"header": {"session_id": pick, "filename": filename}},
        {"chunk": base64.b64encode(video).decode()},
        {"chunk": tail},
        {"finish_write": True},
    ]
    return json.dumps(messages)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Tokens: --token (repeatable) or $VIDSCAN_TOKENS (comma-separated).",
    )
    parser.add_argument("--target", help="host:port of the gRPC server")
    parser.add_argument(
        "--token",
        action="append",
        help="a bearer token (repeatable; session i uses token i mod count; default: "
        "$VIDSCAN_TOKENS). Each upload spends one unit of its user's quota",
    )
    parser.add_argument("-n", type=int, help="sessions = ghz -n")
    parser.add_argument("--video", type=Path, help="the clip to upload (default: a 1 s test clip)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument(
        "--mint-tokens",
        type=int,
        metavar="USERS",
        help="only print USERS comma-separated tokens (users bench-load-000 ...) for "
        "VIDSCAN_TOKENS, signed with the server's VIDSCAN_JWT_SECRET",
    )
    args = parser.parse_args()
    if args.mint_tokens:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        print(tokens_env(mint_tokens(args.mint_tokens))["VIDSCAN_TOKENS"])
        return
    if not (args.target and args.n and args.out):
        parser.error("--target, -n and --out are required")
    tokens = args.token or [t for t in os.environ.get("VIDSCAN_TOKENS", "").split(",") if t]
    if not tokens:
        parser.error("no token: --token or VIDSCAN_TOKENS")
    if args.video is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from bench.common import small_clip

        video = small_clip()
    else:
        video = args.video.read_bytes()
    sessions = create_sessions(args.target, tokens, args.n, secure=args.tls)
    args.out.write_text(data_template(sessions, video))
    print(f"{args.out}: {args.n} sessions of {len(tokens)} user(s), {len(video)}-byte clip")


if __name__ == "__main__":
    main()
