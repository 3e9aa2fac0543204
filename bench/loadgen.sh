#!/bin/sh
# Load generator benchmark (warden-loadtest vs SIPp, concurrent calls with RTP): see bench/loadgen.py.
cd "$(dirname "$0")/.." && exec python -m bench.loadgen "$@"
