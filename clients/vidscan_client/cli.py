"""``vidscan``: upload a video and read results from the command line.

Exit codes: 0 on success, 2 when the server refused the upload (the error is printed
as JSON on stderr), 1 for every other failure (usage, unreadable file, network).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from vidscan.v1 import detection_pb2

from vidscan_client.client import VidscanClient, VidscanError

DEFAULT_TARGET = "127.0.0.1:50051"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
REFERENCE_REMINDER = (
    "note: {model} is a bundled reference model; its scores carry no meaning "
    "(deploy a trained detector for real verdicts)"
)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1: exit code 2 means "the server refused the upload"."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_FAILED, f"{self.prog}: error: {message}\n")


def _connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Accepted before and after the subcommand; SUPPRESS keeps a subparser from
    # overwriting a value given before it.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--target",
        default=default(None),
        help=f"host:port of vidscan (env VIDSCAN_TARGET, default {DEFAULT_TARGET})",
    )
    parser.add_argument("--token", default=default(None), help="bearer token (env VIDSCAN_TOKEN)")
    parser.add_argument("--secure", action="store_true", default=default(False), help="use TLS")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vidscan", description="Upload videos to vidscan and read results.")
    _connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    upload = commands.add_parser("upload", help="upload a video and print its UploadResult")
    upload.add_argument("file", metavar="FILE")
    upload.add_argument(
        "--model", metavar="M", default="", help="detection model (default: the server's)"
    )
    upload.add_argument(
        "--dedup",
        action="store_true",
        help="hash the file first and declare its SHA-256 and size",
    )
    upload.add_argument(
        "--metadata", metavar="JSON", default=None, help="a JSON object stored with the video"
    )
    _connection_options(upload, suppress=True)

    status = commands.add_parser("status", help="show an upload session")
    status.add_argument("session", metavar="SESSION")
    _connection_options(status, suppress=True)

    result = commands.add_parser("result", help="show an analysis")
    result.add_argument("analysis", metavar="ANALYSIS")
    _connection_options(result, suppress=True)

    video = commands.add_parser("video", help="show a stored video")
    video.add_argument("video", metavar="VIDEO")
    _connection_options(video, suppress=True)
    return parser


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """A plain-text progress bar on ``stream``: bytes, rate and ETA, redrawn in place
    at most ``max_rate`` times a second. When ``stream`` is not a terminal only a final
    line is written."""

    WIDTH = 24

    def __init__(
        self, stream: TextIO, *, label: str, max_rate: float = 5.0, tty: bool | None = None
    ) -> None:
        self._stream = stream
        self._label = label
        self._tty = stream.isatty() if tty is None else tty
        self._interval = 1.0 / max_rate
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._sent = 0
        self._total = 0
        # The rate is measured from the start of the current attempt.
        self._attempt_start = self._started
        self._attempt_offset = 0
        self._updated = self._started
        self._width = 0
        self._retries = 0

    def update(self, sent: int, total: int) -> None:
        now = time.monotonic()
        if sent < self._sent or self._total == 0:
            self._attempt_start, self._attempt_offset = now, sent
        self._sent, self._total, self._updated = sent, total, now
        if self._tty and (now - self._last_draw >= self._interval or sent >= total):
            self._last_draw = now
            self._draw(self._line(now))

    def retrying(self, attempt: int, error: VidscanError, delay: float) -> None:
        self._retries = attempt
        self._write_line(
            f"{self._label}: {error.reason or error.code.name}: {error.message}; "
            f"resuming in {delay:.1f} s (retry {attempt})"
        )

    def _line(self, now: float) -> str:
        total = max(self._total, 1)
        fraction = min(1.0, self._sent / total)
        filled = int(fraction * self.WIDTH)
        elapsed = max(now - self._attempt_start, 1e-6)
        rate = (self._sent - self._attempt_offset) / elapsed
        eta = _duration((self._total - self._sent) / rate) if rate > 0 else "--:--"
        bar = "#" * filled + "." * (self.WIDTH - filled)
        return (
            f"{self._label} [{bar}] {fraction * 100:3.0f}% "
            f"{_human(self._sent)} / {_human(self._total)}  {_human(rate)}/s  ETA {eta}"
        )

    def _draw(self, line: str) -> None:
        padding = " " * max(0, self._width - len(line))
        self._width = len(line)
        self._stream.write(f"\r{line}{padding}")
        self._stream.flush()

    def _write_line(self, line: str) -> None:
        if self._tty and self._width:
            self._stream.write("\n")
            self._width = 0
        self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self, *, ok: bool) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        if ok:
            retries = f" after {self._retries} retr{'y' if self._retries == 1 else 'ies'}"
            line = (
                f"{self._label}: sent {_human(self._total)} in {elapsed:.1f} s "
                f"({_human(self._total / elapsed)}/s)"
                f"{retries if self._retries else ''}"
            )
        elif self._total:
            line = f"{self._label}: stopped at {_human(self._sent)} / {_human(self._total)}"
        else:
            return  # nothing was sent: the error says it all
        if self._tty and self._width:
            # The bar as of the last byte sent, not diluted by the server's processing.
            self._draw(self._line(self._updated))
        self._write_line(line)


def _print_message(message: Message) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True))


def _remind(detection: detection_pb2.Detection) -> None:
    if detection.reference_model:
        model = detection.model_name or "the model"
        print(REFERENCE_REMINDER.format(model=model), file=sys.stderr)


def _print_error(error: VidscanError) -> None:
    print(json.dumps(error.to_dict(), sort_keys=True), file=sys.stderr)


def _metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"--metadata is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError("--metadata must be a JSON object")
    return value


def _upload(client: VidscanClient, args: argparse.Namespace) -> int:
    metadata = _metadata(args.metadata)
    bar = ProgressBar(sys.stderr, label=os.path.basename(args.file))
    try:
        result = client.upload(
            args.file,
            model=args.model,
            dedup=args.dedup,
            metadata=metadata,
            on_progress=bar.update,
            on_retry=bar.retrying,
        )
    except BaseException:
        bar.finish(ok=False)
        raise
    bar.finish(ok=True)
    _print_message(result)
    if result.HasField("detection_result"):
        _remind(result.detection_result)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    target = args.target or os.environ.get("VIDSCAN_TARGET") or DEFAULT_TARGET
    token = args.token or os.environ.get("VIDSCAN_TOKEN")
    if not token:
        print("vidscan: error: no token; pass --token or set VIDSCAN_TOKEN", file=sys.stderr)
        return EXIT_FAILED
    with VidscanClient(target, token, secure=args.secure) as client:
        if args.command == "upload":
            return _upload(client, args)
        if args.command == "status":
            _print_message(client.session_status(args.session))
        elif args.command == "result":
            analysis = client.analysis(args.analysis)
            _print_message(analysis)
            if analysis.HasField("detection"):
                _remind(analysis.detection)
        elif args.command == "video":
            _print_message(client.video(args.video))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except VidscanError as error:
        _print_error(error)
        # A refusal is the server's final word on this upload; a transient error that
        # outlasted the retries (or any other command failing) is not.
        refused = args.command == "upload" and not error.transient
        return EXIT_REFUSED if refused else EXIT_FAILED
    except (OSError, ValueError) as error:
        print(f"vidscan: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("vidscan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
