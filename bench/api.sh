#!/bin/sh
# Admin API benchmark (latency at 200 requests/s with 1,000 registrations held,
# and the registration throughput it costs): see bench/api.py.
cd "$(dirname "$0")/.." && exec python -m bench.api "$@"
