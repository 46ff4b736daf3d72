#!/usr/bin/env bash
# Durable puts side by side (1 KiB, kms v2 through keyward dev's own plugin, 16 clients on 4
# connections, 1,000 keys): keyward BEFORE, keyward AFTER and etcd on the same disk, ROUNDS rounds
# of DURATION each, the three targets in turn within each round so that drift hits them alike.
#   benches/put_side_by_side.sh BEFORE_BIN AFTER_BIN [ROUNDS=3] [DURATION=10s]
# The same as `benches/side_by_side.sh put ...`.
set -Eeuo pipefail
exec "$(dirname "$0")/side_by_side.sh" put "$@"
