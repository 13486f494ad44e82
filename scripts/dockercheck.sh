#!/usr/bin/env bash
# Checks the Dockerfile without a Docker engine, by replaying it natively.
#
#   scripts/dockercheck.sh            (DOCKERCHECK_KEEP=1 keeps the temp dir)
#
# What it does:
#   1. Static checks: two stages, both FROM python:3.11-slim-bookworm; the runtime
#      stage copies only the venv from the build stage, runs as USER 10001, listens on
#      the EXPOSEd port, ENTRYPOINT ["vidscan-server"] / CMD ["serve"], an exec-form
#      HEALTHCHECK on grpc.health.v1; every build-stage COPY source is let through by
#      .dockerignore and gen/ is not; hadolint too, when it is installed.
#   2. Replays the build stage with this machine's Python 3.11 in a temp dir: each
#      COPY copies the same paths from the repo (filtered by .dockerignore), each ENV
#      and WORKDIR is applied, each RUN runs verbatim under /bin/sh -c. Container paths
#      are mapped into the temp dir: the venv path (/opt/venv, taken from the runtime
#      stage's COPY --from=build) to <tmp>/opt/venv, every other absolute path of a
#      stage to <tmp>/<stage>/<path>. The venv is created at its final place and never
#      moved (venvs are not relocatable), just as the image keeps it at /opt/venv in
#      both stages. Build-stage RUN lines may therefore use only relative paths and
#      $VIRTUAL_ENV; any other absolute path there is refused.
#   3. Deletes the build stage's tree, so only the venv is left (the runtime stage's
#      COPY --from=build), and checks the venv: the project is a regular (not
#      editable) install; every file of server/, clients/ and the generated
#      gen/python/vidscan is in site-packages (Alembic's migrations included); every
#      shared library that a compiled module needs and the venv does not carry is one
#      that python:3.11-slim-bookworm has.
#   4. Runs the runtime stage from its WORKDIR (a temp dir, never the repo) with only
#      the image's environment (its ENV lines; nothing of this shell's VIDSCAN_*,
#      DATABASE_URL, ...): ENTRYPOINT + `mint-token x`, ENTRYPOINT + `migrate`, the
#      media worker (`python -m server.media.worker`) on a clip PyAV writes, then
#      ENTRYPOINT + CMD (`serve`) with VIDSCAN_GRPC_LISTEN set to a free local port as
#      `docker run -e` would, and the exact HEALTHCHECK command from the Dockerfile
#      against it (and against a closed port, where it must fail); SIGTERM must stop
#      the server cleanly. As uid 10001 where this machine lets that user run the
#      interpreter; otherwise as the current user (said so in the output).
#
# What it cannot prove: no image is built, so nothing about layers, the build context
# as Docker sends it, BuildKit, the base image's own contents (its apt packages, its
# Python patch version and pip) or the runtime stage's RUN (groupadd/useradd/install
# need root and would change this machine; they are only grepped). The venv is built
# by this machine's Python 3.11 and pip from this machine's pip configuration and
# cache, not the image's. The shared-library check trusts a list of the sonames the
# slim image provides, kept below. Network, volume and signal behaviour of a real
# container (PID 1, docker stop) are not exercised.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Python 3.11 that plays the base image's: $PYTHON311, else the system one (which
# uid 10001 can run, so the runtime checks run as that user), else python3.11 on PATH.
base_python=
for candidate in ${PYTHON311:-} /usr/bin/python3.11 python3.11; do
  if base_python=$("$candidate" -c 'import os, sys, ensurepip, venv
assert sys.version_info[:2] == (3, 11)
print(os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable))' 2>/dev/null); then
    break
  fi
  base_python=
  if [[ -n ${PYTHON311:-} ]]; then break; fi
done
if [[ -z $base_python ]]; then
  echo "dockercheck: no usable Python 3.11 with venv/ensurepip (${PYTHON311:-python3.11})" >&2
  exit 1
fi

