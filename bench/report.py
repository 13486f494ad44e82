"""The machine description and the two result files: latest.json and latest.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from support.services import find_binary, tools_dir

from bench.common import CACHE, RESULTS, Section, go_module_version


def machine(triton_version: str = "", load_at_start: str = "") -> dict[str, Any]:
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"

    def run(*argv: str) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    mem_kib = int(first("/proc/meminfo", "MemTotal").split()[0])
    tools = {name: tools_dir() / name for name in ("minio", "tusd", "ghz")}
    return {
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "grpcio": metadata.version("grpcio"),
        "av (PyAV)": metadata.version("av"),
        "aiobotocore": metadata.version("aiobotocore"),
        "httpx": metadata.version("httpx"),
        "minio": go_module_version(find_binary("minio")),
        "triton": triton_version or "not started in this run",
        "tusd": go_module_version(tools["tusd"]) if tools["tusd"].exists() else "not built",
        "ghz": go_module_version(tools["ghz"]) if tools["ghz"].exists() else "not built",
        "go": run("go", "version"),
        "vidscan commit": _commit(),
        "load average (1/5/15 min) at start": load_at_start,
        "load average (1/5/15 min) at end": load_average(),
        "postgresql": run(str(find_binary("postgres")), "--version"),
        "redis": run(str(find_binary("redis-server")), "--version"),
    }


def load_average() -> str:
    """Other work on the machine skews every figure; the load average shows it."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=RESULTS)
        return done.stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "--", "../../server") else ""
    return (git("rev-parse", "--short", "HEAD") or "unknown") + dirty


def output_dir(quick: bool) -> Path:
    """bench/results/ for real runs; quick runs go to the gitignored tmp/ beside it, so
    that a smoke test never overwrites the figures worth committing."""
    return CACHE if quick else RESULTS


def write(
    sections: dict[str, Section | dict[str, Any]],
    *,
    machine_info: dict[str, Any],
    quick: bool,
    seconds: float,
    command: str,
) -> tuple[Path, Path]:
    """Writes latest.json and latest.md. Sections given as dicts are kept as they were
    (from an earlier run, when ``--only`` re-ran some scenarios)."""
    where = output_dir(quick)
    where.mkdir(parents=True, exist_ok=True)
    doc = {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "quick": quick,
        "duration_seconds": round(seconds),
        "machine": machine_info,
        "scenarios": {
            key: value if isinstance(value, dict) else _section_json(value)
            for key, value in sections.items()
        },
    }
    json_path = where / "latest.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path = where / "latest.md"
    md_path.write_text(markdown(doc))
    return json_path, md_path


def _section_json(section: Section) -> dict[str, Any]:
    return {
        "title": section.title,
        "figures": [f.summary() for f in section.figures],
        "ratios": {k: round(v, 3) for k, v in section.ratios.items()},
        "notes": section.notes,
        "extra": section.extra,
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# vidscan benchmarks",
        "",
        f"Generated {doc['generated']} by `{doc['command']}`"
        + (" (**quick**: shrunken sizes, not the figures to quote)" if doc["quick"] else "")
        + f" in {doc['duration_seconds']} s."
        + (
            " Scenarios not named by --only keep the results of the run that measured them."
            if "--only" in doc["command"]
            else ""
        ),
        "Each figure is the median of the runs listed, with their min and max.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in doc["machine"].items()]
    for key, section in doc["scenarios"].items():
        lines += ["", f"## {section['title']}", ""]
        if "error" in section:
            lines += [f"**Failed:** `{section['error']}`", ""]
            continue
        extra = section.get("extra", {})
        took, load = extra.get("seconds"), extra.get("load average before / after")
        lines += [
            f"Scenario `{key}`, measured {section.get('generated', doc['generated'])}"
            + (f" in {took} s" if took is not None else "")
            + (f"; load average (1/5/15 min) before | after: {load}" if load else "")
            + ".",
            "",
            "| measurement | median | min | max | unit | runs |",
            "|---|---:|---:|---:|---|---:|",
        ]
        for f in section["figures"]:
            name = f["name"] + (f" ({f['note']})" if f.get("note") else "")
            lines.append(
                f"| {name} | {_fmt(f['median'])} | {_fmt(f['min'])} | {_fmt(f['max'])} "
                f"| {f['unit']} | {len(f['runs'])} |"
            )
        if section["ratios"]:
            lines += ["", "| ratio (of medians) | value |", "|---|---:|"]
            lines += [f"| {k} | {v:.2f} |" for k, v in section["ratios"].items()]
        if section["notes"]:
            lines += [""] + [f"- {note}" for note in section["notes"]]
    return "\n".join(lines) + "\n"
