#!/bin/sh
# Backup and restore-drill benchmark (10,000 extensions, 1,000,000 CDRs, 2 GiB of
# voicemail, generated in a temporary directory; SQLite and PostgreSQL): see bench/dr.py.
cd "$(dirname "$0")/.." && exec python -m bench.dr "$@"
