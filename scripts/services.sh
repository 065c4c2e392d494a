#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on loopback for the tests: start them if they are
# installed, install them from the system's packages where allowed, else say what to do.
# With CI=true a service that cannot be reached fails the run; nothing is ever skipped.
set -u
PGHOST=${TEST_PGHOST:-127.0.0.1}
PGPORT=${TEST_PGPORT:-5432}
REDIS_PORT=${TEST_REDIS_PORT:-6379}

up() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_up() {
  for _ in $(seq 1 30); do up "$1" "$2" && return 0; sleep 0.5; done
  return 1
}

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

start_postgres() {
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    can_install || return 1
    echo "services: installing PostgreSQL from the system's packages"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || return 1
    # Trust auth on loopback, as the test databases expect.
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    done
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start
}

start_redis() {
  if ! command -v redis-server >/dev/null; then
    can_install || return 1
    echo "services: installing Redis from the system's packages"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null || return 1
  fi
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp --logfile /tmp/yfl-redis.log
}

failed=0
if ! up "$PGHOST" "$PGPORT"; then
  echo "services: PostgreSQL is not answering on $PGHOST:$PGPORT, starting it"
  start_postgres && wait_up "$PGHOST" "$PGPORT" || {
    echo "services: could not start PostgreSQL. Install it (Debian/Ubuntu: sudo apt-get install postgresql)"
    echo "          and allow trust auth for 127.0.0.1, or set TEST_DATABASE_URL to a server you have."
    failed=1
  }
fi
if ! up 127.0.0.1 "$REDIS_PORT"; then
  echo "services: Redis is not answering on 127.0.0.1:$REDIS_PORT, starting it"
  start_redis && wait_up 127.0.0.1 "$REDIS_PORT" || {
    echo "services: could not start Redis. Install it (Debian/Ubuntu: sudo apt-get install redis-server)."
    failed=1
  }
fi
if [ "$failed" = 1 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "services: CI needs PostgreSQL and Redis; failing instead of skipping their tests."
    exit 1
  fi
  echo "services: the PostgreSQL/Redis tests will be skipped on this machine."
fi
exit 0