helper=$(cat <<'PY'
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path.cwd()
BASE_PYTHON = sys.argv[1]
BASE_IMAGE = "python:3.11-slim-bookworm"
RUNTIME_UID = 10001
# Sonames that python:3.11-slim-bookworm provides (libc6, libgcc-s1, libstdc++6,
# zlib1g and the libraries its own Python build links).
SLIM_SONAMES = {
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libc.so.6", "libm.so.6",
    "libmvec.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
    "libresolv.so.2", "libcrypt.so.1", "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1",
    "libssl.so.3", "libcrypto.so.3", "libffi.so.8", "libsqlite3.so.0", "libbz2.so.1.0",
    "liblzma.so.5", "libuuid.so.1", "libncursesw.so.6", "libtinfo.so.6",
    "libreadline.so.8", "libexpat.so.1",
}
failures: list[str] = []
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[dockercheck {time.monotonic() - T0:6.1f}s] {message}", flush=True)


def fail(message: str) -> None:
    failures.append(message)
    print(f"FAIL: {message}", flush=True)


def die(message: str) -> None:
    print(f"FAIL: {message}", flush=True)
    raise SystemExit(1)


# ---------------------------------------------------------------- Dockerfile parsing
def instructions(path: Path) -> list[tuple[str, str]]:
    result, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    if pending:
        die("Dockerfile ends inside a line continuation")
    return result


def split_flags(args: str) -> tuple[dict[str, str], str]:
    flags = {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        args = args.strip()
    return flags, args


def exec_form(args: str) -> list[str]:
    if not args.startswith("["):
        return ["/bin/sh", "-c", args]
    value = json.loads(args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        die(f"not a JSON string array: {args}")
    return value


stages: list[dict] = []
global_args: dict[str, str] = {}
for word, args in instructions(REPO / "Dockerfile"):
    if word == "ARG" and not stages:  # a global build argument, usable in FROM
        name, _, default = args.partition("=")
        global_args[name.strip()] = default.strip()
        continue
    if word == "FROM":
        for name, default in global_args.items():
            args = args.replace("${" + name + "}", default).replace("$" + name, default)
        parts = args.split()
        name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
        stages.append({"image": parts[0], "name": name, "steps": []})
    elif not stages:
        die(f"{word} before the first FROM")
    else:
        stages[-1]["steps"].append((word, args))


def steps(stage: dict, word: str) -> list[str]:
    return [args for w, args in stage["steps"] if w == word]


# ---------------------------------------------------------------- 1. static checks
say("static checks")
if [s["name"] for s in stages] != ["build", "runtime"]:
    fail(f"expected stages build, runtime; got {[s['name'] for s in stages]}")
    die("cannot go on")
build, runtime = stages
for stage in stages:
    if stage["image"] != BASE_IMAGE:
        fail(f"stage {stage['name']} is FROM {stage['image']}, not {BASE_IMAGE}")

venv_copy = [split_flags(a) for a in steps(runtime, "COPY")]
if len(venv_copy) != 1 or venv_copy[0][0] != {"from": "build"}:
    fail("the runtime stage must copy exactly one thing, with --from=build")
    die("cannot go on")
src, _, dst = venv_copy[0][1].partition(" ")
if src.rstrip("/") != dst.strip().rstrip("/"):
    die(f"the venv must keep its path between stages: {src} -> {dst}")
VENV_PATH = src.rstrip("/")
if steps(runtime, "ADD") or steps(build, "ADD"):
    fail("use COPY, not ADD")
for stage in stages:
    env_text = " ".join(steps(stage, "ENV"))
    if f"VIRTUAL_ENV={VENV_PATH}" not in env_text or f"PATH={VENV_PATH}/bin:$PATH" not in env_text:
        fail(f"stage {stage['name']}: ENV VIRTUAL_ENV={VENV_PATH} and PATH={VENV_PATH}/bin:$PATH")

users = steps(runtime, "USER")
if users not in ([f"{RUNTIME_UID}:{RUNTIME_UID}"], [str(RUNTIME_UID)]):
    fail(f"runtime stage USER must be {RUNTIME_UID}:{RUNTIME_UID}, got {users}")
last_words = [w for w, _ in runtime["steps"]]
if "USER" in last_words and any(w == "RUN" for w in last_words[last_words.index("USER"):]):
    fail("no RUN after USER in the runtime stage")
if steps(build, "USER"):
    fail("the build stage has no business with USER")

runtime_env: dict[str, str] = {}
for args in steps(runtime, "ENV"):
    for pair in shlex.split(args):
        key, _, value = pair.partition("=")
        runtime_env[key] = value
data_dir = runtime_env.get("VIDSCAN_DATA_DIR", "")
if data_dir != "/var/lib/vidscan":
    fail(f"ENV VIDSCAN_DATA_DIR=/var/lib/vidscan expected, got {data_dir!r}")
if steps(runtime, "WORKDIR") != [data_dir]:
    fail(f"runtime WORKDIR should be the data dir {data_dir}")
runtime_run = " ".join(steps(runtime, "RUN"))
for needle in (f"--uid {RUNTIME_UID}", f"--gid {RUNTIME_UID}", f"-o {RUNTIME_UID} -g {RUNTIME_UID}"):
    if needle not in runtime_run:
        fail(f"runtime RUN should create user/group/data dir with {needle!r}")
if data_dir and data_dir not in runtime_run:
    fail("runtime RUN should create the data dir owned by the runtime user")
listen = runtime_env.get("VIDSCAN_GRPC_LISTEN", "")
port = listen.rpartition(":")[2]
if not listen.startswith("0.0.0.0:") or steps(runtime, "EXPOSE") != [port]:
    fail(f"VIDSCAN_GRPC_LISTEN ({listen!r}) must be 0.0.0.0:<the EXPOSEd port>")
if [exec_form(a) for a in steps(runtime, "ENTRYPOINT")] != [["vidscan-server"]]:
    fail('ENTRYPOINT ["vidscan-server"] expected (exec form)')
if [exec_form(a) for a in steps(runtime, "CMD")] != [["serve"]]:
    fail('CMD ["serve"] expected (exec form)')
healthchecks = steps(runtime, "HEALTHCHECK")
if len(healthchecks) != 1:
    die("exactly one HEALTHCHECK expected in the runtime stage")
hc_flags, hc_rest = split_flags(healthchecks[0])
hc_word, _, hc_cmd = hc_rest.partition(" ")
if hc_word.upper() != "CMD" or not hc_cmd.strip().startswith("["):
    die("HEALTHCHECK must be CMD in exec form")
HEALTHCHECK = exec_form(hc_cmd.strip())
if "grpc_health" not in " ".join(HEALTHCHECK):
    fail("the HEALTHCHECK should query grpc.health.v1")
if "timeout" not in hc_flags:
    fail("HEALTHCHECK should set --timeout")
for args in steps(build, "RUN"):
    if re.search(r"pip\b.*\binstall\b.*(\s-e\s|--editable)", args):
        fail(f"the project must not be installed editable: {args}")


# .dockerignore (the subset of Docker's rules used here: last match wins, a pattern
# also matches everything under a matching directory, ** spans directories).
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    path = REPO / ".dockerignore"
    if not path.exists():
        return []
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


RULES = ignore_rules()


def in_context(relative: str) -> bool:
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negate, regex in RULES:
        if any(regex.fullmatch(c) for c in candidates):
            included = negate
    return included


copies = [split_flags(a) for a in steps(build, "COPY")]
for flags, args in copies:
    if flags:
        die(f"dockercheck cannot replay COPY flags {flags} in the build stage")
    for source in shlex.split(args)[:-1]:
        if not in_context(source.rstrip("/")):
            fail(f".dockerignore leaves out COPY source {source}")
        if shutil.which("git") and (REPO / ".git").exists():
            listed = subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                 source], cwd=REPO, capture_output=True, text=True,
            ).stdout.split("\0")
            for name in filter(None, listed):
                if not in_context(name):
                    fail(f".dockerignore leaves out {name}, under COPY source {source}")
if in_context("gen/python/vidscan/__init__.py"):
    fail(".dockerignore must keep gen/ out: the build stage generates it")
if in_context(".venv/bin/python"):
    fail(".dockerignore must keep .venv out")

if shutil.which("hadolint"):
    say("hadolint")
    if subprocess.run(["hadolint", "Dockerfile"], cwd=REPO).returncode != 0:
        fail("hadolint")
if failures:
    die(f"{len(failures)} static check(s) failed")

# ---------------------------------------------------------------- 2. replay the build
WORK = Path(tempfile.mkdtemp(prefix="vidscan-dockercheck."))
os.chmod(WORK, 0o755)
if WORK.resolve().is_relative_to(REPO.resolve()):
    die(f"the temp dir {WORK} is inside the repo; set TMPDIR elsewhere")
HOST_VENV = WORK / VENV_PATH.lstrip("/")
base_bin = WORK / "base" / "bin"
base_bin.mkdir(parents=True)
for name in ("python", "python3", "python3.11"):
    (base_bin / name).symlink_to(BASE_PYTHON)
BASE_PATH = f"{base_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
server: subprocess.Popen | None = None


def host_path(path: str, stage_root: Path) -> Path:
    if path == VENV_PATH or path.startswith(VENV_PATH + "/"):
        return HOST_VENV / path[len(VENV_PATH) :].lstrip("/")
    return stage_root / path.lstrip("/")


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(
        r"\$(?:\{(\w+)\}|(\w+))", lambda m: env.get(m.group(1) or m.group(2), ""), value
    )


def apply_env(args: str, env: dict[str, str], stage_root: Path) -> None:
    pairs = shlex.split(args)
    if len(pairs) >= 2 and "=" not in pairs[0]:  # legacy `ENV KEY value`
        pairs = [f"{pairs[0]}={' '.join(pairs[1:])}"]
    for pair in pairs:
        key, _, value = pair.partition("=")
        mapped = ":".join(
            str(host_path(part, stage_root)) if part.startswith("/") else part
            for part in value.split(":")
        )
        env[key] = expand(mapped, env)


def copy_into(source: Path, target: Path, relative: str) -> int:
    count = 0
    if source.is_dir():
        for child in sorted(source.iterdir()):
            if in_context(f"{relative}/{child.name}"):
                count += copy_into(child, target / child.name, f"{relative}/{child.name}")
        target.mkdir(parents=True, exist_ok=True)
        return count
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return 1


def run_step(argv: list[str], **kwargs) -> None:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, **kwargs)
    if result.returncode != 0:
        die(f"exit {result.returncode}: {argv[-1]}")


