#!/usr/bin/env bash
# Run molecule scenarios, MOLECULE_JOBS at a time (default 2), longest first: each
# role's, and the root's `fleet` (molecule/fleet), `gates` (molecule/gates) and
# `collection` (molecule/collection); each one's output goes to
# .cache/logs/molecule-<role>.log, every line stamped with its time (scripts/molecule-steps.sh).
# (`make molecule` runs them all this way, the fleet beside the role scenarios, three at a
# time.) Prints one line per scenario as it ends, with its testinfra count and the
# seconds of each molecule step, and for a failed one what failed
# (scripts/molecule-summary.sh). Exit 1 if
# any failed. MOLECULE_ARGS: more arguments for the role scenarios' `molecule test`
# (`--destroy=never` keeps the test host, to look at it or re-run its tests; the next
# run's first step destroys it).
#   scripts/molecule-roles.sh [fleet] [gates] [collection] ROLE...
set -u
# (associative arrays initialised empty: set -u treats an undeclared one as unbound)
jobs_max=${MOLECULE_JOBS:-2}
mkdir -p .cache/logs
# The slowest scenarios first, so the last ones to start are short.
order="fleet gates collection procslice_gunicorn procslice_service procslice_supervisor procslice_podman
       procslice_haproxy procslice_slices procslice_build procslice_lock procslice_preflight"
roles=()
for role in $order; do
  for wanted in "$@"; do [ "$wanted" = "$role" ] && roles+=("$role"); done
done
for wanted in "$@"; do
  case " ${roles[*]} " in *" $wanted "*) ;; *) roles+=("$wanted") ;; esac
done

declare -A pid_role=() started=()
failed=()
finish() {  # $1: pid that ended, $2: its status
  local role=${pid_role[$1]} log=".cache/logs/molecule-${pid_role[$1]}.log"
  local took=$(( $(date +%s) - ${started[$1]} )) tests
  tests=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -oE '[0-9]+ passed[^=]*in [0-9.]+s' | tail -n 1)
  if [ "$2" -eq 0 ]; then
    echo "== molecule: $role passed in ${took}s (${tests:-no testinfra count}; $(scripts/molecule-steps.sh sum "$log"))"
  else
    echo "== molecule: $role FAILED after ${took}s (log: $log)"
    scripts/molecule-summary.sh "$log"
    failed+=("$role")
  fi
}
# pid_role holds the jobs not reaped yet: a job that ended is counted until wait -n
# reports it, so none is missed.
reap() {
  local done_pid status
  wait -n -p done_pid "${!pid_role[@]}"; status=$?
  finish "$done_pid" "$status"
  unset "pid_role[$done_pid]"
}
for role in "${roles[@]}"; do
  while [ "${#pid_role[@]}" -ge "$jobs_max" ]; do reap; done
  echo "== molecule: $role started (log: .cache/logs/molecule-$role.log)"
  if [ -d "molecule/$role" ]; then
    # A scenario of the repository's root (molecule/fleet, gates, collection): its hosts
    # live outside molecule, whose saved state would skip prepare on a second run, so
    # each run starts from an empty state directory of its own. Not `molecule reset`:
    # the podman driver's reset removes every molecule container on the machine, the
    # role scenarios' running beside it included.
    (set -o pipefail; rm -rf ".cache/molecule-$role-state" \
      && MOLECULE_EPHEMERAL_DIRECTORY="$PWD/.cache/molecule-$role-state" molecule test -s "$role" 2>&1 \
      | scripts/molecule-steps.sh stamp) > ".cache/logs/molecule-$role.log" 2>&1 &
  else
    # shellcheck disable=SC2086  # (MOLECULE_ARGS: words, split on purpose)
    (set -o pipefail; cd "roles/$role" && molecule test ${MOLECULE_ARGS:-} 2>&1 \
      | ../../scripts/molecule-steps.sh stamp) > ".cache/logs/molecule-$role.log" 2>&1 &
  fi
  pid_role[$!]=$role
  started[$!]=$(date +%s)
done
while [ "${#pid_role[@]}" -gt 0 ]; do reap; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "== molecule: failed: ${failed[*]}"
  exit 1
fi
echo "== molecule: ${#roles[@]} scenarios passed"
