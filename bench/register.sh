#!/bin/sh
# Registration ramps (SIPp, digest auth) against Warden on SQLite, on
# PostgreSQL + Redis, and against two nodes at once: see bench/cluster.py.
# bench/register.py alone runs the single-node ramp and the SIPp-vs-SIPp
# reference (python -m bench.register --help).
cd "$(dirname "$0")/.." && exec python -m bench.cluster "$@"
