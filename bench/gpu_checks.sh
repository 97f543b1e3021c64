#!/usr/bin/env bash
# The checks a lent GPU machine runs in one call: the `-m gpu` tests, both families' training-step and generation
# benchmarks against transformers (small shape fp32 and bf16, base shape bf16), and the default task trained through
# train.py on the GPU for each family. Each part prints its last lines; all parts' whole logs are in
# $OUT/gpu_checks.log (or ./gpu_logs/); a part that fails does not stop the others, and the script's exit status says
# whether any failed.
#
#   bash bench/gpu_checks.sh            # from the repository root, on a machine with CUDA
#
# Where the machine's Python lacks some of the package's dependencies (hydra-core, omegaconf, rouge-score, ...),
# put their wheels in .whl/ first: they are installed into /tmp/site, not into the machine's environment.
set -u
out=${OUT:-gpu_logs}
logs=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
failed=()
part() {  # part NAME COMMAND...: run it, log it, remember a failure
    local name=$1; shift
    echo "=== $name: $*"
    local start=$SECONDS
    "$@" >"$logs/$name.log" 2>&1
    local rc=$?
    { echo "=== $name: $*"; cat "$logs/$name.log"; } >>"$out/gpu_checks.log"
    tail -n 12 "$logs/$name.log"
    echo "=== $name: rc=$rc in $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed+=("$name")
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, lightning
print('torch', torch.__version__, 'transformers', transformers.__version__, 'lightning', lightning.__version__)"

part gpu-tests python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider
for family in pegasus_x led; do
    part "step-$family-bf16" python3 bench/bench_model.py --family "$family" --device cuda --dtype bf16 \
        --lengths 2048 16384 --repeats 10
    part "step-$family-fp32" python3 bench/bench_model.py --family "$family" --device cuda --dtype fp32 \
        --lengths 2048 16384 --repeats 10 --no-memory
    part "step-$family-base-bf16" python3 bench/bench_model.py --family "$family" --shape base --device cuda \
        --dtype bf16 --lengths 16384 --repeats 5
    part "generate-$family" python3 bench/bench_generate.py --family "$family" --device cuda --repeats 5
done
for model in pegasus_x_tiny tiny; do
    part "train-$model" python3 train.py model="$model" trainer=gpu trainer.max_steps=1000 \
        trainer.val_check_interval=1000 trainer.enable_progress_bar=false hydra.run.dir="$logs/run-$model"
done
echo "failed parts: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
