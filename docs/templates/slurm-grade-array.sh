#!/usr/bin/env bash
# Grade a class on a Slurm cluster: one submission per array task, on one GPU each.
#
#   N=$(ls -1 SUBMISSIONS | wc -l)
#   sbatch --array=0-$((N-1))%16 docs/templates/slurm-grade-array.sh SUBMISSIONS OUT
#   # when all tasks are done, the gradebook (it skips everyone a task graded and recorded, and
#   # grades whoever is missing; pass the same ASSIGNMENTS as the tasks had):
#   python -m autograder grade-all SUBMISSIONS ${ASSIGNMENTS:-} --out OUT
#
# Each task grades the submission (folder or .zip) at index $SLURM_ARRAY_TASK_ID of the sorted
# listing into OUT/<student>/ with grade-all, over a folder that holds just that submission, so
# that grade-all itself records the result (OUT/.grade-all/ledger/<student>.json): a resumed
# grade-all trusts only such records. OUT must be on a file system every task can write; each
# task's OUT/gradebook.csv is partial until the final grade-all above rewrites it.
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
SUBMISSIONS=$(cd "$SUBMISSIONS" && pwd)
mapfile -t ENTRIES < <(find "$SUBMISSIONS" -mindepth 1 -maxdepth 1 \( -type d -o -name '*.zip' \) ! -name '.*' | sort)
ENTRY=${ENTRIES[${SLURM_ARRAY_TASK_ID:?not inside a Slurm array job}]}
ONE=$(mktemp -d "${TMPDIR:-/tmp}/grade-task-XXXXXX")
trap 'rm -rf "$ONE"' EXIT
ln -s "$ENTRY" "$ONE/"
cd "$COURSE"
"$PY" -m autograder grade-all "$ONE" ${ASSIGNMENTS:-} --out "$OUT" --jobs 1
