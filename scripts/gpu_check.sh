#!/usr/bin/env bash
# The prepared GPU check: on a machine with one NVIDIA GPU (sized for an H100: under 8 minutes in
# all), run what only a GPU can tell, and write the figures as JSON and a markdown table.
#
#   bash scripts/gpu_check.sh [--device cuda|cpu] [--out DIR]     (defaults: cuda, out/gpu_check)
#
# Parts, each under its own time limit in seconds (with cuda; 300 each with cpu, for slow CI
# machines), each writing its log to DIR/<part>.log:
#   tests      (170)       the suite's device-parametrised tests on that device, but the slow ones
#                          (`pytest --device cuda`: the tests taking the `device` fixture and the
#                          CUDA-only `test_cuda_*` ones; tests/test_devices.py alone with cpu)
#   attention  (80)        benchmarks/attention.py: Grassmann attention against torch SDPA at long
#                          sequences (time and peak memory)
#   sequence   (50)        benchmarks/sequence.py: causal SDPA against BDH's linear attention, the
#                          delta rule and FAVOR+ (forward+backward time and memory against length)
#   karcher    (40)        benchmarks/karcher_mean.py: the batched Karcher mean on the Grassmannian
#   tokens     (60)        benchmarks/tokens_per_second.py: BDH and GPT training and decoding
#                          tokens per second
#   grassmann  (25)        benchmarks/grassmann_layers.py: forward/backward of the GrNet block
#                          (FRMap, ReOrth, ProjMap, ProjPooling, OrthMap) against a plain peer
#   sync       (40)        scripts/gpu_check.py sync: forwards of the main layers and models under
#                          torch.cuda.set_sync_debug_mode("error") (validate=False where a module
#                          has it); with cpu the same forwards run unchecked
# then DIR/gpu_check.json (every part's status and figures) and DIR/gpu_check.md (the tables).
# The limits add up to 465 s, so a run ends within 8 minutes even when every part times out.
# `--device cpu` runs everything with tiny sizes in about a minute on an idle machine with two
# cores: the smoke test of this script (tests/test_gpu_check.py). Only device 0 is used; nothing
# assumes a second GPU.
#
# Exit status: 0 when every part passed; 1 when a test failed, a part timed out or failed, or a
# forward synchronised the host where it should not; 2 for a usage error or no CUDA device.
# Python: $PYTHON, else the repository's .venv, else python3; this checkout's manifoldnn is used.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
OUT=out/gpu_check
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=${2:-}; shift 2 ;;
        --device=*) DEVICE=${1#*=}; shift ;;
        --out) OUT=${2:-}; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (usage: --device cuda|cpu --out DIR)" >&2; exit 2 ;;
    esac
done
if [ "$DEVICE" != cuda ] && [ "$DEVICE" != cpu ]; then
    echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2
    exit 2
fi
if [ -z "$OUT" ]; then
    echo "gpu_check.sh: --out needs a directory" >&2
    exit 2
fi

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}

if [ "$DEVICE" = cuda ] && ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check.sh: --device cuda, but torch.cuda.is_available() is False ($PYTHON)" >&2
    exit 2
fi

