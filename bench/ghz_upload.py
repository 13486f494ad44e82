"""`python -m bench.ghz_upload`: only the ghz UploadVideo scenario of ``load.py``.

The same services, server process, clip, data file and ghz config as ``make bench``,
at one concurrency, printing one JSON line per run (RPS, p50/p95/p99 in ms, status
codes, the load average). Quicker than ``--only load`` (no CreateUploadSession runs,
no c=10) for comparing media pool settings, e.g.
``python -m bench.ghz_upload -c 50 -n 300 --set media_workers=4``.
Writes nothing under ``bench/results``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]


def main() -> int:
    from bench.common import services, small_clip, vidscan
    from bench.ghz_sessions import create_sessions, data_template
    from bench.load import CONNECTIONS, USERS, _ghz

    parser = argparse.ArgumentParser(prog="python -m bench.ghz_upload", description=__doc__)
    parser.add_argument("-c", type=int, default=50, help="ghz concurrency")
    parser.add_argument("-n", type=int, default=300, help="uploads per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS, help="ghz connections (as load.py)"
    )
    parser.add_argument(
        "--set", action="append", default=[], help="a server setting, e.g. media_workers=4"
    )
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    with services(quick=False) as env:
        clip = small_clip()
        data_file = env.workdir / "ghz-upload.json"
        with vidscan(env, "ghz-upload", **overrides) as server:
            tokens = server.user_tokens(USERS)
            for run in range(args.runs):
                sessions = create_sessions(server.target, tokens, args.n)
                data_file.write_text(data_template(sessions, clip))
                report = _ghz(
                    "upload-video.json",
                    server.target,
                    tokens,
                    *("-c", str(args.c), "--connections", str(args.connections)),
                    *("-n", str(args.n), "--data-file", str(data_file)),
                )
                latency = {
                    int(d["percentage"]): round(float(d["latency"]) / 1e6, 1)
                    for d in report.get("latencyDistribution") or []
                }
                line = {
                    "run": run,
                    "settings": overrides,
                    "rps": round(float(report["rps"]), 2),
                    **{f"p{p}_ms": latency.get(p) for p in (50, 95, 99)},
                    "codes": report.get("statusCodeDistribution") or {},
                    "errors": report.get("errorDistribution") or {},
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                }
                print(json.dumps(line), flush=True)
                env.empty_bucket()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
