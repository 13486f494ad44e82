"""`python -m bench [--quick] [--only SCENARIO ...]`: run the benchmarks, write
bench/results/latest.json and latest.md. See bench/README.md."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The services, server process and video helpers are the test suite's own.
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

SCENARIOS = ("throughput", "memory", "rejection", "load", "analysis", "abuse")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run this scenario (repeatable)"
    )
    args = parser.parse_args()
    chosen = args.only or list(SCENARIOS)

    from bench import report
    from bench.common import Section, services

    started = time.monotonic()
    load_at_start = report.load_average()
    sections: dict[str, Section | dict[str, object]] = {}
    previous = report.output_dir(args.quick) / "latest.json"
    if args.only and previous.is_file():  # keep the other scenarios' last results
        sections.update(json.loads(previous.read_text()).get("scenarios", {}))
    triton_version = ""
    failed = False
    with services(quick=args.quick) as env:
        for name in chosen:
            print(f"bench: {name} ...", flush=True)
            began, load_before = time.monotonic(), report.load_average()
            try:
                section = importlib.import_module(f"bench.{name}").run(env)
            except Exception as exc:
                traceback.print_exc()
                failed = True
                sections[name] = {"title": name, "error": f"{type(exc).__name__}: {exc}"}
                continue
            section.extra["seconds"] = round(time.monotonic() - began)
            section.extra["load average before / after"] = (
                f"{load_before} | {report.load_average()}"
            )
            triton_version = section.extra.get("triton_version", triton_version)
            sections[name] = section
            print(f"bench: {name} done in {time.monotonic() - began:.0f} s", flush=True)
            for figure in section.figures:
                s = figure.summary()
                print(
                    f"  {s['name']}: {s['median']:.2f} {s['unit']} [{s['min']:.2f}..{s['max']:.2f}]"
                )
            for ratio, value in section.ratios.items():
                print(f"  {ratio}: {value:.2f}")
    ordered = {k: sections[k] for k in SCENARIOS if k in sections}
    earlier = sections.get("analysis")
    if not triton_version and isinstance(earlier, dict):  # kept from an earlier run
        extra = earlier.get("extra")
        if isinstance(extra, dict):
            triton_version = str(extra.get("triton_version", ""))
    command = (
        "python -m bench"
        + (" --quick" if args.quick else "")
        + "".join(f" --only {n}" for n in args.only or ())
    )
    paths = report.write(
        ordered,
        machine_info=report.machine(triton_version, load_at_start),
        quick=args.quick,
        seconds=time.monotonic() - started,
        command=command,
    )
    print(f"bench: wrote {paths[0]} and {paths[1]} in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