mkdir -p "$OUT"
rm -f "$OUT"/parts.tsv "$OUT"/tests.xml "$OUT"/bench_*.json "$OUT"/sync.json "$OUT"/*.log
printf '{"device": "%s"}\n' "$DEVICE" > "$OUT/environment.json"
FAILED=0

# part NAME LIMIT_S COMMAND...: run COMMAND under LIMIT_S seconds, log to $OUT/NAME.log, record
# "NAME<TAB>status<TAB>seconds<TAB>limit" in $OUT/parts.tsv.
part() {
    local name=$1 limit=$2 start end rc status
    shift 2
    echo "gpu_check: $name (at most ${limit} s) ..." >&2
    start=$(date +%s.%N)
    timeout --kill-after=5 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    case $rc in
        0) status=passed ;;
        124|137) status=timeout ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" \
        "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')" "$limit" \
        >> "$OUT/parts.tsv"
    if [ $rc -ne 0 ]; then
        FAILED=1
        echo "gpu_check: $name $status; last lines of $OUT/$name.log:" >&2
        tail -n 15 "$OUT/$name.log" >&2
    fi
}

if [ "$DEVICE" = cuda ]; then
    # the slow-marked tests (compiles of the chunked paths, long gradchecks) stay on the CPU CI run
    part tests 170 "$PYTHON" -m pytest -q -p no:cacheprovider --device cuda -m "not slow" \
        --continue-on-collection-errors --junitxml "$OUT/tests.xml" tests
    part attention 80 "$PYTHON" benchmarks/attention.py --device cuda \
        --lengths 1024 32768 --geodesic-max 1024 --repeats 3 --json "$OUT/bench_attention.json"
    part sequence 50 "$PYTHON" benchmarks/sequence.py --device cuda \
        --lengths 4096 16384 65536 --repeats 2 --max-seconds 5 --json "$OUT/bench_sequence.json"
    part karcher 40 "$PYTHON" benchmarks/karcher_mean.py --device cuda --sets 512 --points 50 \
        --repeats 3 --skip pymanopt geomstats geomstats-default --json "$OUT/bench_karcher.json"
    part tokens 60 "$PYTHON" benchmarks/tokens_per_second.py --device cuda --batch 8 \
        --context 512 --steps 5 --gen-context 1024 --gen-tokens 64 --chunk-size 64 \
        --bdh-layers 4 --bdh-dim 128 --bdh-heads 4 --bdh-neurons 1024 \
        --gpt-layers 4 --gpt-dim 128 --gpt-heads 4 --json "$OUT/bench_tokens.json"
    part grassmann 25 "$PYTHON" benchmarks/grassmann_layers.py --device cuda --batch 256 \
        --repeats 3 --inner 10 --json "$OUT/bench_grassmann.json"
    part sync 40 "$PYTHON" scripts/gpu_check.py sync --device cuda --json "$OUT/sync.json"
else
    part tests 300 "$PYTHON" -m pytest -q -p no:cacheprovider --device cpu \
        --junitxml "$OUT/tests.xml" tests/test_devices.py
    part attention 300 "$PYTHON" benchmarks/attention.py --device cpu \
        --lengths 64 --geodesic-max 64 --repeats 1 --no-memory --json "$OUT/bench_attention.json"
    part sequence 300 "$PYTHON" benchmarks/sequence.py --device cpu --lengths 64 128 --repeats 1 \
        --heads 2 --dim 8 --bdh-neurons 8 --favor-features 8 --chunk-size 32 \
        --json "$OUT/bench_sequence.json"
    part karcher 300 "$PYTHON" benchmarks/karcher_mean.py --device cpu --sets 2 --points 5 \
        --repeats 1 --skip pymanopt geomstats geomstats-default --json "$OUT/bench_karcher.json"
    part tokens 300 "$PYTHON" benchmarks/tokens_per_second.py --device cpu --repeats 1 \
        --steps 1 --gen-tokens 4 --json "$OUT/bench_tokens.json"
    part grassmann 300 "$PYTHON" benchmarks/grassmann_layers.py --device cpu --batch 4 \
        --repeats 1 --inner 1 --json "$OUT/bench_grassmann.json"
    part sync 300 "$PYTHON" scripts/gpu_check.py sync --device cpu --json "$OUT/sync.json"
fi

if ! "$PYTHON" scripts/gpu_check.py report --out "$OUT"; then
    echo "gpu_check: the report could not be written" >&2
    FAILED=1
fi
echo "gpu_check: $OUT/gpu_check.md and $OUT/gpu_check.json" >&2
column -t -s "$(printf '\t')" "$OUT/parts.tsv" >&2 2>/dev/null || cat "$OUT/parts.tsv" >&2
exit $FAILED
