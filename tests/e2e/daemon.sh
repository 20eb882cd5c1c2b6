#!/bin/sh
# fp8d serve end to end (tests/e2e/daemon.py says what it checks).
exec python3 tests/e2e/daemon.py
