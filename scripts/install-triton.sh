#!/usr/bin/env bash
# Install a CPU-runnable NVIDIA Triton Inference Server for vidscan's local dev/tests.
#
# Source: the `nvidia-pytriton` wheel from PyPI, which bundles a Triton 2.x `tritonserver`
# binary, its shared libraries (nvidia_pytriton.libs/), the Python backend and one Python
# backend stub per CPython minor version. We do NOT pip-install the wheel: it pins
# numpy<2 (and pulls pyzmq, typer, ...), which conflicts with the project venv. Instead the
# wheel is downloaded (no deps), its sha256 verified, and the server tree is laid out in a
# tool dir:
#
#   ${VIDSCAN_TOOLS_ROOT:-$HOME/.cache/vidscan}/triton/
#     bin/tritonserver                 Triton server binary (RPATH ${ORIGIN}/../lib)
#     lib/                             bundled shared libs (libtritonserver, libcudart, ...)
#     backends/python/                 python backend + triton_python_backend_stub for PY_VER
#     caches/local/                    response-cache plugin
#     python_backend_stubs/<ver>/      all stubs shipped by the wheel (to switch versions)
#     run-tritonserver                 wrapper: sets LD_LIBRARY_PATH/PATH, backend + cache dirs
#     INSTALL_STAMP                    what was installed (idempotency marker)
#
# The python backend stub links against libpython<PY_VER>.so.1.0. The wrapper (and
# tests/support/triton.py) put the LIBDIR of the interpreter that runs the models first on
# LD_LIBRARY_PATH, so the stub embeds the *same* CPython build as that interpreter (on
# Debian the system /lib/x86_64-linux-gnu/libpython3.11.so.1.0 would be picked otherwise).
#
# Usage: scripts/install-triton.sh [--force]
# Env:   VIDSCAN_TOOLS_ROOT   tool root (default ~/.cache/vidscan)
#        PYTHON               interpreter whose version/libpython the stub must match
#                             (default: .venv/bin/python if present, else python3)
#        VIDSCAN_PYTRITON_WHEEL  path to an already-downloaded wheel (offline install)
# Prints the install dir (the last line of stdout) on success.
set -euo pipefail

PYTRITON_VERSION="0.7.0"
WHEEL_NAME="nvidia_pytriton-${PYTRITON_VERSION}-py3-none-manylinux_2_35_x86_64.whl"
WHEEL_SHA256="21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "install-triton: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_ROOT="${VIDSCAN_TOOLS_ROOT:-$HOME/.cache/vidscan}"
DEST="${TOOLS_ROOT}/triton"
DOWNLOADS="${TOOLS_ROOT}/downloads"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "${REPO_ROOT}/.venv/bin/python" ]]; then PYTHON="${REPO_ROOT}/.venv/bin/python"; else PYTHON="python3"; fi
fi

log() { echo "install-triton: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] || die "only Linux x86_64 is supported (wheel is manylinux_2_35_x86_64)"
command -v unzip >/dev/null || command -v "$PYTHON" >/dev/null || die "need unzip or python"
command -v sha256sum >/dev/null || die "need sha256sum (coreutils)"

read -r PY_VER PY_SHARED PY_LIBDIR PY_SONAME PY_PREFIX < <(
  "$PYTHON" -c 'import sys, sysconfig as s; print("%d.%d" % sys.version_info[:2], s.get_config_var("Py_ENABLE_SHARED") or 0, s.get_config_var("LIBDIR"), s.get_config_var("INSTSONAME"), sys.prefix)'
) || die "cannot run PYTHON=$PYTHON"
[[ "$PY_SHARED" == "1" ]] || die "$PYTHON was not built with --enable-shared; the python backend stub needs ${PY_SONAME}"
[[ -e "${PY_LIBDIR}/${PY_SONAME}" ]] || die "missing ${PY_LIBDIR}/${PY_SONAME}"

STAMP="nvidia-pytriton==${PYTRITON_VERSION} sha256=${WHEEL_SHA256} python=${PY_VER} pyenv=${PY_PREFIX} pylibdir=${PY_LIBDIR}"
if [[ "$FORCE" == 0 && -f "${DEST}/INSTALL_STAMP" && "$(cat "${DEST}/INSTALL_STAMP")" == "$STAMP" \
      && -x "${DEST}/bin/tritonserver" && -x "${DEST}/backends/python/triton_python_backend_stub" ]]; then
  log "already installed (${STAMP})"
  echo "$DEST"
  exit 0
fi

mkdir -p "$DOWNLOADS" "$TOOLS_ROOT"
WHEEL="${VIDSCAN_PYTRITON_WHEEL:-${DOWNLOADS}/${WHEEL_NAME}}"
have_good_wheel() { [[ -f "$WHEEL" ]] && echo "${WHEEL_SHA256}  ${WHEEL}" | sha256sum -c --status -; }
if ! have_good_wheel; then
  [[ -z "${VIDSCAN_PYTRITON_WHEEL:-}" ]] || die "VIDSCAN_PYTRITON_WHEEL=$WHEEL missing or sha256 mismatch"
  log "downloading nvidia-pytriton==${PYTRITON_VERSION} (~55 MB, no dependencies)"
  rm -f "$WHEEL"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_35_x86_64 --python-version "$PY_VER" --implementation py \
    -d "$DOWNLOADS" "nvidia-pytriton==${PYTRITON_VERSION}" >&2 \
    || die "pip download nvidia-pytriton==${PYTRITON_VERSION} failed"
  have_good_wheel || die "sha256 mismatch for ${WHEEL} (expected ${WHEEL_SHA256})"
fi

STAGE="$(mktemp -d "${TOOLS_ROOT}/.triton-stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
log "unpacking ${WHEEL_NAME}"
if command -v unzip >/dev/null; then
  unzip -q "$WHEEL" 'pytriton/tritonserver/*' 'nvidia_pytriton.libs/*' -d "$STAGE/whl"
else
  "$PYTHON" - "$WHEEL" "$STAGE/whl" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))]
    z.extractall(sys.argv[2], names)
