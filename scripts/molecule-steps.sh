#!/usr/bin/env bash
# The time each molecule step took, for the time `make test` takes.
#   molecule ... | scripts/molecule-steps.sh stamp   # each line prefixed "[<epoch>] "
#   scripts/molecule-steps.sh sum LOG                 # "converge 212s, idempotence 140s, ..."
# A step runs from its "➜ <step>: Executing" line to the next step's (the last one to
# the log's last line), so a step molecule runs twice (destroy) is listed twice.
set -euo pipefail
case "${1:-}" in
  stamp) exec mawk -W interactive '{ print "[" strftime("%s") "] " $0; fflush() }' ;;
  sum)
    sed 's/\x1b\[[0-9;]*m//g' "$2" | mawk '
      /^\[[0-9]+\] / { t = substr($1, 2, length($1) - 2) + 0; last = t }
      / ➜ [a-z_]+: Executing$/ {
        step = $0; sub(/.* ➜ /, "", step); sub(/:.*/, "", step)
        if (name != "") out = out sep name " " (t - start) "s"
        if (name != "") sep = ", "
        name = step; start = t
      }
      END { if (name != "") out = out sep name " " (last - start) "s"; print out }'
    ;;
  *) echo "usage: $0 stamp | sum LOG" >&2; exit 2 ;;
esac
