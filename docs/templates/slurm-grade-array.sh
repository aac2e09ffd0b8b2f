#!/usr/bin/env bash
# Grade a class on a Slurm cluster: one submission per array task, on one GPU each.
#
#   N=$(ls -1 SUBMISSIONS | wc -l)
#   sbatch --array=0-$((N-1))%16 docs/templates/slurm-grade-array.sh SUBMISSIONS OUT
#   # when all tasks are done, the gradebook (resume skips everyone already graded):
#   python -m autograder grade-all SUBMISSIONS --out OUT
#
# Each task grades the submission (folder or .zip) at index $SLURM_ARRAY_TASK_ID of the sorted
# listing into OUT/<student>/, with the same CLI as everywhere else.
#SBATCH --job-name=llmsys-grade
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=01:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
SUBMISSIONS=${1:?usage: slurm-grade-array.sh SUBMISSIONS_DIR OUT_DIR}
OUT=${2:?usage: slurm-grade-array.sh SUBMISSIONS_DIR OUT_DIR}
COURSE=${COURSE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PY=${PY:-python3}
mapfile -t ENTRIES < <(find "$SUBMISSIONS" -mindepth 1 -maxdepth 1 \( -type d -o -name '*.zip' \) ! -name '.*' | sort)
ENTRY=${ENTRIES[${SLURM_ARRAY_TASK_ID:?not inside a Slurm array job}]}
STUDENT=$(basename "$ENTRY" .zip)
cd "$COURSE"
exec "$PY" -m autograder grade --impl "$ENTRY" --out "$OUT/$STUDENT" -q --brief ${ASSIGNMENTS:-}