def replay_build() -> Path:
    root = WORK / "build"
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
    # This machine's pip configuration (index, certificates, proxies) and cache.
    for key, value in os.environ.items():
        if key.startswith("PIP_") or key.lower() in (
            "http_proxy", "https_proxy", "no_proxy", "ssl_cert_file", "requests_ca_bundle",
            "xdg_cache_home", "xdg_config_home", "tmpdir",
        ):
            env[key] = value
    workdir = root
    workdir.mkdir(parents=True)
    for word, args in build["steps"]:
        say(f"build: {word} {args[:110]}")
        if word == "ENV":
            apply_env(args, env, root)
        elif word == "WORKDIR":
            workdir = host_path(args, root) if args.startswith("/") else workdir / args
            workdir.mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            *sources, dest = shlex.split(args)
            dest_dir = dest.endswith("/") or len(sources) > 1
            target = host_path(dest, root) if dest.startswith("/") else workdir / dest
            for source in sources:
                relative = source.rstrip("/")
                path = REPO / relative
                if not path.exists():
                    die(f"COPY source {source} does not exist")
                into = target / path.name if dest_dir and not path.is_dir() else target
                copy_into(path, into, relative)
        elif word == "RUN":
            text = args
            for found in re.finditer(r"(?:^|[\s=:'\"(])(/[\w.][^\s'\";:)]*)", text):
                if found.group(1) != "/dev/null":
                    die(f"build RUN uses an absolute path dockercheck cannot map: {found.group(1)}")
            run_step(["/bin/sh", "-c", text] if not text.startswith("[") else exec_form(text),
                     cwd=workdir, env=env)
        elif word == "LABEL":
            pass
        else:
            die(f"dockercheck cannot replay {word} in the build stage; extend it")
    return workdir


