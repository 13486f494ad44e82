#!/usr/bin/env bash
# Install a CPU-runnable NVIDIA Triton Inference Server for vidscan's local dev and tests.
#
# Source: the `nvidia-pytriton` wheel from PyPI, which bundles a Triton 2.x `tritonserver`
# binary (2.51.0 in pytriton 0.7.0), its shared libraries (nvidia_pytriton.libs/), the
# Python backend and one Python-backend stub per CPython minor version. We do NOT
# pip-install the wheel (it pins numpy<2 and pulls pyzmq, typer, ... which conflict with
# the project venv): it is downloaded without dependencies, its sha256 verified, and the
# server tree is laid out in a tool dir:
#
#   ${VIDSCAN_TOOLS_ROOT:-$HOME/.cache/vidscan}/triton/
#     bin/tritonserver              Triton server binary (RPATH ${ORIGIN}/../lib)
#     lib/                          bundled shared libs (libtritonserver, libcudart, ...)
#     backends/python/              python backend + triton_python_backend_stub for PY_VER
#     caches/local/                 response-cache plugin
#     python_backend_stubs/<ver>/   all stubs shipped by the wheel (to switch versions)
#     pyenv/                        venv the model.py files run in (numpy<2 + onnxruntime)
#     run-tritonserver              wrapper: environment + backend/cache dirs, then exec
#     INSTALL_STAMP                 what was installed (idempotency marker, written last)
#
# Why a separate `pyenv` venv: the stub's pybind11 predates numpy 2 (tensors handed to
# pb_utils.Tensor come out EMPTY with numpy 2.x), so model code must run with numpy<2,
# while the project venv has numpy 2. The venv is created from the SAME CPython build as
# PYTHON (the stub embeds libpython3.X.so.1.0; the wrapper puts that build's LIBDIR first
# on LD_LIBRARY_PATH, else Debian's /lib/x86_64-linux-gnu/libpython3.11.so.1.0 is used).
#
# Usage: scripts/install-triton.sh [--force]
# Env:   VIDSCAN_TOOLS_ROOT  tool root (default ~/.cache/vidscan)
#        PYTHON              interpreter whose CPython build the stub must embed
#                            (default: .venv/bin/python if present, else python3)
#        VIDSCAN_TRITON_BACKEND_PACKAGES  pip requirements of the model env (default
#                            "numpy==1.26.4 onnxruntime==1.32.0"; GPU hosts: use
#                            onnxruntime-gpu instead of onnxruntime)
#        VIDSCAN_PYTRITON_WHEEL  path to an already-downloaded wheel (offline install)
# Needs: network access to PyPI on first run (wheel ~55 MB + model env ~40 MB).
# Prints the install dir as the last line of stdout on success; logs go to stderr.
set -euo pipefail

PYTRITON_VERSION="0.7.0"
WHEEL_NAME="nvidia_pytriton-${PYTRITON_VERSION}-py3-none-manylinux_2_35_x86_64.whl"
WHEEL_SHA256="21f063ff93bb426d0c06b7a55e7eb9efcfe62c0dddd9a908e9877e18710128df"
BACKEND_PACKAGES="${VIDSCAN_TRITON_BACKEND_PACKAGES:-numpy==1.26.4 onnxruntime==1.32.0}"

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
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

