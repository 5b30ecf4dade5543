#!/usr/bin/env bash
# The Dovecot-facing tests against Dovecot CE 2.4 (npm run test:dovecot24): builds 2.4 once with
# shared/tools/dovecot24/build.sh (cached; found beside this checkout or in a directory above it,
# or DOVECOT24_DIR), or takes an installed one from MAILSHARE_DOVECOT_PREFIX; then the tests of
# vitest.dovecot24.config.ts and the imaptest compliance run, each against 2.4.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${MAILSHARE_DOVECOT_PREFIX:-}" ]]; then
  tool=${DOVECOT24_DIR:-}
  if [[ -z $tool ]]; then
    dir=$(cd .. && pwd)
    while [[ $dir != / ]]; do
      if [[ -x $dir/shared/tools/dovecot24/build.sh || -f $dir/shared/tools/dovecot24/build.sh ]]; then tool=$dir/shared/tools/dovecot24; break; fi
      dir=$(dirname "$dir")
    done
  fi
  if [[ -z $tool ]]; then
    echo "test:dovecot24: no shared/tools/dovecot24 beside this checkout or above it (set DOVECOT24_DIR or MAILSHARE_DOVECOT_PREFIX)" >&2
    exit 2
  fi
  MAILSHARE_DOVECOT_PREFIX=$(bash "$tool/build.sh")
fi
export MAILSHARE_DOVECOT_PREFIX
version=$("$MAILSHARE_DOVECOT_PREFIX/sbin/dovecot" --version)
echo "test:dovecot24: Dovecot $version at $MAILSHARE_DOVECOT_PREFIX" >&2

npm run --silent build
npx vitest run --config vitest.dovecot24.config.ts
npx tsx test/compliance/imap-compliance.ts
