#!/usr/bin/env bash
# Stop the one-node cluster tools/start_slurm.sh started (its daemons, by their pid files).
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
  [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
[ -s /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null
true
