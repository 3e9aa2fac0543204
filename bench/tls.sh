#!/bin/sh
# SIP-over-TLS registrations (one connection, reused) against UDP in the same
# run: see bench/tls.py (python -m bench.tls --help).
cd "$(dirname "$0")/.." && exec python -m bench.tls "$@"