EOF
fi

SRC="$STAGE/whl/pytriton/tritonserver"
OUT="$STAGE/triton"
STUB_SRC="${SRC}/python_backend_stubs/${PY_VER}/triton_python_backend_stub"
[[ -f "$STUB_SRC" ]] || die "wheel has no python backend stub for Python ${PY_VER} (have: $(ls "${SRC}/python_backend_stubs" | tr '\n' ' '))"

mkdir -p "$OUT"
mv "${SRC}/bin" "${SRC}/backends" "${SRC}/caches" "${SRC}/python_backend_stubs" "$OUT/"
mv "$STAGE/whl/nvidia_pytriton.libs" "$OUT/lib"
cp "$OUT/python_backend_stubs/${PY_VER}/triton_python_backend_stub" "$OUT/backends/python/"
# unzip keeps the wheel's odd modes (0777 binary, 0666 libtritonserver): normalise them.
chmod 0755 "$OUT/bin/tritonserver" "$OUT/backends/python/triton_python_backend_stub" \
  "$OUT"/python_backend_stubs/*/triton_python_backend_stub
chmod -R go-w "$OUT"

cat >"$OUT/run-tritonserver" <<'EOF'
#!/usr/bin/env bash
# Run the vidscan-installed tritonserver with the environment its python backend needs.
#   VIDSCAN_TRITON_PYLIBDIR  dir holding libpython3.X.so.1.0 of the SAME CPython build as
#                            the env below (put first on LD_LIBRARY_PATH for the stub)
#   VIDSCAN_TRITON_PYENV     python env (venv or prefix) whose bin/ goes first on PATH. The
#                            stub embeds CPython ignoring PYTHONPATH; it derives sys.prefix
#                            from `python3` on PATH (venv -> its site-packages), so model.py
#                            files import numpy/onnxruntime from this env.
# Extra arguments are passed to tritonserver (e.g. --model-repository=models).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EOF
cat >>"$OUT/run-tritonserver" <<EOF
: "\${VIDSCAN_TRITON_PYLIBDIR:=${PY_LIBDIR}}"
: "\${VIDSCAN_TRITON_PYENV:=${PY_PREFIX}}"
EOF
cat >>"$OUT/run-tritonserver" <<'EOF'
export LD_LIBRARY_PATH="${VIDSCAN_TRITON_PYLIBDIR}:${HERE}/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
export PATH="${VIDSCAN_TRITON_PYENV}/bin:${PATH}"
exec "${HERE}/bin/tritonserver" --backend-directory="${HERE}/backends" \
  --cache-directory="${HERE}/caches" "$@"
EOF
chmod 0755 "$OUT/run-tritonserver"

# Smoke check: the binary and the stub resolve all their libraries.
if command -v ldd >/dev/null; then
  missing="$(LD_LIBRARY_PATH="${PY_LIBDIR}:${OUT}/lib" ldd "$OUT/bin/tritonserver" \
    "$OUT/backends/python/triton_python_backend_stub" "$OUT/backends/python/libtriton_python.so" \
    | grep 'not found' || true)"
  [[ -z "$missing" ]] || die "unresolved libraries: $missing"
  LD_LIBRARY_PATH="${PY_LIBDIR}:${OUT}/lib" ldd "$OUT/backends/python/triton_python_backend_stub" \
    | grep -q "${PY_LIBDIR}/${PY_SONAME}" || die "stub does not resolve ${PY_LIBDIR}/${PY_SONAME}"
fi
# (`tritonserver --help` exits 1 by design; check that it runs and prints its usage.)
usage="$("$OUT/bin/tritonserver" --help 2>&1 || true)"
[[ "$usage" == *"Usage: tritonserver"* ]] || die "tritonserver does not run: ${usage:0:500}"

echo "$STAMP" >"$OUT/INSTALL_STAMP"
rm -rf "${DEST}.old"
if [[ -e "$DEST" ]]; then mv "$DEST" "${DEST}.old"; fi
mv "$OUT" "$DEST"
rm -rf "${DEST}.old"
log "installed ${STAMP} ($(du -sh "$DEST" | cut -f1)) into ${DEST}"
echo "$DEST"
