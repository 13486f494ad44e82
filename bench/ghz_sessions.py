"""Prepares ghz's data file for UploadVideo: one pre-created session per request.

A session takes one upload, and only the server makes session ids, so the data file
is a ghz template that picks session number ``.RequestNumber`` (0..N-1) out of an
inline list (sprig's ``splitList``); run ghz with ``-n N`` to use each once.

    python -m bench.ghz_sessions --target HOST:PORT --token TOKEN -n 300 --out upload.json
    VIDSCAN_TOKEN=TOKEN ghz --config bench/ghz/upload-video.json \\
        --data-file upload.json -n 300 -c 10 HOST:PORT

Only grpcio and the generated stubs are needed (no test helpers).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path

import grpc
from vidscan.v1 import upload_pb2, upload_pb2_grpc


def create_sessions(target: str, token: str, count: int, *, secure: bool = False) -> list[str]:
    credentials = grpc.ssl_channel_credentials() if secure else None
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        stub = upload_pb2_grpc.UploadServiceStub(channel)  # type: ignore[no-untyped-call]
        metadata = (("authorization", f"Bearer {token}"),)
        request = upload_pb2.CreateUploadSessionRequest()
        return [
            str(stub.CreateUploadSession(request, metadata=metadata).session.session_id)
            for _ in range(count)
        ]


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port of the gRPC server")
    parser.add_argument("--token", required=True, help="bearer token (its user's quota!)")
    parser.add_argument("-n", type=int, required=True, help="sessions = ghz -n")
    parser.add_argument("--video", type=Path, help="the clip to upload (default: a 1 s test clip)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    if args.video is None:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from bench.common import small_clip

        video = small_clip()
    else:
        video = args.video.read_bytes()
    sessions = create_sessions(args.target, args.token, args.n, secure=args.tls)
    args.out.write_text(data_template(sessions, video))
    print(f"{args.out}: {args.n} sessions, {len(video)}-byte clip")


if __name__ == "__main__":
    main()
