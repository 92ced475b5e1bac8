#!/usr/bin/env bash
# The GPU check of issue 13 as one script that fits in about 10 minutes of one GPU:
#   1. parity: every selective-scan backend (Triton, PyTorch, mamba_ssm where it imports) against the float64
#      reference on CUDA, and an MSV-Mamba network under fp16 autocast on each backend (benchmarks/gpu_parity.py);
#   2. benchmarks/bench_selective_scan.py --device cuda: Triton vs the PyTorch scan vs mamba_ssm's fused kernel;
#   3. nnU-Net end to end on the GPU: a tiny synthetic dataset, nnUNetv2_plan_and_preprocess, nnUNetv2_train
#      -tr nnUNetTrainerMSVMamba_Debug, nnUNetv2_predict; which scan backend ran;
#   4. benchmarks/bench_network.py --devices cuda: training step under AMP and inference of MSV-Mamba (default and
#      every-stage LMS placement) against stock ResEnc-M from the same plans;
#   5. the same with every network torch.compile'd, as nnU-Net does on CUDA (the trainer's compile default);
#   6. benchmarks/bench_video.py --devices cuda: whole echo loops per frame (nnU-Net's predict_single_npy_array)
#      against the batched path and the batched forward alone, EchoNet-Dynamic's TEST split projected (issue 20).
# Each step has its own time limit (seconds, below; override with GPU_CHECK_LIMITS="60 100 120 100 100 120"), so a
# slow or hanging step costs at most its share. Logs and a summary (gpu_check_summary.txt, with the GPU's name)
# go to $OUT (the device tool's folder), else ./gpu_check_out.
#
# The GPU machine has PyTorch, Triton and numpy but no nnU-Net, and nothing there can reach a package registry,
# so nnU-Net travels as wheels, in two folders because SimpleITK alone is 51 MiB of the 64 MiB a call carries:
#   here, once:   bash benchmarks/gpu_check.sh --download-wheels      # fills .whl-sitk/ and .whl/ (git-ignored)
#   device call 1 (carry [".whl-sitk"]):  bash benchmarks/gpu_check.sh --install-only
#   device call 2 (carry [".whl"]), at once, while the machine is still warm:  bash benchmarks/gpu_check.sh
# Both install into /tmp/site (PYTHONPATH); the package itself runs from this checkout.
# Dry run on a CPU (Triton's interpreter, tiny settings; no GPU figures):
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --device cpu
set -uo pipefail

REPOSITORY="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPOSITORY"
PYTHON="${PYTHON:-python3}"
DEVICE=cuda
MODE=check
for argument in "$@"; do
    case "$argument" in
        --download-wheels) MODE=download ;;
        --install-only) MODE=install ;;
        --device) ;;
        cpu|cuda) DEVICE="$argument" ;;
        --device=*) DEVICE="${argument#--device=}" ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: $0: unknown argument '$argument' (see --help)" >&2; exit 2 ;;
    esac
done

# nnU-Net 2.8.1 and what it imports that the GPU machine lacks, for its Python 3.12 (acvl-utils has no wheel on
# the index: built here from its sdist, pure Python)
WHEELS="nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6
blosc2==4.14.1 ndindex==1.10.1 numexpr==2.14.2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
typing-inspection==0.4.5 nibabel==5.4.2 connected-components-3d==4.1.1 yacs==0.1.8 graphviz==0.21"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"

download_wheels() {
    local download="$PYTHON -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp"
    mkdir -p .whl .whl-sitk
    # shellcheck disable=SC2086
    $download $PLATFORMS -d .whl-sitk SimpleITK==2.5.7 &&
        $download $PLATFORMS -d .whl $WHEELS &&
        "$PYTHON" -m pip wheel --no-deps -w .whl acvl-utils==0.2.6 || {
            echo "error: pip: could not fetch the wheels" >&2; exit 2; }
    for folder in .whl-sitk .whl; do
        grep -qx "/$folder/" .git/info/exclude 2>/dev/null || echo "/$folder/" >> .git/info/exclude
    done
    du -sh .whl-sitk .whl
}

install_wheels() {  # $1: folder of wheels
    compgen -G "$1/*.whl" > /dev/null || return 0
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$1"/*.whl || { echo "error: $1: the wheels did not install" >&2; exit 2; }
}

if [ "$MODE" = download ]; then download_wheels; exit 0; fi
if [ "$DEVICE" = cuda ]; then
    export PYTHONPATH="/tmp/site:$REPOSITORY${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
    install_wheels .whl-sitk
    if [ "$MODE" = install ]; then echo "installed into /tmp/site: $(ls /tmp/site | tr '\n' ' ')"; exit 0; fi
    install_wheels .whl
    "$PYTHON" -c "import SimpleITK, nnunetv2" || {
        echo "error: /tmp/site: nnU-Net does not import; run --install-only with .whl-sitk, then this with .whl" \
             "while the machine is warm (see --help)" >&2; exit 2; }
else
    export PATH="$(dirname "$PYTHON"):$PATH" TRITON_INTERPRET=1
fi

OUT_DIR="${OUT:-$REPOSITORY/gpu_check_out}"
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/gpu_check_summary.txt"
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
read -r -a LIMITS <<< "${GPU_CHECK_LIMITS:-60 100 120 100 100 120}"
export PYTHONUNBUFFERED=1

{
    echo "gpu_check.sh on $(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE"
    if [ "$DEVICE" = cuda ] && command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/GPU: /'
    fi
    "$PYTHON" -c "import sys, torch; import importlib.util as u
t = __import__('triton').__version__ if u.find_spec('triton') else 'none'
print(f'python {sys.version.split()[0]}, torch {torch.__version__}, triton {t}, CUDA {torch.version.cuda}')"
} | tee "$SUMMARY"

