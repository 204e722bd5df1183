#!/usr/bin/env bash
# A CPU-only SGLang server environment: the TEST HARNESS of the engine tier (tests/engine, `make test-sglang`) on
# machines without a GPU. Never for a GPU machine: there, install sglang==0.5.23 with its own CUDA requirements.
#
#   tools/sglang_cpu/build_env.sh [VENV]        (default .venv-sglang; pip's cache makes a rebuild fast)
#
# sglang 0.5.23 goes in with --no-deps beside torch 2.13.0 (CPU) and the dependencies a CPU server imports
# (requirements-cpu.txt). Two things no CPU wheel provides are stood in for, both named for what they are:
#   sgl_kernel_stub/     a `sgl_kernel` module that imports and raises when called (sgl-kernel has no CPU build here)
#   patch_torchvision.py a guard on two fake-op registrations of the CUDA-built torchvision wheel
# The server then runs with SGLANG_USE_CPU_ENGINE=1 and --device cpu --attention-backend torch_native
# --sampling-backend pytorch --disable-overlap-schedule --sleep-on-idle (tests/engine/conftest.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${1:-.venv-sglang}"
python="${PYTHON:-python3}"
stamp="$venv/.built"
want="$(cat "$here/build_env.sh" "$here/requirements-cpu.txt" "$here/patch_torchvision.py" \
        "$here/sgl_kernel_stub/sgl_kernel/__init__.py" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$venv: up to date"; exit 0
fi
test -x "$venv/bin/python" || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q)
echo "$venv: torch 2.13.0 (CPU), sglang 0.5.23 (--no-deps), its CPU dependencies"
"${pip[@]}" --upgrade pip
"${pip[@]}" torch==2.13.0
"${pip[@]}" --no-deps sglang==0.5.23
constraints="$(mktemp)"; echo "torch==2.13.0" > "$constraints"
"${pip[@]}" -c "$constraints" -r "$here/requirements-cpu.txt"
rm -f "$constraints"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$site/sgl_kernel"
cp -r "$here/sgl_kernel_stub/sgl_kernel" "$site/sgl_kernel"
"$venv/bin/python" "$here/patch_torchvision.py"
"$venv/bin/python" -c "import sglang.launch_server, sglang; print('sglang', sglang.__version__, 'imports')"
echo "$want" > "$stamp"
