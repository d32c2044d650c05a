#!/usr/bin/env bash
# Serves target/web/ (tools/web/build.sh) on http://127.0.0.1:${PORT:-8080}/.
set -euo pipefail
cd "$(dirname "$0")/../../target/web"
exec python3 -m http.server "${PORT:-8080}" --bind 127.0.0.1
