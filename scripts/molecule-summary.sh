#!/bin/bash
# Print what failed in a molecule log, so the end of a long CI log names the failing
# test and its assertion (molecule's own recap only says "Verifier tests failed").
set -u
log=$1
echo "==== what failed in $log"
sed 's/\x1b\[[0-9;]*m//g; s/^\[[0-9]*\] //; s/^ *│ //' "$log" \
  | grep -E '^(FAILED|ERROR) [^-]|^E  |^>  |fatal: \[|failed: \[|short test summary|[0-9]+ (passed|failed)' \
  | tail -n 60
echo "==== end of summary"
