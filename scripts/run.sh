#!/usr/bin/env bash
# The main job: install, migrate, import a dataset (the folder given, or a small generated
# sample with injected noise), then serve the review app with a Celery worker beside it.
# Usage: scripts/run.sh [DATASET_FOLDER]
# Embedded default: SQLite and a filesystem broker under var/. Set DATABASE_URL and
# CELERY_BROKER_URL (postgres://..., redis://...) to use Postgres and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export DEBUG=${DEBUG:-1}
PY=.venv/bin/python
PORT=${PORT:-8000}
mkdir -p var

$PY manage.py migrate --noinput
$PY manage.py ensure_admin

if [ $# -ge 1 ]; then
  folder=$(cd "$1" && pwd)
  $PY manage.py import_dataset "$folder" --format folder --name "$(basename "$folder")"
else
  if [ ! -f var/sample/noisy/train.lst ]; then
    $PY -m ml.sample --out var/sample
    $PY -m ml.synthetic_noise --root var/sample/images --identities var/sample/identities.txt \
      --pool var/sample/pool.txt \
      --closed 0.15 --open 0.05 --split 2 --seed 0 --out var/sample/noisy
  fi
  $PY manage.py import_dataset var/sample/noisy/train.lst --format list \
    --root var/sample/images --name sample
fi

# Two workers: imports and exports beside a long round, and the round in a solo pool whose
# process may start DataLoader workers (a prefork child is a daemon and may not). Each runs the
# periodic recovery sweep itself (reviewapp.tasks, every RECOVERY_SWEEP_SECONDS): no beat to start.
.venv/bin/celery -A config worker --loglevel INFO --concurrency 1 -Q default -n "default@%h" &
default_worker=$!
.venv/bin/celery -A config worker --loglevel INFO --pool solo -Q rounds -n "rounds@%h" &
rounds_worker=$!
trap 'kill $default_worker $rounds_worker 2>/dev/null || true' EXIT INT TERM

# A first round so that there is something to review: it runs in the worker while the app
# is already up (its page shows the progress). By default the host's: the pretrained
# descriptor without a GPU (minutes on 2 cores), the GPU training preset with one. The
# generated sample is drawn faces, which a descriptor made for photographs misjudges (on it,
# 55 of 84 noisy flags on truly noisy faces, 27 with the right relabel target; a cross-fitted
# RobustFace round: 90 of 93, 62, in 84 s on 2 cores): its first round trains. FACECLEAN_FIRST_ROUND=<method> chooses another, =none skips it.
if [ $# -ge 1 ]; then
  host_default=$($PY manage.py shell --no-imports -c \
    "from reviewapp.services.round_data import default_round_method; print(default_round_method())")
else
  host_default=robustface
fi
first_round=${FACECLEAN_FIRST_ROUND:-$host_default}
dataset_name=$([ $# -ge 1 ] && basename "$folder" || echo sample)
# The name travels in the environment, not in the code string: folder names are untrusted.
if [ "$first_round" != none ] && ! DATASET_NAME="$dataset_name" $PY manage.py shell -c "
import os, sys; from reviewapp.models import Round
sys.exit(0 if Round.objects.filter(dataset__name=os.environ['DATASET_NAME']).exists() else 1)" 2>/dev/null; then
  $PY manage.py run_round --dataset "$dataset_name" --method "$first_round" || true
fi
echo "FaceClean: http://127.0.0.1:$PORT/  (admin password in var/admin-password.txt)"
$PY manage.py runserver "127.0.0.1:$PORT"
