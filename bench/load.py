"""Scenario 4: load with ghz through server reflection (no proto files).

Unary CreateUploadSession, and client-streaming UploadVideo of a small real clip
with one pre-created session per request (see bench/ghz_sessions.py for how),
at concurrency 10 and 50; the configs are bench/ghz/*.json.

The calls come from USERS bench users (request i with user i mod USERS, the session
of an upload created by the same user), as real load comes from many users: the
server's per-user limits at their defaults (20 creates/s, bursts of 200, 1000 active
sessions, 16 streams per user) must never be met here.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from bench.common import REPO, Env, Section, go_module_version, go_tool, small_clip, vidscan
from bench.ghz_sessions import create_sessions, data_template, tokens_env

RUNS = 3
CONCURRENCY = (10, 50)
CONFIGS = REPO / "bench" / "ghz"
# 200 tokens of ~160 bytes: 32 KB in VIDSCAN_TOKENS, well under Linux's 128 KiB for one
# environment string. Over the whole full scenario (6 x 3000 creates + 6 x 300 uploads)
# each user holds 99 sessions (limit 1000) and creates ~1-4 per second (limit 20/s).
USERS = 200


def _ghz(config: str, target: str, tokens: list[str], *args: str) -> dict[str, Any]:
    argv = [str(go_tool("ghz")), "--config", str(CONFIGS / config), "-O", "json", *args, target]
    done = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **tokens_env(tokens)}
    )
    if not done.stdout.strip():
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _add(section: Section, label: str, reports: list[dict[str, Any]]) -> None:
    def pct(report: dict[str, Any], p: int) -> float:
        for item in report.get("latencyDistribution") or []:
            if item["percentage"] == p:
                return float(item["latency"]) / 1e6
        return float("nan")

    def errors(report: dict[str, Any]) -> float:
        codes = report.get("statusCodeDistribution") or {}
        return float(sum(n for code, n in codes.items() if code != "OK"))

    section.add(f"{label}: throughput", "RPS", [float(r["rps"]) for r in reports])
    for p in (50, 95, 99):
        section.add(f"{label}: p{p}", "ms", [pct(r, p) for r in reports])
    section.add(f"{label}: errors", "calls", [errors(r) for r in reports])
    for report in reports:
        for error, count in (report.get("errorDistribution") or {}).items():
            key = f"{label}: {error[:200]}"
            section.extra.setdefault("errors", {})[key] = (
                section.extra.get("errors", {}).get(key, 0) + count
            )


# Connections ghz opens: the kernel spreads connections (not calls) over `serve`'s
# processes (SO_REUSEPORT), so one connection would load one process only.
CONNECTIONS = 8


def run(env: Env) -> Section:
    creates = 300 if env.quick else 3000
    uploads = 50 if env.quick else 300
    section = Section("Load with ghz (reflection, bearer token in metadata)")
    clip = small_clip()
    data_file = env.workdir / "ghz-upload.json"
    with vidscan(env, "load") as server:
        tokens = server.user_tokens(USERS)
        workers = server.settings.media_workers
        processes = server.settings.process_count
        for c in CONCURRENCY:
            reports = [
                _ghz(
                    "create-session.json",
                    server.target,
                    tokens,
                    "-c",
                    str(c),
                    "--connections",
                    str(CONNECTIONS),
                    "-n",
                    str(creates),
                )
                for _ in range(RUNS)
            ]
            _add(section, f"CreateUploadSession, c={c}, n={creates}", reports)
        for c in CONCURRENCY:
            reports, stored = [], []
            for _ in range(RUNS):
                sessions = create_sessions(server.target, tokens, uploads)
                data_file.write_text(data_template(sessions, clip))
                reports.append(
                    _ghz(
                        "upload-video.json",
                        server.target,
                        tokens,
                        "-c",
                        str(c),
                        "--connections",
                        str(CONNECTIONS),
                        "-n",
                        str(uploads),
                        "--data-file",
                        str(data_file),
                    )
                )
                stored.append(env.object_count())
                env.empty_bucket()
            section.notes.append(f"UploadVideo c={c}: objects stored per run {stored} of {uploads}")
            _add(section, f"UploadVideo {len(clip)} B clip, c={c}, n={uploads}", reports)
    for key, count in section.extra.get("errors", {}).items():
        section.notes.append(f"error x{count}: {key}")
    section.notes += [
        f"ghz {go_module_version(go_tool('ghz'))}, {CONNECTIONS} connections, through the "
        f"server's reflection (no proto files); configs in bench/ghz/. The server runs "
        f"{processes} process(es) on one port (VIDSCAN_PROCESSES, automatic).",
        "Latencies are per call. UploadVideo sends header, the clip, a 26-byte `free` box "
        "that makes every upload unique, finish_write; it covers the media check "
        f"(validation in the warm PyAV pool, VIDSCAN_MEDIA_WORKERS={workers}; no early "
        "header probe, as the clip's mdat precedes its moov), the object (one PutObject: "
        "the clip is smaller than a part), the quota and the DB row. No Triton: uploads "
        "answer PROCESSING.",
        "ghz cannot create a session per request itself (session ids come from the server), "
        "so each UploadVideo run uses a data file whose header picks session "
        "`{{.RequestNumber}}` from an inline list of pre-created sessions.",
        f"Calls spread over {USERS} users (VIDSCAN_TOKENS, request i as user i mod {USERS}; "
        "session i created by the same user), so the per-user abuse limits, at their "
        "defaults, are never met: any RESOURCE_EXHAUSTED above is a regression.",
    ]
    return section
