#!/usr/bin/env bash
# Chaos soak of the whole staked network across network namespaces (needs
# root): hosters, subnet validators and chain validators killed and
# restarted under continuous API load. See crates/cli/benches/soak.rs.
#   tools/soak.sh [--minutes N]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p hypertensor-cli --bench soak -- "$@"