run_step() {  # $1 number, $2 name, $3 limit (s), then the command
    local number="$1" name="$2" limit="$3"; shift 3
    local log="$OUT_DIR/${number}_${name}.log" start=$SECONDS status
    echo "== step $number: $name (limit ${limit} s): $*" | tee -a "$SUMMARY"
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    status=$?
    local verdict="ok"
    [ "$status" -eq 124 ] || [ "$status" -eq 137 ] && verdict="TIMED OUT"
    [ "$status" -ne 0 ] && [ "$verdict" = ok ] && verdict="FAILED (status $status)"
    echo "   $verdict in $((SECONDS - start)) s; log: $(basename "$log")" | tee -a "$SUMMARY"
    # the figures and verdicts, as the step printed them
    grep -E "PASS|FAIL|n/a|not measured|selective scan backend|^target|^(cpu|cuda) \(|^ +(parameters|train step|inference|peak memory)|^ *[0-9]+x[0-9]+x[0-9]+ |Dice|s/frame|EchoNet-Dynamic TEST|^error" \
        "$log" | grep -v "%|" | sed 's/^/   | /' >> "$SUMMARY"
}

end_to_end() {  # a tiny dataset through nnU-Net's own commands on $DEVICE
    local size=96 train=8
    [ "$DEVICE" = cpu ] && size=48 train=6  # nnU-Net splits 5 folds: at least 5 cases
    export nnUNet_raw="$WORK/raw" nnUNet_preprocessed="$WORK/preprocessed" nnUNet_results="$WORK/results"
    export nnUNet_extTrainer="$REPOSITORY/nnunetv2_msvmamba/training/ext_trainers"
    mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
    "$PYTHON" -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path
from helpers.toy_datasets import write_toy_dataset
print(write_toy_dataset(Path('$nnUNet_raw'), 901, ($size, $size), n_train=$train, n_test=2))" &&
    nnUNetv2_plan_and_preprocess -d 901 -c 2d -np 2 -npfp 2 &&
    nnUNetv2_train 901 2d 0 -tr nnUNetTrainerMSVMamba_Debug -device "$DEVICE" &&
    nnUNetv2_predict -i "$nnUNet_raw/Dataset901_Toy2D/imagesTs" -o "$WORK/predicted" -d 901 -c 2d \
        -tr nnUNetTrainerMSVMamba_Debug -f 0 -device "$DEVICE" --disable_progress_bar &&
    "$PYTHON" - "$WORK/predicted" "$nnUNet_raw/Dataset901_Toy2D/labelsTs" <<'EOF'
import sys
from pathlib import Path
import numpy as np
import SimpleITK as sitk
predicted, truth = Path(sys.argv[1]), Path(sys.argv[2])
references = sorted(truth.glob("*.nii.gz"))
assert references and all((predicted / r.name).exists() for r in references), "a prediction is missing"
for reference in references:
    p, t = (sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in (predicted / reference.name, reference))
    dice = 2 * ((p > 0) & (t > 0)).sum() / max((p > 0).sum() + (t > 0).sum(), 1)
    print(f"{reference.name}: predicted labels {sorted(np.unique(p).tolist())}, foreground Dice {dice:.3f} "
          f"(2 epochs of 2 iterations: a smoke test of the pipeline, not of learning)")
EOF
}

export -f end_to_end  # `timeout` runs it in a child bash
export DEVICE PYTHON WORK REPOSITORY
if [ "$DEVICE" = cuda ]; then
    run_step 1 parity "${LIMITS[0]}" "$PYTHON" benchmarks/gpu_parity.py --device cuda
    run_step 2 bench_selective_scan "${LIMITS[1]}" "$PYTHON" benchmarks/bench_selective_scan.py --device cuda --repeats 3
    run_step 3 nnunet_end_to_end "${LIMITS[2]}" bash -c end_to_end
    run_step 4 bench_network "${LIMITS[3]}" "$PYTHON" benchmarks/bench_network.py --devices cuda --repeats 3 --warmup 1
    run_step 5 bench_network_compiled "${LIMITS[4]}" "$PYTHON" benchmarks/bench_network.py --devices cuda --compile \
        --placements default --repeats 3 --warmup 2
    run_step 6 bench_video "${LIMITS[5]}" "$PYTHON" benchmarks/bench_video.py --devices cuda --rounds 3 --warmup 1
else
    run_step 1 parity "$((LIMITS[0] * 4))" "$PYTHON" benchmarks/gpu_parity.py --device cpu --quick
    run_step 2 bench_selective_scan "${LIMITS[1]}" "$PYTHON" benchmarks/bench_selective_scan.py --device cpu --quick \
        --repeats 1 --implementations triton torch
    run_step 3 nnunet_end_to_end "$((LIMITS[2] * 5))" bash -c end_to_end
    run_step 4 bench_network "$((LIMITS[3] * 2))" "$PYTHON" benchmarks/bench_network.py --devices cpu --quick \
        --placements default
    # step 5 is GPU only: Inductor takes ~10 minutes for the two networks on a 2-core CPU; the compiled path on the
    # CPU is covered by tests/unit/ssm/test_custom_op.py
    echo "== step 5: bench_network_compiled: GPU only" | tee -a "$SUMMARY"
    run_step 6 bench_video "$((LIMITS[5] * 5))" "$PYTHON" benchmarks/bench_video.py --devices cpu --quick
fi
cp -f "$WORK"/results/Dataset901_Toy2D/*/fold_0/training_log_*.txt "$OUT_DIR/" 2>/dev/null
rm -rf "$WORK"
echo "summary: $SUMMARY"
cat "$SUMMARY"
