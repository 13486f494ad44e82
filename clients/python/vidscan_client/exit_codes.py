"""The `vidscan` CLI's exit codes, defined once: main() returns them, ``--help``
prints ``EPILOG`` built from them, and the client README lists the same table."""

from __future__ import annotations

import enum
import textwrap

__all__ = ["EPILOG", "ExitCode"]


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    REFUSED = 3
    STILL_PROCESSING = 4
    ANALYSIS_FAILED = 5
    INTERRUPTED = 130


MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILED: (
        "the command failed: server or network unavailable after the retries, "
        "authentication, not found, a local file that cannot be read"
    ),
    ExitCode.USAGE: "usage error: bad arguments, --metadata that is not a JSON object, no token",
    ExitCode.REFUSED: (
        "upload: the server refused the upload for good (its reason is on stderr as JSON)"
    ),
    ExitCode.STILL_PROCESSING: (
        "--wait: the analysis was still processing when --wait-timeout ran out"
    ),
    ExitCode.ANALYSIS_FAILED: "--wait: the analysis finished as FAILED",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}

EPILOG = "exit codes:\n" + "\n".join(
    textwrap.fill(
        MEANINGS[code], width=79, initial_indent=f"  {int(code):>3}  ", subsequent_indent=" " * 7
    )
    for code in ExitCode
)