def site_packages() -> Path:
    found = list(HOST_VENV.glob("lib/python3.*/site-packages"))
    if len(found) != 1:
        die(f"no single site-packages in {HOST_VENV}")
    return found[0]


def source_files(root: Path, top: str) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in (root / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def check_venv(build_src: Path, build_root: Path) -> None:
    site = site_packages()
    expected = (
        source_files(build_src, "server")
        | source_files(build_src / "clients", "vidscan_client")
        | source_files(build_src / "gen" / "python", "vidscan")
    )
    if not any(e.startswith("vidscan/v1/") and e.endswith("_pb2.py") for e in expected):
        fail("the build stage generated no stubs in gen/python/vidscan/v1")
    missing = sorted(e for e in expected if not (site / e).is_file())
    for name in missing:
        fail(f"not installed (missing from the wheel): {name}")
    say(f"venv: {len(expected) - len(missing)}/{len(expected)} source and generated files installed")
    dists = list(site.glob("vidscan-*.dist-info"))
    if len(dists) != 1:
        die("the vidscan distribution is not installed in the venv")
    direct = dists[0] / "direct_url.json"
    if direct.exists() and json.loads(direct.read_text()).get("dir_info", {}).get("editable"):
        fail("vidscan is installed editable")
    for pth in site.glob("*.pth"):
        if pth.name.startswith("__editable__") or str(build_root) in pth.read_text():
            fail(f"{pth.name} points into the build tree")
    provided = {p.name for p in HOST_VENV.rglob("*.so*") if p.is_file()}
    needed: dict[str, str] = {}
    for lib in HOST_VENV.rglob("*.so*"):
        if not lib.is_file() or lib.is_symlink():
            continue
        out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout
        for soname in re.findall(r"\(NEEDED\).*\[(.+?)\]", out):
            needed.setdefault(soname, str(lib.relative_to(HOST_VENV)))
    outside = sorted(set(needed) - provided)
    for soname in outside:
        if soname not in SLIM_SONAMES:
            fail(f"{needed[soname]} needs {soname}, which {BASE_IMAGE} lacks (apt-get it)")
    say(f"venv: system libraries needed, all in {BASE_IMAGE}: {', '.join(outside)}")


# ---------------------------------------------------------------- 4. the runtime stage
def runtime_context() -> tuple[dict[str, str], Path]:
    root = WORK / "runtime"
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
    workdir = root
    for word, args in runtime["steps"]:
        if word == "ENV":
            apply_env(args, env, root)
        elif word == "WORKDIR":
            workdir = host_path(args, root) if args.startswith("/") else workdir / args
    # What the runtime RUN does for the data dir, and Docker's HOME for USER 10001.
    Path(env["VIDSCAN_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    env["HOME"] = env["VIDSCAN_DATA_DIR"]
    return env, workdir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    global server
    build_src = replay_build()
    build_root = WORK / "build"
    check_venv(build_src, build_root)
    shutil.rmtree(build_root)  # only the venv goes on to the runtime stage
    say(f"build stage done; its tree is gone, the venv stays at {HOST_VENV}")

    env, cwd = runtime_context()
    if cwd.resolve().is_relative_to(REPO.resolve()):
        die("the runtime WORKDIR maps into the repo")
    as_user: dict = {}
    if os.geteuid() == 0:
        for path in {cwd, Path(env["VIDSCAN_DATA_DIR"])}:
            os.chown(path, RUNTIME_UID, RUNTIME_UID)
        try:
            probe = subprocess.run(
                [str(HOST_VENV / "bin" / "python"), "-c", "pass"], user=RUNTIME_UID,
                group=RUNTIME_UID, extra_groups=[], cwd=cwd, env=env, capture_output=True,
            ).returncode
        except OSError:
            probe = -1
        if probe == 0:
            as_user = {"user": RUNTIME_UID, "group": RUNTIME_UID, "extra_groups": []}
    say(f"runtime: cwd {cwd}, running as "
        + (f"uid {RUNTIME_UID}" if as_user else
           f"uid {os.geteuid()} (uid {RUNTIME_UID} cannot reach {BASE_PYTHON} here)"))
    entry = [shutil.which(exec_form(steps(runtime, "ENTRYPOINT")[0])[0], path=env["PATH"])]
    if not entry[0] or not entry[0].startswith(str(HOST_VENV)):
        die("ENTRYPOINT is not a script of the venv")

    def run(argv: list[str], extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=cwd, env={**env, **(extra or {})}, capture_output=True,
                              text=True, timeout=120, stdin=kw.pop("stdin", subprocess.DEVNULL),
                              **as_user, **kw)

    where = run(["python", "-I", "-c",
                 "import server, vidscan.v1.upload_pb2 as u, vidscan_client as c; "
                 "print(server.__file__, u.__file__, c.__file__)"])
    if where.returncode != 0 or any(not p.startswith(str(HOST_VENV)) for p in where.stdout.split()):
        fail(f"packages not imported from the venv: {where.stdout}{where.stderr}")

    token = run(entry + ["mint-token", "x"])
    if token.returncode != 0 or token.stdout.strip().count(".") != 2:
        fail(f"mint-token x: exit {token.returncode}: {token.stdout}{token.stderr}")
    else:
        say("runtime: mint-token x printed a JWT")
    migrate = run(entry + ["migrate"])
    database = Path(env["VIDSCAN_DATA_DIR"]) / "vidscan.db"
    if migrate.returncode != 0 or not database.exists():
        fail(f"migrate: exit {migrate.returncode}: {migrate.stdout}{migrate.stderr}")
    else:
        say(f"runtime: migrate created {database.name} in VIDSCAN_DATA_DIR")

    clip = Path(env["VIDSCAN_DATA_DIR"]) / "clip.mp4"
    make = run(["python", "-c",
                "import sys, av, numpy as np\n"
                "with av.open(sys.argv[1], 'w', format='mp4') as out:\n"
                "    s = out.add_stream('mpeg4', rate=10); s.width = 64; s.height = 48\n"
                "    s.pix_fmt = 'yuv420p'\n"
                "    for i in range(10):\n"
                "        f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format='rgb24')\n"
                "        f.pts = i\n"
                "        out.mux(s.encode(f))\n"
                "    out.mux(s.encode())\n", str(clip)])
    request = {"op": "validate",
               "sandbox": {"memory_bytes": 2 << 30, "cpu_seconds": 60, "fault": ""},
               "request": {"path": str(clip), "limits": {"max_pixels": 7680 * 4320,
                                                         "max_seconds": 3600.0, "max_fps": 240.0}}}
    worker = run(["python", "-m", "server.media.worker"], input=json.dumps(request), stdin=None)
    answer = {}
    if make.returncode == 0 and worker.returncode == 0:
        answer = json.loads(worker.stdout or "{}")
    if not answer.get("ok"):
        fail(f"media worker: {make.stderr}{worker.returncode} {worker.stdout}{worker.stderr}")
    else:
        say(f"runtime: media worker validated a PyAV-made clip: {answer.get('info')}")

    port = free_port()
    listen = {"VIDSCAN_GRPC_LISTEN": f"127.0.0.1:{port}"}  # docker run -e ...
    log = (WORK / "serve.log").open("w+")
    cmd = entry + exec_form(steps(runtime, "CMD")[0])
    server = subprocess.Popen(cmd, cwd=cwd, env={**env, **listen}, stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **as_user)
    say(f"runtime: {' '.join(cmd[-1:])} on 127.0.0.1:{port}; HEALTHCHECK {HEALTHCHECK[:2]}...")
    healthy, deadline = None, time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        healthy = run(HEALTHCHECK, listen)
        if healthy.returncode == 0:
            break
        time.sleep(0.5)
    if healthy is None or healthy.returncode != 0:
        log.seek(0)
        fail(f"HEALTHCHECK never passed (server exit {server.poll()}): "
             f"{healthy and healthy.stderr[-2000:]}\n--- server log ---\n{log.read()[-4000:]}")
    else:
        say("runtime: the Dockerfile's HEALTHCHECK passed against the running server")
    closed = run(HEALTHCHECK, {"VIDSCAN_GRPC_LISTEN": f"127.0.0.1:{free_port()}"})
    if closed.returncode == 0:
        fail("the HEALTHCHECK passes against a closed port")
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=45)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            log.seek(0)
            fail(f"serve did not stop cleanly on SIGTERM (exit {code}): {log.read()[-2000:]}")
        else:
            say("runtime: SIGTERM stopped the server, exit 0")
    server = None


try:
    main()
finally:
    if server is not None and server.poll() is None:
        server.kill()
        server.wait()
    if os.environ.get("DOCKERCHECK_KEEP"):
        print(f"kept {WORK}")
    else:
        shutil.rmtree(WORK, ignore_errors=True)
if failures:
    print(f"dockercheck: {len(failures)} check(s) failed", flush=True)
    raise SystemExit(1)
say("dockercheck: OK")
PY
)

exec "$base_python" -I -c "$helper" "$base_python"
