#!/usr/bin/env bash
# Several GPU nodes under SLURM: one process per node, all joined by jax.distributed (JAX
# reads the SLURM environment: coordinator = first node, process id = SLURM_PROCID), one
# global mesh over every GPU. Submit with sbatch; edit the #SBATCH lines for your cluster.
#
#   MODEL=llama-3.1-8b-instruct WEIGHTS=/shared/Llama-3.1-8B-Instruct CENTERS=/shared/centers \
#   PROMPTS=/shared/prompts.jsonl OUT=/shared/traces/llama sbatch tpu/gpu/slurm-trace.sh
#
# WEIGHTS, CENTERS and PROMPTS must be readable on every node (shared file system); OUT may
# be shared or gs://. Resubmitting the same job resumes.
#SBATCH --job-name=sri-jax-trace
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --time=24:00:00
#SBATCH --output=sri-trace-%j.log
set -euo pipefail
repo="${SLURM_SUBMIT_DIR:-$(pwd)}"
venv="${VENV:-$repo/.venv-gpu}"
: "${MODEL:?set MODEL}" "${WEIGHTS:?set WEIGHTS}" "${CENTERS:?set CENTERS}"
: "${PROMPTS:?set PROMPTS}" "${OUT:?set OUT}"
nodes="${SLURM_JOB_NUM_NODES:-1}"
gpus="${SLURM_GPUS_PER_NODE:-8}"
# Default: tensor parallel inside a node only if asked; data parallel over everything else.
mesh_model="${MESH_MODEL:-1}"
batch="${BATCH:-$((256 * nodes * gpus / mesh_model))}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"

srun --kill-on-bad-exit=1 "$venv/bin/sri-jax" trace --distributed \
  --mesh-data -1 --mesh-model "$mesh_model" --batch-size "$batch" \
  --model "$WEIGHTS" --dtype bfloat16 --centers "$CENTERS" --prompts "$PROMPTS" \
  --out "$OUT" --no-progress
