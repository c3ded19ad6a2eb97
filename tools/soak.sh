#!/usr/bin/env bash
# Chaos soak of the swarm across network namespaces (needs root): hosters
# killed and restarted under continuous API load. See crates/cli/benches/soak.rs.
#   tools/soak.sh [--minutes N]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p hypertensor-cli --bench soak -- "$@"
