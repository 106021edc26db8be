#!/usr/bin/env bash
# Other people's jobs on the test SLURM site: keeps N jobs of users that are not ours
# (carol and dave, account "others") in slurmctld, half held and half waiting for a begin
# time a day away, plus a churn of one short job per second that starts and ends on the
# compute hosts. Bounded: N <= 25000 (MaxJobCount is 30000), the churn stops by itself
# after DURATION seconds.
#
#   foreign-jobs.sh SUITE start N [DURATION]   submit until N foreign jobs exist; churn
#                                              for DURATION s (default 900, 0 = none)
#   foreign-jobs.sh SUITE stop                 stop the churn, cancel every foreign job
#   foreign-jobs.sh SUITE count                how many foreign jobs slurmctld holds
SUITE=${1:?usage: foreign-jobs.sh SUITE start N [DURATION] | stop | count}
ACTION=${2:?action}
LOG_TAG=foreign-$SUITE
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=hack/site.sh
. "$HACK_DIR/site.sh"
site_vars "$SUITE"
ROOT=$(cat "$STATE_DIR/chroot")
USERS=(carol dave)
ctl() { chroot "$ROOT" env SLURM_CONF="$ETC/slurm.conf" "$@"; }
as() { local u=$1; shift; chroot "$ROOT" setpriv --reuid="$u" --regid="$u" --init-groups env SLURM_CONF="$ETC/slurm.conf" HOME="/home/$u" "$@"; }
count() { ctl squeue -h -u "$(IFS=,; echo "${USERS[*]}")" -o %i | wc -l; }

case $ACTION in
  start)
    n=${3:?how many jobs?} duration=${4:-900}
    [ "$n" -le 25000 ] || die "at most 25000 foreign jobs (MaxJobCount=30000)"
    have=$(count)
    missing=$((n - have))
    if [ $missing -gt 0 ]; then
      log "submitting $missing foreign jobs (have $have)"
      # Four submitters in parallel; each a shell loop inside the chroot as its user.
      per=$(((missing + 3) / 4))
      for w in 0 1 2 3; do
        u=${USERS[$((w % 2))]}
        as "$u" bash -c '
          for i in $(seq 1 "$1"); do
            if [ $((i % 2)) = 0 ]; then opt=--hold; else opt=--begin=now+1day; fi
            sbatch --quiet $opt --job-name="foreign-$i" --output=/dev/null --cpus-per-task=1 \
              --mem=100M --time=10 --wrap "sleep 600" >/dev/null || exit 1
          done' _ "$per" &
      done
      wait
      log "now $(count) foreign jobs"
    fi
    if [ "$duration" -gt 0 ] && ! pid_alive churn "$PIDS" "$STATE_DIR"; then
      log "churn: one short job per second for ${duration}s"
      # $0 names the state dir, so pid_alive knows the loop for ours.
      setsid bash -c '
        end=$((SECONDS + $1)); shift
        while [ $SECONDS -lt $end ]; do
          "$@" sbatch --quiet --job-name=foreign-churn --output=/dev/null --cpus-per-task=1 \
            --mem=50M --time=1 --wrap "sleep 1" >/dev/null 2>&1
          sleep 1
        done' "churn:$STATE_DIR" "$duration" chroot "$ROOT" setpriv --reuid=carol --regid=carol \
          --init-groups env SLURM_CONF="$ETC/slurm.conf" HOME=/home/carol </dev/null >/dev/null 2>&1 &
      echo $! >"$PIDS/churn.pid"
    fi
    ;;
  stop)
    stop_pid churn "$PIDS" "$STATE_DIR"
    for u in "${USERS[@]}"; do ctl scancel --quiet --user="$u"; done
    ;;
  count) count ;;
  *) die "unknown action $ACTION" ;;
esac
