"""``vidscan``: upload a video and read results from the command line.

Results are printed as proto3 JSON on stdout; progress, reminders and errors go to
stderr (a failed call as one JSON object). Exit codes are defined in
``exit_codes.py`` and listed by ``vidscan --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from vidscan_client import __version__
from vidscan_client.analyses import is_final, settle
from vidscan_client.client import DEFAULT_WAIT_SECONDS, VidscanClient, tls_credentials
from vidscan_client.errors import VidscanError
from vidscan_client.exit_codes import EPILOG, ExitCode
from vidscan_client.progress import ProgressBar
from vidscan_client.protos import analysis_pb2, detection_pb2, upload_pb2

DEFAULT_TARGET = "127.0.0.1:50051"
REFERENCE_REMINDER = (
    "note: {model} is a bundled reference model; its scores carry no meaning "
    "(deploy a trained detector for real verdicts)"
)


def _json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


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
    parser.add_argument(
        "--ca-file", default=default(None), help="PEM CA that signed the server's cert (TLS)"
    )
    parser.add_argument(
        "--cert-file", default=default(None), help="PEM client certificate (mTLS, with --key-file)"
    )
    parser.add_argument("--key-file", default=default(None), help="PEM key of --cert-file")


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="while the analysis is PROCESSING, poll until it is ANALYZED or FAILED",
    )
    parser.add_argument(
        "--wait-timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        default=DEFAULT_WAIT_SECONDS,
        help=f"give up waiting after this long (default {DEFAULT_WAIT_SECONDS:.0f})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidscan",
        description="Upload videos to vidscan and read results.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vidscan-client {__version__}")
    _connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    upload = command("upload", "upload a video and print its UploadResult")
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
        "--metadata",
        metavar="JSON",
        type=_json_object,
        default=None,
        help="a JSON object stored with the video",
    )
    _wait_options(upload)
    _connection_options(upload, suppress=True)

    status = command("status", "show an upload session")
    status.add_argument("session", metavar="SESSION")
    _connection_options(status, suppress=True)

    cancel = command("cancel", "cancel an upload session and discard what it received")
    cancel.add_argument("session", metavar="SESSION")
    _connection_options(cancel, suppress=True)

    result = command("result", "show an analysis")
    result.add_argument("analysis", metavar="ANALYSIS")
    _wait_options(result)
    _connection_options(result, suppress=True)

    video = command("video", "show a stored video")
    video.add_argument("video", metavar="VIDEO")
    _connection_options(video, suppress=True)
    return parser


def _print_message(message: Message) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True))


def _remind(detection: detection_pb2.Detection) -> None:
    if detection.reference_model:
        model = detection.model_name or "the model"
        print(REFERENCE_REMINDER.format(model=model), file=sys.stderr)


def _waited(analysis: analysis_pb2.Analysis, waited: float) -> ExitCode:
    """The exit code of a command that waited for ``analysis``."""
    if not is_final(analysis):
        print(
            f"vidscan: analysis {analysis.analysis_id} still processing after {waited:.0f} s",
            file=sys.stderr,
        )
        return ExitCode.STILL_PROCESSING
    if analysis.status == analysis_pb2.ANALYSIS_STATUS_FAILED:
        print(
            f"vidscan: analysis {analysis.analysis_id} failed: "
            f"{analysis.failure_reason}: {analysis.failure_message}",
            file=sys.stderr,
        )
        return ExitCode.ANALYSIS_FAILED
    return ExitCode.OK


def _upload(client: VidscanClient, args: argparse.Namespace) -> ExitCode:
    label = os.path.basename(args.file)
    bar = ProgressBar(sys.stderr, label=label)
    try:
        result = client.upload(
            args.file,
            model=args.model,
            dedup=args.dedup,
            metadata=args.metadata,
            on_progress=bar.update,
            on_retry=bar.retrying,
        )
    except BaseException:
        bar.finish(ok=False)
        raise
    bar.finish(ok=True)
    code = ExitCode.OK
    if args.wait:
        if result.upload_status == upload_pb2.UPLOAD_STATUS_PROCESSING:
            print(
                f"{label}: analysis {result.analysis_id} is processing; "
                f"waiting up to {args.wait_timeout:.0f} s",
                file=sys.stderr,
            )
        analysis = client.wait_for_analysis(result.analysis_id, timeout=args.wait_timeout)
        result = settle(result, analysis)
        code = _waited(analysis, args.wait_timeout)
    _print_message(result)
    if result.HasField("detection_result"):
        _remind(result.detection_result)
    return code


def _result(client: VidscanClient, args: argparse.Namespace) -> ExitCode:
    if args.wait:
        analysis = client.wait_for_analysis(args.analysis, timeout=args.wait_timeout)
        code = _waited(analysis, args.wait_timeout)
    else:
        analysis, code = client.analysis(args.analysis), ExitCode.OK
    _print_message(analysis)
    if analysis.HasField("detection"):
        _remind(analysis.detection)
    return code


def _run(client: VidscanClient, args: argparse.Namespace) -> ExitCode:
    if args.command == "upload":
        return _upload(client, args)
    if args.command == "result":
        return _result(client, args)
    if args.command == "status":
        _print_message(client.session_status(args.session))
    elif args.command == "cancel":
        _print_message(client.cancel(args.session))
    elif args.command == "video":
        _print_message(client.video(args.video))
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 (ExitCode.USAGE) here
    target = args.target or os.environ.get("VIDSCAN_TARGET") or DEFAULT_TARGET
    token = args.token or os.environ.get("VIDSCAN_TOKEN")
    if not token:
        parser.error("no token; pass --token or set VIDSCAN_TOKEN")
    if (args.cert_file is None) != (args.key_file is None):
        parser.error("--cert-file and --key-file go together")
    credentials = None
    if args.ca_file or args.cert_file:
        credentials = tls_credentials(
            ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file
        )
    try:
        with VidscanClient(target, token, secure=args.secure, credentials=credentials) as client:
            return _run(client, args)
    except VidscanError as error:
        print(json.dumps(error.to_dict(), sort_keys=True), file=sys.stderr)
        # A refusal is the server's final word on this upload; a transient error that
        # outlasted the retries (or any other command failing) is not.
        refused = args.command == "upload" and not error.transient
        return ExitCode.REFUSED if refused else ExitCode.FAILED
    except OSError as error:
        print(f"vidscan: error: {error}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        print("vidscan: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