[[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] || die "only Linux x86_64 is supported (the wheel is manylinux_2_35_x86_64)"
command -v sha256sum >/dev/null || die "need sha256sum (coreutils)"

read -r PY_VER PY_SHARED PY_LIBDIR PY_SONAME PY_BASE < <(
  "$PYTHON" -c 'import os, sys, sysconfig as s
v = "%d.%d" % sys.version_info[:2]
print(v, s.get_config_var("Py_ENABLE_SHARED") or 0, s.get_config_var("LIBDIR"),
      s.get_config_var("INSTSONAME"), os.path.realpath(os.path.join(sys.base_prefix, "bin", "python" + v)))'
) || die "cannot run PYTHON=$PYTHON"
[[ "$PY_SHARED" == "1" ]] || die "$PYTHON was not built with --enable-shared; the python backend stub needs ${PY_SONAME}"
[[ -e "${PY_LIBDIR}/${PY_SONAME}" ]] || die "missing ${PY_LIBDIR}/${PY_SONAME}"
[[ -x "$PY_BASE" ]] || die "base interpreter $PY_BASE of $PYTHON not found"

STAMP="nvidia-pytriton==${PYTRITON_VERSION} sha256=${WHEEL_SHA256} python=${PY_BASE} pylibdir=${PY_LIBDIR} backend-packages=[${BACKEND_PACKAGES}]"
if [[ "$FORCE" == 0 && -f "${DEST}/INSTALL_STAMP" && "$(cat "${DEST}/INSTALL_STAMP")" == "$STAMP" \
      && -x "${DEST}/run-tritonserver" && -x "${DEST}/pyenv/bin/python3" ]]; then
  log "already installed (${STAMP})"
  echo "$DEST"
  exit 0
fi

# ---- 1. the wheel -------------------------------------------------------------------
mkdir -p "$DOWNLOADS"
WHEEL="${VIDSCAN_PYTRITON_WHEEL:-${DOWNLOADS}/${WHEEL_NAME}}"
have_good_wheel() { [[ -f "$WHEEL" ]] && echo "${WHEEL_SHA256}  ${WHEEL}" | sha256sum -c --status -; }
if ! have_good_wheel; then
  [[ -z "${VIDSCAN_PYTRITON_WHEEL:-}" ]] || die "VIDSCAN_PYTRITON_WHEEL=$WHEEL missing or sha256 mismatch"
  log "downloading nvidia-pytriton==${PYTRITON_VERSION} (~55 MB, without dependencies)"
  rm -f "$WHEEL"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_35_x86_64 --python-version "$PY_VER" --implementation py \
    -d "$DOWNLOADS" "nvidia-pytriton==${PYTRITON_VERSION}" >&2 \
    || die "pip download nvidia-pytriton==${PYTRITON_VERSION} failed"
  have_good_wheel || die "sha256 mismatch for ${WHEEL} (expected ${WHEEL_SHA256})"
fi

# ---- 2. server tree (staged, then swapped in) ----------------------------------------
STAGE="$(mktemp -d "${TOOLS_ROOT}/.triton-stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
log "unpacking ${WHEEL_NAME}"
"$PYTHON" - "$WHEEL" "$STAGE/whl" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/"))]
    z.extractall(sys.argv[2], names)
EOF

SRC="$STAGE/whl/pytriton/tritonserver"
OUT="$STAGE/triton"
[[ -f "${SRC}/python_backend_stubs/${PY_VER}/triton_python_backend_stub" ]] \
  || die "wheel has no python backend stub for Python ${PY_VER} (has: $(ls "${SRC}/python_backend_stubs" | tr '\n' ' '))"
mkdir -p "$OUT"
mv "${SRC}/bin" "${SRC}/backends" "${SRC}/caches" "${SRC}/python_backend_stubs" "$OUT/"
mv "$STAGE/whl/nvidia_pytriton.libs" "$OUT/lib"
cp "$OUT/python_backend_stubs/${PY_VER}/triton_python_backend_stub" "$OUT/backends/python/"
# zipfile drops the permission bits: set them (binaries 0755, everything else 0644).
find "$OUT" -type d -exec chmod 0755 {} +
find "$OUT" -type f -exec chmod 0644 {} +
chmod 0755 "$OUT/bin/tritonserver" "$OUT"/lib/*.so* "$OUT/backends/python/triton_python_backend_stub" \
  "$OUT"/python_backend_stubs/*/triton_python_backend_stub

cat >"$OUT/run-tritonserver" <<'EOF'
#!/usr/bin/env bash
# Run the vidscan-installed tritonserver with the environment its python backend needs;
# arguments are passed on (e.g. --model-repository=models). Written by install-triton.sh.
#   VIDSCAN_TRITON_PYENV     python env whose bin/python3 goes first on PATH (default: the
#                            pyenv/ venv next to this file). The stub embeds CPython and
#                            ignores PYTHONPATH; it derives sys.prefix from `python3` on
#                            PATH, so model.py files import numpy/onnxruntime from that env.
#   VIDSCAN_TRITON_PYLIBDIR  dir holding libpython3.X.so.1.0 of the SAME CPython build as
#                            that env (put first on LD_LIBRARY_PATH for the stub).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${VIDSCAN_TRITON_PYENV:=${HERE}/pyenv}"
EOF
printf ': "${VIDSCAN_TRITON_PYLIBDIR:=%s}"\n' "$PY_LIBDIR" >>"$OUT/run-tritonserver"
cat >>"$OUT/run-tritonserver" <<'EOF'
export LD_LIBRARY_PATH="${VIDSCAN_TRITON_PYLIBDIR}:${HERE}/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
export PATH="${VIDSCAN_TRITON_PYENV}/bin:${PATH}"
exec "${HERE}/bin/tritonserver" --backend-directory="${HERE}/backends" \
  --cache-directory="${HERE}/caches" "$@"
EOF
chmod 0755 "$OUT/run-tritonserver"

# Smoke checks: every library resolves, the stub gets PYTHON's libpython, the server runs.
if command -v ldd >/dev/null; then
  deps="$(LD_LIBRARY_PATH="${PY_LIBDIR}:${OUT}/lib" ldd "$OUT/bin/tritonserver" \
    "$OUT/backends/python/triton_python_backend_stub" "$OUT/backends/python/libtriton_python.so")"
  [[ "$deps" != *"not found"* ]] || die "unresolved libraries: $(grep 'not found' <<<"$deps")"
  [[ "$deps" == *"${PY_LIBDIR}/${PY_SONAME}"* ]] || die "stub does not resolve ${PY_LIBDIR}/${PY_SONAME}"
fi
usage="$("$OUT/bin/tritonserver" --help 2>&1 || true)"  # --help exits 1 by design
[[ "$usage" == *"Usage: tritonserver"* ]] || die "tritonserver does not run: ${usage:0:500}"

rm -rf "${DEST}.old"
if [[ -e "$DEST" ]]; then mv "$DEST" "${DEST}.old"; fi
mv "$OUT" "$DEST"
rm -rf "${DEST}.old"

# ---- 3. model env (created in place: venvs are not relocatable) ---------------------
log "creating model env ${DEST}/pyenv with: ${BACKEND_PACKAGES}"
"$PY_BASE" -m venv "${DEST}/pyenv"
# shellcheck disable=SC2086  # BACKEND_PACKAGES is a list of requirement specifiers
"${DEST}/pyenv/bin/python" -m pip install --quiet --disable-pip-version-check $BACKEND_PACKAGES >&2 \
  || die "pip install ${BACKEND_PACKAGES} into ${DEST}/pyenv failed"
"${DEST}/pyenv/bin/python" -c 'import numpy, onnxruntime
assert int(numpy.__version__.split(".")[0]) < 2, "the python backend stub needs numpy<2, got " + numpy.__version__' \
  || die "model env check failed"

echo "$STAMP" >"${DEST}/INSTALL_STAMP"
log "installed into ${DEST} ($(du -sh "$DEST" | cut -f1)): ${STAMP}"
echo "$DEST"
