#!/usr/bin/env bash
# Train the four Palette tasks side by side on one GPU for a fixed wall time each, then evaluate every model
# on the test split with two samplers (DDIM 50 steps on the training schedule; ancestral DDPM 100 steps on
# linear 1e-3..0.2). Results: <out>/runs/<task>/model*.pt, <out>/eval/<task>_<sampler>/metrics.json + figure.png.
#
# usage: bash benchmarks/palette_tasks.sh OUT_DIR [SECONDS_PER_TASK] [TASK...]
# (run from the repository root with medseg importable; GPU strongly advised, the CPU works but slowly).
# TRAIN_ARGS: extra overrides for train.json (e.g. "--batch_size 64 --drop_last True").
# EVAL_ARGS: extra overrides for evaluate.json (e.g. "--max_images 2 --steps 2" for a smoke run).
set -euo pipefail
out=${1:?output folder}
seconds=${2:-300}
tasks=("${@:3}")
[ ${#tasks[@]} -gt 0 ] || tasks=(inpainting uncropping jpeg colorization)
train_args=${TRAIN_ARGS:-}
eval_args=${EVAL_ARGS:-}
bundle=bundles/palette
mkdir -p "$out/runs" "$out/eval" "$out/logs"

for task in "${tasks[@]}"; do
  python -m monai.bundle run --config_file "['$bundle/configs/common.json','$bundle/configs/train.json']" --bundle_root $bundle \
    --logging_file $bundle/configs/logging.conf --task "$task" --output_dir "$out/runs/$task" \
    --batch_size 32 --ema_decay 0.999 --max_epochs 1000000 --time_limit "$seconds" \
    --val_interval 500 --save_interval 500 --num_workers 3 $train_args >"$out/logs/train_$task.log" 2>&1 &
done
wait

for task in "${tasks[@]}"; do
  ckpt=$(ls "$out/runs/$task"/model*.pt | head -1)
  python -m monai.bundle run --config_file "['$bundle/configs/common.json','$bundle/configs/inference.json','$bundle/configs/evaluate.json']" --bundle_root $bundle --task "$task" \
    --ckpt_path "$ckpt" --output_dir "$out/eval/${task}_ddim50" $eval_args >"$out/logs/eval_${task}_ddim50.log" 2>&1 &
  python -m monai.bundle run --config_file "['$bundle/configs/common.json','$bundle/configs/inference.json','$bundle/configs/evaluate.json']" --bundle_root $bundle --task "$task" \
    --ckpt_path "$ckpt" --output_dir "$out/eval/${task}_ddpm100" --sampler ddpm --sampling_timesteps 100 \
    --sampling_beta_start 0.001 --sampling_beta_end 0.2 --steps 100 $eval_args \
    >"$out/logs/eval_${task}_ddpm100.log" 2>&1 &
done
wait
grep -h "iteration\|time limit" "$out"/logs/train_*.log | grep -i "limit" || true
