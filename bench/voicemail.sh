#!/bin/sh
# Voicemail under load: 50 callers leave 30 s messages while 200 calls are relayed,
# each message checked for lost audio (see bench/voicemail.py; --quick for a smoke test).
cd "$(dirname "$0")/.." && exec python -m bench.voicemail "$@"
