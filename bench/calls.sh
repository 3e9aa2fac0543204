#!/bin/sh
# Call benchmarks (call rate, concurrent relayed calls): see bench/calls.py.
cd "$(dirname "$0")/.." && exec python -m bench.calls "$@"
