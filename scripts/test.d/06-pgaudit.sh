#!/usr/bin/env bash
# The pgaudit importer's tests (tests/detect/test_import_pgaudit.py) read the log of a real
# PostgreSQL with Debian's pgaudit extension: install it when missing. The tests start their
# own throwaway cluster with it preloaded; the shared server on 5432 is left as it is.
set -euo pipefail
version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
version=${version:-15}
if [ -e "/usr/lib/postgresql/$version/lib/pgaudit.so" ]; then
  exit 0
fi
echo "== installing pgaudit for PostgreSQL $version"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "postgresql-$version-pgaudit" >/dev/null
