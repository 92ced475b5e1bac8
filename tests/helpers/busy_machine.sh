#!/usr/bin/env bash
# Runs a command on a machine kept busy: starts N CPU-bound processes (default 4) beside it, runs the command,
# stops them (only those it started) and exits with the command's status. For checking that tests which stop,
# kill or wait for processes do not depend on timing, e.g. 20 runs of the fault tests under load:
#   tests/helpers/busy_machine.sh 4 bash -c 'for i in $(seq 20); do .venv/bin/python -m pytest -p no:cacheprovider \
#       -n 0 -q tests/unit/common/test_faults.py tests/unit/training/test_checkpointing.py || exit 1; done'
set -u
if [ $# -lt 2 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 N_BUSY_PROCESSES COMMAND [ARGUMENTS...]" >&2
    exit 2
fi
busy=$1
shift
pids=()
stop_busy_processes() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait "${pids[@]}" 2>/dev/null
}
trap stop_busy_processes EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$busy"); do
    python3 -c 'while True: pass' &
    pids+=($!)
done
echo "busy_machine: $busy CPU-bound processes started (pids ${pids[*]}); load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$@"
status=$?
echo "busy_machine: command exited $status; load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exit $status
