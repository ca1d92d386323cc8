#!/usr/bin/env bash
# bench/run.sh: load-test wxlogin against the local mock WeChat with wrk. See bench/README.md.
#
#   bash bench/run.sh            (or `make bench`, which builds build/wxlogin first)
#
# Environment:
#   BENCH_SECONDS=10          duration of each measured wrk run, in seconds
#   BENCH_WARMUP_SECONDS=2    duration of the warm-up run (0 skips it)
#   BENCH_WRK_THREADS=2       wrk -t
#   BENCH_WRK_TIMEOUT=2s      wrk --timeout (a slower response counts as a timeout error)
#   BENCH_SERVER_THREADS=     WXLOGIN_THREADS for the service (unset: the service's default)
#   BENCH_MOCK_THREADS=       --threads for the mock (unset: the mock's default)
#   BENCH_SESSIONS=100000     sessions seeded into the store for GET /v1/session
#   BENCH_USERS=5000          distinct users those sessions belong to
#   BENCH_NGINX=/usr/sbin/nginx  the nginx for the baseline (Debian's nginx-light)
#   BENCH_REDIS=1             0 skips the Redis store scenario (two instances on one Redis)
#   BENCH_REDIS_SERVER=/usr/bin/redis-server  the private Redis for it (redis-cli beside it)
#   BENCH_REDIS_THREADS=1     WXLOGIN_THREADS of each of the two Redis-backed instances
#   BENCH_KEEP_LOGS=1         keep the temp dir with the logs and raw wrk output
#   WXLOGIN_BIN=path          the binary (default <repo>/build/wxlogin); not passed to the service
#
# Everything listens on 127.0.0.1 only. Every process it starts (mock, services, nginx, Redis,
# wrk) is stopped on exit, whatever happens.
set -Eeuo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$ROOT/bench
BIN=${WXLOGIN_BIN:-$ROOT/build/wxlogin}
DURATION=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP_SECONDS:-2}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_TIMEOUT=${BENCH_WRK_TIMEOUT:-2s}
APPID=wx1234567890abcdef # the mock's default app
SECRET=0123456789abcdef0123456789abcdef
SESSIONS=${BENCH_SESSIONS:-100000}
USERS=${BENCH_USERS:-5000}
NGINX=${BENCH_NGINX:-/usr/sbin/nginx}
REDIS=${BENCH_REDIS:-1}
REDIS_SERVER=${BENCH_REDIS_SERVER:-/usr/bin/redis-server}
REDIS_CLI=$(dirname -- "$REDIS_SERVER")/redis-cli
REDIS_THREADS=${BENCH_REDIS_THREADS:-1}
PY=/usr/bin/python3
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

TMP=
MOCK_PID=
SERVE_PID=
WRK_PID=
NGINX_PID=
NGINX_WORKERS=()
MOCK_PORT=
SERVE_PORT=
NGINX_PORT=
TOKENS=
REDIS_PID=
REDIS_PORT=
REDIS_URL=
REDIS_TOKENS=
RA_PID= # the two Redis-backed instances, "A" and "B"
RB_PID=
RA_PORT=
RB_PORT=
WRK_PIDS=() # the two wrk processes of a Redis run
RUN_ID=
RUN_SEQ=0
ROWS=()
NOTES=()
CPU_LINES=()
CPU_WATCH=() # "label=pid[,pid...]" whose CPU time run_wrk/run_wrk_pair account per request
declare -A CPU0=() CPU1=()
declare -A RPS=() # "NAME@CONNS" -> req/s, for the ratio lines

die() {
    echo "bench: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- processes and cleanup

# stop_proc PID NAME: SIGTERM, wait up to 5 s, then SIGKILL. Only ever our own child's PID.
stop_proc() {
    local pid=$1 name=$2 i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" 2>/dev/null || true
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench: $name (pid $pid) did not stop after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    local p
    for p in "$WRK_PID" "${WRK_PIDS[@]}"; do
        [[ -n $p ]] || continue
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    WRK_PID=
    WRK_PIDS=()
    # The services first, so they do not log upstream errors for a mock (or a Redis) that went away.
    stop_proc "$SERVE_PID" serve
    SERVE_PID=
    stop_proc "$RA_PID" "serve (redis A)"
    RA_PID=
    stop_proc "$RB_PID" "serve (redis B)"
    RB_PID=
    stop_proc "$REDIS_PID" redis-server
    REDIS_PID=
    stop_proc "$MOCK_PID" mock
    MOCK_PID=
    stop_nginx
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $rc -ne 0 || ${BENCH_KEEP_LOGS:-0} == 1 ]]; then
            echo "bench: logs and raw wrk output kept in $TMP" >&2
        else
            rm -rf -- "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Ports: both processes listen on 127.0.0.1 port 0, so the kernel picks a free port and no
# other process can take it between "find a free port" and "bind it" (on a busy machine, with
# test suites running and thousands of outgoing loopback connections, that race does happen).
# The mock logs the port it got; the service's port is read from `ss -p` by its pid.

# free_port: a port nothing listens on right now; only used when `ss` is missing. Picked below
# the kernel's ephemeral range, where outgoing connections (thousands per second during a run)
# take their local ports, so only another listener can race for it.
free_port() {
    local lo=32768 p i
    read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    ((lo > 12000)) || lo=32768
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + (RANDOM * 32768 + RANDOM) % (lo - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# listen_port PID: the TCP port PID listens on, per `ss -ltnp`; empty if none (yet).
listen_port() {
    ss -Hltnp 2>/dev/null |
        awk -v pat="pid=$1," 'index($0, pat) { n = split($4, a, ":"); print a[n]; exit }'
}

# wait_for NAME PID LOG CMD...: runs CMD (which prints something once ready) every 0.1 s for
# up to 10 s, while PID is alive; prints CMD's output. Fails with NAME's log if it never does.
wait_for() {
    local name=$1 pid=$2 log=$3 i out
    shift 3
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench: $name exited during startup; its log:" >&2
            sed 's/^/    /' "$log" >&2 || true
            return 1
        fi
        out=$("$@" 2>/dev/null || true)
        if [[ -n $out ]]; then
            echo "$out"
            return 0
        fi
        sleep 0.1
    done
    echo "bench: $name not ready after 10 s ($*); its log:" >&2
    sed 's/^/    /' "$log" >&2 || true
    return 1
}

mock_port_from_log() {
    grep -o 'port=[0-9]*' "$TMP/mock.log" | head -n 1 | cut -d= -f2
}

http_ok() {
    curl -fsS -o /dev/null --max-time 1 "$1" && echo ok
}

# No WXLOGIN_* from the caller's environment may reach the service: only what we set below.
unset_wxlogin_env() {
    local v
    for v in $(compgen -e); do
        [[ $v == WXLOGIN_* ]] && unset "$v"
    done
    return 0
}

start_mock() {
    local args=(mock --listen 127.0.0.1:0)
    [[ -n ${BENCH_MOCK_THREADS:-} ]] && args+=(--threads "$BENCH_MOCK_THREADS")
    (cd "$TMP" && unset_wxlogin_env && exec "$BIN" "${args[@]}") >"$TMP/mock.log" 2>&1 &
    MOCK_PID=$!
    MOCK_PORT=$(wait_for mock "$MOCK_PID" "$TMP/mock.log" mock_port_from_log)
    wait_for mock "$MOCK_PID" "$TMP/mock.log" \
        http_ok "http://127.0.0.1:$MOCK_PORT/mock/stats" >/dev/null
}

# launch_serve PIDVAR PORTVAR NAME LOG THREADS [VAR=VALUE...]: starts `wxlogin serve` with the
# common configuration (mock upstream, warn logging, 127.0.0.1 port 0) plus the given WXLOGIN_*
# settings (the store); THREADS empty keeps the service's default. Sets the globals named
# PIDVAR (at once, so the cleanup stops it whatever happens next) and PORTVAR, and returns once
# it answers /healthz.
launch_serve() {
    local -n pid_ref=$1 port_ref=$2
    local name=$3 log=$4 threads=$5
    shift 5
    local listen=127.0.0.1:0
    command -v ss >/dev/null || listen=127.0.0.1:$(free_port)
    (
        # Run in the temp dir: nothing lands in the caller's directory.
        cd "$TMP"
        unset_wxlogin_env
        export WXLOGIN_LISTEN="$listen"
        export WXLOGIN_APPID="$APPID" WXLOGIN_SECRET="$SECRET"
        export WXLOGIN_WECHAT_BASE="http://127.0.0.1:$MOCK_PORT"
        export WXLOGIN_LOG_LEVEL=warn WXLOGIN_SHUTDOWN_TIMEOUT_MS=2000
        [[ -n $threads ]] && export WXLOGIN_THREADS="$threads"
        local kv
        for kv in "$@"; do export "${kv?}"; done
        exec "$BIN" serve
    ) >"$log" 2>&1 &
    pid_ref=$!
    if [[ ${listen##*:} == 0 ]]; then
        port_ref=$(wait_for "$name" "$pid_ref" "$log" listen_port "$pid_ref")
    else
        port_ref=${listen##*:}
    fi
    wait_for "$name" "$pid_ref" "$log" \
        http_ok "http://127.0.0.1:$port_ref/healthz" >/dev/null
    # Whoever answered must be our process, not something that took the port first.
    kill -0 "$pid_ref" 2>/dev/null || die "$name exited during startup (log: $log)"
}

# start_serve: the SQLite-backed service. Its store (and the master key the service creates
# beside it) lives in the temp dir, so each run starts empty.
start_serve() {
    launch_serve SERVE_PID SERVE_PORT serve "$TMP/serve.log" "${BENCH_SERVER_THREADS:-}" \
        "WXLOGIN_STORE=sqlite:$TMP/wxlogin.db"
}

# ---------------------------------------------------------------- sessions for GET /v1/session

# seed_store: the service creates its schema when it starts, so start it once on the empty store
# and stop it; then insert BENCH_SESSIONS sessions straight into SQLite (seed_sessions.py, one
# transaction) while nothing has the file open. The tokens go to $TOKENS for session.lua.
seed_store() {
    echo "bench: creating the schema, then seeding $SESSIONS sessions ..." >&2
    start_serve
    stop_proc "$SERVE_PID" serve
    SERVE_PID=
    mv -- "$TMP/serve.log" "$TMP/serve-schema.log"
    if [[ -s $TMP/serve-schema.log ]]; then
        NOTES+=("the schema-creating start of the service logged warnings; first ones:")
        while IFS= read -r l; do NOTES+=("    $l"); done < <(head -n 3 "$TMP/serve-schema.log" | cut -c1-300)
    fi
    TOKENS=$TMP/tokens.txt
    "$PY" "$BENCH_DIR/seed_sessions.py" "$TMP/wxlogin.db" "$TOKENS" \
        --sessions "$SESSIONS" --users "$USERS" --appid "$APPID" 2>"$TMP/seed.log" || {
        sed 's/^/    /' "$TMP/seed.log" >&2
        die "seeding the store failed"
    }
    sed 's/^/bench: /' "$TMP/seed.log" >&2
    # session.lua reads these; it splits the tokens among wrk's threads.
    export BENCH_TOKENS=$TOKENS BENCH_WRK_THREADS=$WRK_THREADS
}

# get_session TOKEN HEADERS_FILE [PORT]: GET /v1/session with TOKEN (on the SQLite-backed
# service unless PORT); prints the status code.
get_session() {
    curl -sS -o /dev/null -D "$2" -w '%{http_code}' --max-time 5 \
        -H "Authorization: Bearer $1" "http://127.0.0.1:${3:-$SERVE_PORT}/v1/session" || true
}

# login_token PORT CODE: POST /v1/login with CODE; prints the session token it answered.
login_token() {
    local body token
    body=$(curl -sS --max-time 5 -H 'Content-Type: application/json' \
        -d "{\"code\":\"$2\"}" "http://127.0.0.1:$1/v1/login") ||
        die "sanity check: POST /v1/login on port $1 failed"
    token=$(grep -o '"token": *"wxl_[A-Za-z0-9_-]*"' <<<"$body" | grep -o 'wxl_[A-Za-z0-9_-]*' || true)
    [[ -n $token ]] || die "sanity check: POST /v1/login on port $1 answered without a token: $body"
    echo "$token"
}

# check_sessions: a token from a real login, and a seeded one, must verify (200, with the
# identity headers); an unknown token must not (401). Catches a seeding format that does not
# match the service's (then every measured request would be a cheap 401).
check_sessions() {
    local token code seeded
    token=$(login_token "$SERVE_PORT" "ubench-${RUN_ID}check")
    code=$(get_session "$token" "$TMP/check-login.hdr")
    [[ $code == 200 ]] || die "sanity check: GET /v1/session with a fresh login's token answered $code"
    seeded=$(head -n 1 "$TOKENS")
    code=$(get_session "$seeded" "$TMP/check-seeded.hdr")
    [[ $code == 200 ]] || die "sanity check: GET /v1/session with a seeded token answered $code" \
        "(the seeding does not match the service's token format or schema)"
    if ! grep -qi '^X-WX-OpenID: oBn' "$TMP/check-seeded.hdr" ||
        ! grep -qi '^X-WX-UnionID: uBn' "$TMP/check-seeded.hdr"; then
        die "sanity check: a seeded token's answer lacks the seeded user's X-WX-OpenID/UnionID"
    fi
    code=$(get_session "wxl_$(printf '%043d' 0)" "$TMP/check-unknown.hdr")
    [[ $code == 401 ]] || die "sanity check: GET /v1/session with an unknown token answered $code, not 401"
    echo "bench: sanity check passed (login's token 200, seeded token 200, unknown token 401)" >&2
}

# ---------------------------------------------------------------- the Redis store: two instances

# redis_cli ARGS...: a command to our private Redis.
redis_cli() {
    "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" "$@"
}

redis_ready() {
    [[ $(redis_cli ping 2>/dev/null) == PONG ]] || return 0
    # Whoever answered must be our redis-server (with ss: the listener on the port is its pid).
    if command -v ss >/dev/null && [[ $(listen_port "$REDIS_PID") != "$REDIS_PORT" ]]; then
        return 0
    fi
    echo ok
}

# start_redis: a private redis-server on 127.0.0.1, in the foreground as our child, without
# persistence (--save "" --appendonly no), its working dir and log in $TMP/redis. Redis cannot
# listen on port 0: pick a free port, and another one if it got taken meanwhile.
start_redis() {
    local dir=$TMP/redis attempt i
    mkdir -p "$dir"
    for ((attempt = 1; attempt <= 5; attempt++)); do
        REDIS_PORT=$(free_port)
        : >"$dir/redis.log"
        (cd "$dir" && exec "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" \
            --protected-mode yes --save "" --appendonly no --dir "$dir" --daemonize no \
            --logfile "$dir/redis.log" --databases 1) >"$dir/stderr.log" 2>&1 &
        REDIS_PID=$!
        for ((i = 0; i < 100; i++)); do
            kill -0 "$REDIS_PID" 2>/dev/null || break
            [[ -n $(redis_ready) ]] && break
            sleep 0.1
        done
        if kill -0 "$REDIS_PID" 2>/dev/null && [[ -n $(redis_ready) ]]; then
            REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
            echo "bench: redis-server $(redis_cli info server | tr -d '\r' |
                sed -n 's/^redis_version://p') on 127.0.0.1:$REDIS_PORT (no persistence)" >&2
            return 0
        fi
        stop_proc "$REDIS_PID" redis-server
        REDIS_PID=
        if grep -qs 'Address already in use' "$dir/redis.log" "$dir/stderr.log"; then
            continue
        fi
        echo "bench: redis-server did not start; its logs:" >&2
        cat "$dir/stderr.log" "$dir/redis.log" 2>/dev/null | tail -n 20 | sed 's/^/    /' >&2
        die "redis-server failed to start"
    done
    die "redis-server: no free port after 5 attempts"
}

# seed_redis: BENCH_SESSIONS sessions of BENCH_USERS users straight into Redis (seed_redis.py,
# pipelined), before the Redis-backed instances start. The tokens go to $REDIS_TOKENS, and each
# half of them to tokens-a.txt / tokens-b.txt: one per instance's wrk, so the two walk disjoint
# tokens and together cover all of them.
seed_redis() {
    echo "bench: seeding $SESSIONS sessions into Redis ..." >&2
    REDIS_TOKENS=$TMP/tokens-redis.txt
    "$PY" "$BENCH_DIR/seed_redis.py" 127.0.0.1 "$REDIS_PORT" "$REDIS_TOKENS" \
        --sessions "$SESSIONS" --users "$USERS" --appid "$APPID" 2>"$TMP/seed-redis.log" || {
        sed 's/^/    /' "$TMP/seed-redis.log" >&2
        die "seeding Redis failed"
    }
    sed 's/^/bench: /' "$TMP/seed-redis.log" >&2
    if ((SESSIONS >= 2)); then
        head -n "$((SESSIONS / 2))" "$REDIS_TOKENS" >"$TMP/tokens-a.txt"
        tail -n "+$((SESSIONS / 2 + 1))" "$REDIS_TOKENS" >"$TMP/tokens-b.txt"
    else
        cp -- "$REDIS_TOKENS" "$TMP/tokens-a.txt"
        cp -- "$REDIS_TOKENS" "$TMP/tokens-b.txt"
    fi
}

# start_redis_serves: two instances against the same Redis, sharing one fresh master key,
# BENCH_REDIS_THREADS worker threads each (1: the pair has as many threads as the 2-core
# machine's single SQLite-backed instance).
start_redis_serves() {
    local key
    key=$(head -c 32 /dev/urandom | base64 -w 0)
    launch_serve RA_PID RA_PORT "serve (redis A)" "$TMP/serve-redis-a.log" "$REDIS_THREADS" \
        "WXLOGIN_STORE=$REDIS_URL" "WXLOGIN_MASTER_KEY=$key"
    launch_serve RB_PID RB_PORT "serve (redis B)" "$TMP/serve-redis-b.log" "$REDIS_THREADS" \
        "WXLOGIN_STORE=$REDIS_URL" "WXLOGIN_MASTER_KEY=$key"
    echo "bench: Redis-backed wxlogin A on 127.0.0.1:$RA_PORT, B on 127.0.0.1:$RB_PORT," \
        "$REDIS_THREADS thread(s) each" >&2
}

# check_redis_sessions: a token from a real login on A must verify on B (and on A), and its
# session must be in Redis under the documented key; a seeded token must verify on both with the
# seeded identity; an unknown token must answer 401 on both.
check_redis_sessions() {
    local token code seeded port hex
    token=$(login_token "$RA_PORT" "ubench-${RUN_ID}rcheck")
    hex=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
    [[ $(redis_cli exists "wxlogin:$APPID:s:$hex") == 1 ]] ||
        die "sanity check: A's login left no wxlogin:$APPID:s:<sha256> key in Redis"
    seeded=$(head -n 1 "$REDIS_TOKENS")
    for port in "$RB_PORT" "$RA_PORT"; do
        code=$(get_session "$token" "$TMP/check-redis-login-$port.hdr" "$port")
        [[ $code == 200 ]] || die "sanity check: GET /v1/session on port $port with the token" \
            "of a login on A (port $RA_PORT) answered $code"
        code=$(get_session "$seeded" "$TMP/check-redis-seeded-$port.hdr" "$port")
        [[ $code == 200 ]] || die "sanity check: GET /v1/session on port $port with a token" \
            "seeded into Redis answered $code (the seeding does not match the service's keys)"
        if ! grep -qi '^X-WX-OpenID: oBn' "$TMP/check-redis-seeded-$port.hdr" ||
            ! grep -qi '^X-WX-UnionID: uBn' "$TMP/check-redis-seeded-$port.hdr"; then
            die "sanity check: a Redis-seeded token's answer on port $port lacks the seeded" \
                "user's X-WX-OpenID/UnionID"
        fi
        code=$(get_session "wxl_$(printf '%043d' 0)" "$TMP/check-redis-unknown.hdr" "$port")
        [[ $code == 401 ]] || die "sanity check: GET /v1/session on port $port with an" \
            "unknown token answered $code, not 401"
    done
    echo "bench: Redis sanity check passed (A's login token 200 on B and A, seeded token 200" \
        "on both, unknown token 401 on both)" >&2
}

# ---------------------------------------------------------------- nginx baseline

# The baseline: Debian's nginx answering `return 200` on loopback, from a private config and
# prefix in the temp dir (pid, error log, lock and temp paths all there; nothing else written).
# As many worker processes as the service has worker threads.
nginx_workers() {
    if [[ -n ${BENCH_SERVER_THREADS:-} ]]; then
        echo "$BENCH_SERVER_THREADS"
    else # the service's default: online CPUs, sysconf(_SC_NPROCESSORS_ONLN)
        getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1
    fi
}

write_nginx_conf() {
    local dir=$1 port=$2 workers=$3
    cat >"$dir/nginx.conf" <<EOF
# Written by bench/run.sh for one run; deleted with its temp dir.
daemon off;
master_process on;
worker_processes $workers;
pid $dir/nginx.pid;
lock_file $dir/nginx.lock;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port reuseport;
        location / { return 200 "ok\n"; }
    }
}
EOF
}

# nginx_listening: prints "ok" once our nginx answers on NGINX_PORT and (with ss) every listener
# on that port is ours: with reuseport, another process could share the port.
nginx_listening() {
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null || return 0
    if command -v ss >/dev/null; then
        local lines
        lines=$(ss -Hltnp "sport = :$NGINX_PORT" 2>/dev/null || true)
        [[ -n $lines ]] || return 0
        grep -qv "pid=$NGINX_PID," <<<"$lines" && return 0
    fi
    echo ok
}

start_nginx() {
    local dir=$TMP/nginx workers attempt i
    workers=$(nginx_workers)
    mkdir -p "$dir"
    # nginx cannot listen on port 0: pick a free port, and another one if it got taken meanwhile.
    for ((attempt = 1; attempt <= 5; attempt++)); do
        NGINX_PORT=$(free_port)
        write_nginx_conf "$dir" "$NGINX_PORT" "$workers"
        (cd "$dir" && exec "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf") \
            >"$dir/stderr.log" 2>&1 &
        NGINX_PID=$!
        for ((i = 0; i < 100; i++)); do
            kill -0 "$NGINX_PID" 2>/dev/null || break
            [[ -n $(nginx_listening) ]] && break
            sleep 0.1
        done
        if kill -0 "$NGINX_PID" 2>/dev/null && [[ -n $(nginx_listening) ]]; then
            mapfile -t NGINX_WORKERS < <(pgrep -P "$NGINX_PID" || true)
            echo "bench: nginx on 127.0.0.1:$NGINX_PORT, $workers worker processes" \
                "(as many as the service's worker threads)" >&2
            return 0
        fi
        stop_nginx
        if grep -qs 'Address already in use' "$dir/error.log" "$dir/stderr.log"; then
            : >"$dir/error.log"
            continue
        fi
        echo "bench: nginx did not start; its logs:" >&2
        cat "$dir/stderr.log" "$dir/error.log" 2>/dev/null | sed 's/^/    /' >&2
        die "nginx failed to start (config: $dir/nginx.conf)"
    done
    die "nginx: no free port after 5 attempts"
}

# stop_nginx: SIGTERM to the master, which stops its workers; then SIGKILL, by pid, to any of
# its workers that outlived it (a master killed with SIGKILL leaves them running).
stop_nginx() {
    stop_proc "$NGINX_PID" nginx
    NGINX_PID=
    local p
    for p in "${NGINX_WORKERS[@]}"; do
        if kill -0 "$p" 2>/dev/null && grep -qa '^nginx: worker' "/proc/$p/cmdline" 2>/dev/null; then
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    NGINX_WORKERS=()
}

# ---------------------------------------------------------------- wrk runs

raise_fd_limit() {
    local hard want
    hard=$(ulimit -Hn)
    for want in "$hard" 1048576 65536 16384 4096; do
        [[ $want == unlimited ]] && continue
        ulimit -Sn "$want" 2>/dev/null && break
    done
    local soft
    soft=$(ulimit -Sn)
    if [[ $soft != unlimited && $soft -lt 2048 ]]; then
        NOTES+=("open-file limit is only $soft: the 512-connection run may fail to connect")
    fi
}

# wrk_to OUT ARGS...: runs wrk with its output in OUT. In the background and waited for, so a
# SIGINT/SIGTERM to this script runs the cleanup at once instead of after wrk's run ends.
wrk_to() {
    local out=$1 rc=0
    shift
    wrk "$@" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=
    return "$rc"
}

# next_run_id: a fresh alphanumeric run id per wrk invocation, so no two runs (nor the warm-up)
# ever send the same code to the mock (codes are single use there).
next_run_id() {
    RUN_SEQ=$((RUN_SEQ + 1))
    BENCH_RUN_ID="${RUN_ID}r${RUN_SEQ}"
    export BENCH_RUN_ID
}

# field LINE KEY: the value of KEY=value in a RESULT line ("" if absent).
field() {
    local kv
    for kv in $1; do
        [[ $kv == "$2="* ]] && {
            echo "${kv#*=}"
            return
        }
    done
    echo ""
}

# parse_plain FILE: builds a RESULT line from wrk's own report, for scripts without a done()
# that prints one (e.g. a plain GET). Its "non-2xx" is wrk's "Non-2xx or 3xx" count.
parse_plain() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return (v + 0) / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /m$/)  return (v + 0) * 60000
            if (v ~ /s$/)  return (v + 0) * 1000
            return v + 0
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { non = $NF }
        /Socket errors:/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
        END { printf "RESULT rps=%s p50_ms=%.2f p99_ms=%.2f non2xx=%d errors=%d\n",
                     rps, p50, p99, non, err }
    ' "$1"
}

ROW_FMT='%-31s %-6s %-9s %-8s %-8s %-8s %s'

add_row() {
    ROWS+=("$(printf "$ROW_FMT" "$@")")
}

# ---- CPU accounting: where the time goes, per run. CPU_WATCH (set by the scenario) names the
# long-running processes to account ("label=pid[,pid...]"); wrk's CPU is this shell's reaped
# children's, per `times` (so it includes wrk's start-up: loading the token file).

# cpu_ticks PID...: CPU time (user + system, all threads) of the PIDs, in clock ticks.
cpu_ticks() {
    local p t=0 v
    for p in "$@"; do
        v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# children_ms: CPU of this shell's reaped children in ms, from the `times` output that the
# caller wrote to $TMP/times.txt (`times` must run in this shell: a subshell's children start at 0).
children_ms() {
    awk 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + (a[2] + 0) }
        printf "%.0f\n", t * 1000
    }' "$TMP/times.txt"
}

cpu_start() {
    local w pids
    CPU0=()
    for w in "${CPU_WATCH[@]}"; do
        pids=${w#*=}
        CPU0["${w%%=*}"]=$(cpu_ticks ${pids//,/ })
    done
    times >"$TMP/times.txt"
    CPU0[.wrk]=$(children_ms)
    CPU0[.t]=$(date +%s%N)
}

cpu_stop() {
    local w pids
    CPU1=()
    for w in "${CPU_WATCH[@]}"; do
        pids=${w#*=}
        CPU1["${w%%=*}"]=$(cpu_ticks ${pids//,/ })
    done
    times >"$TMP/times.txt"
    CPU1[.wrk]=$(children_ms)
    CPU1[.t]=$(date +%s%N)
}

# cpu_line NAME CONNS REQUESTS: one line of the CPU block: per watched process and wrk, CPU
# microseconds per completed request and cores busy over the run.
cpu_line() {
    local name=$1 conns=$2 req=$3 w label ms line wall_ms
    [[ $req =~ ^[0-9]+$ && $req -gt 0 ]] || return 0
    wall_ms=$(((${CPU1[.t]} - ${CPU0[.t]}) / 1000000))
    ((wall_ms > 0)) || return 0
    line=$(printf '%-31s %-4s' "$name" "$conns")
    for w in "${CPU_WATCH[@]}" .wrk; do
        label=${w%%=*}
        if [[ $label == .wrk ]]; then
            ms=$((${CPU1[.wrk]} - ${CPU0[.wrk]}))
            label=wrk
        else
            ms=$(((${CPU1[$label]} - ${CPU0[$label]}) * 1000 / CLK_TCK))
        fi
        line+=$(awk -v l="$label" -v ms="$ms" -v r="$req" -v w="$wall_ms" \
            'BEGIN { printf("  %s %.1f us (%.2f cores)", l, ms * 1000 / r, ms / w) }')
    done
    CPU_LINES+=("$line")
}

# check_alive NAME CONNS: a run that killed a process should not be blamed on the next one.
check_alive() {
    local name=$1 conns=$2
    kill -0 "$SERVE_PID" 2>/dev/null || die "the service died during $name @$conns (log: $TMP/serve.log)"
    kill -0 "$MOCK_PID" 2>/dev/null || die "the mock died during $name @$conns (log: $TMP/mock.log)"
    [[ -z $NGINX_PID ]] || kill -0 "$NGINX_PID" 2>/dev/null ||
        die "nginx died during $name @$conns (log: $TMP/nginx/error.log)"
    [[ -z $REDIS_PID ]] || kill -0 "$REDIS_PID" 2>/dev/null ||
        die "redis-server died during $name @$conns (log: $TMP/redis/redis.log)"
    [[ -z $RA_PID ]] || kill -0 "$RA_PID" 2>/dev/null ||
        die "Redis-backed instance A died during $name @$conns (log: $TMP/serve-redis-a.log)"
    [[ -z $RB_PID ]] || kill -0 "$RB_PID" 2>/dev/null ||
        die "Redis-backed instance B died during $name @$conns (log: $TMP/serve-redis-b.log)"
}

# run_wrk NAME CONNS URL [SCRIPT]: one measured wrk run; appends a row to the table.
# SCRIPT is a path relative to the repo root (or absolute); empty means plain GET.
run_wrk() {
    local name=$1 conns=$2 url=$3 script=${4:-}
    local out="$TMP/wrk-$RUN_SEQ-$conns.txt"
    local args=(-t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" --latency)
    if [[ -n $script ]]; then
        [[ $script == /* ]] || script=$ROOT/$script
        args+=(-s "$script")
    fi
    next_run_id
    echo "bench: $name, $conns connections, ${DURATION}s ..." >&2
    cpu_start
    if ! wrk_to "$out" "${args[@]}" "$url"; then
        echo "bench: wrk failed for $name at $conns connections:" >&2
        sed 's/^/    /' "$out" >&2
        add_row "$name" "$conns" FAILED - - - -
        return 0
    fi
    cpu_stop
    local res
    res=$(grep '^RESULT ' "$out" | tail -n 1 || true)
    [[ -n $res ]] || res=$(parse_plain "$out")
    RPS["$name@$conns"]=$(field "$res" rps)
    add_row "$name" "$conns" \
        "$(printf '%.0f' "$(field "$res" rps)")" \
        "$(field "$res" p50_ms)" "$(field "$res" p99_ms)" \
        "$(field "$res" non2xx)" "$(field "$res" errors)"
    local max non errs
    max=$(field "$res" max_ms)
    non=$(field "$res" non2xx)
    errs=$(field "$res" errors)
    [[ -n $max ]] && NOTES+=("$name @$conns: p90 $(field "$res" p90_ms) ms, max $max ms, $(field "$res" requests) requests")
    if [[ ${non:-0} != 0 ]]; then
        NOTES+=("$name @$conns: $non non-2xx responses")
        while IFS= read -r l; do NOTES+=("    $l"); done < <(grep '^NON2XX ' "$out" || true)
    fi
    if [[ ${errs:-0} != 0 ]]; then
        NOTES+=("$name @$conns: socket errors: $(grep -o 'connect=[0-9]* read=[0-9]* write=[0-9]* timeout=[0-9]*' <<<"$res" || grep 'Socket errors' "$out")")
    fi
    cpu_line "$name" "$conns" "$(field "$res" requests)"
    check_alive "$name" "$conns"
}

# wrk_pair OUT_A OUT_B CONNS_EACH SECONDS: GET /v1/session on the two Redis-backed instances at
# once: one wrk process per instance, -t1, its half of the tokens, started together, waited for
# (in the background, so a signal to this script runs the cleanup at once).
wrk_pair() {
    local outa=$1 outb=$2 c=$3 d=$4 rca=0 rcb=0
    local args=(-t1 -c"$c" -d"${d}s" --timeout "$WRK_TIMEOUT" --latency -s "$BENCH_DIR/session.lua")
    BENCH_TOKENS=$TMP/tokens-a.txt BENCH_WRK_THREADS=1 \
        wrk "${args[@]}" "http://127.0.0.1:$RA_PORT/v1/session" >"$outa" 2>&1 &
    WRK_PIDS=("$!")
    BENCH_TOKENS=$TMP/tokens-b.txt BENCH_WRK_THREADS=1 \
        wrk "${args[@]}" "http://127.0.0.1:$RB_PORT/v1/session" >"$outb" 2>&1 &
    WRK_PIDS+=("$!")
    wait "${WRK_PIDS[0]}" || rca=$?
    wait "${WRK_PIDS[1]}" || rcb=$?
    WRK_PIDS=()
    [[ $rca == 0 && $rcb == 0 ]]
}

# run_wrk_pair NAME CONNS: one measured run of GET /v1/session against both Redis-backed
# instances, CONNS in total (half each); appends one row: req/s summed, p50 and p99 the worse of
# the two, non-2xx and errors summed. Each side's figures, and what Redis did, go to the notes.
run_wrk_pair() {
    local name=$1 conns=$2 half=$(($2 / 2))
    next_run_id
    local outa="$TMP/wrk-$RUN_SEQ-$conns-a.txt" outb="$TMP/wrk-$RUN_SEQ-$conns-b.txt"
    echo "bench: $name, $conns connections (2 x wrk -t1 -c$half), ${DURATION}s ..." >&2
    redis_cli config resetstat >/dev/null
    cpu_start
    if ! wrk_pair "$outa" "$outb" "$half" "$DURATION"; then
        echo "bench: wrk failed for $name at $conns connections:" >&2
        sed 's/^/    A: /' "$outa" >&2
        sed 's/^/    B: /' "$outb" >&2
        add_row "$name" "$conns" FAILED - - - -
        check_alive "$name" "$conns"
        return 0
    fi
    cpu_stop
    local ra rb res
    ra=$(grep '^RESULT ' "$outa" | tail -n 1 || true)
    rb=$(grep '^RESULT ' "$outb" | tail -n 1 || true)
    if [[ -z $ra || -z $rb ]]; then
        echo "bench: no RESULT line from wrk for $name at $conns connections" >&2
        add_row "$name" "$conns" FAILED - - - -
        return 0
    fi
    res=$(awk -v a="$ra" -v b="$rb" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        for (i in x) { split(x[i], kv, "="); A[kv[1]] = kv[2] }
        for (i in y) { split(y[i], kv, "="); B[kv[1]] = kv[2] }
        max50 = A["p50_ms"] > B["p50_ms"] ? A["p50_ms"] : B["p50_ms"]
        max99 = A["p99_ms"] > B["p99_ms"] ? A["p99_ms"] : B["p99_ms"]
        printf "RESULT requests=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f non2xx=%d errors=%d\n",
            A["requests"] + B["requests"], A["rps"] + B["rps"], max50, max99,
            A["non2xx"] + B["non2xx"], A["errors"] + B["errors"]
    }')
    RPS["$name@$conns"]=$(field "$res" rps)
    add_row "$name" "$conns" \
        "$(printf '%.0f' "$(field "$res" rps)")" \
        "$(field "$res" p50_ms)" "$(field "$res" p99_ms)" \
        "$(field "$res" non2xx)" "$(field "$res" errors)"
    local side r out
    for side in A B; do
        if [[ $side == A ]]; then r=$ra out=$outa; else r=$rb out=$outb; fi
        NOTES+=("$name @$conns, instance $side (wrk -t1 -c$half): $(printf '%.0f' "$(field "$r" rps)") req/s,\
 p50 $(field "$r" p50_ms) ms, p90 $(field "$r" p90_ms) ms, p99 $(field "$r" p99_ms) ms,\
 max $(field "$r" max_ms) ms, $(field "$r" requests) requests")
        if [[ $(field "$r" non2xx) != 0 ]]; then
            NOTES+=("$name @$conns, instance $side: $(field "$r" non2xx) non-2xx responses")
            while IFS= read -r l; do NOTES+=("    $l"); done < <(grep '^NON2XX ' "$out" || true)
        fi
        if [[ $(field "$r" errors) != 0 ]]; then
            NOTES+=("$name @$conns, instance $side: socket errors: $(grep -o \
                'connect=[0-9]* read=[0-9]* write=[0-9]* timeout=[0-9]*' <<<"$r" || true)")
        fi
    done
    local req evals
    req=$(field "$res" requests)
    cpu_line "$name" "$conns" "$req"
    # Redis's own view: EVAL calls (one per GET /v1/session) and the time each took inside Redis.
    evals=$(redis_cli info commandstats 2>/dev/null | tr -d '\r' | grep '^cmdstat_eval:' || true)
    if [[ -n $evals ]]; then
        NOTES+=("$name @$conns: Redis $(awk -v s="$evals" -v r="$req" 'BEGIN {
            n = split(s, kv, /[:,=]/)
            for (i = 2; i < n; i += 2) v[kv[i]] = kv[i + 1]
            printf("ran %d EVAL (%.2f per counted request), %.1f us each inside Redis", v["calls"],
                   r > 0 ? v["calls"] / r : 0, v["usec_per_call"])
        }')")
    fi
    check_alive "$name" "$conns"
}

warm_up() {
    [[ $WARMUP == 0 ]] && return 0
    next_run_id
    echo "bench: warming up (${WARMUP}s) ..." >&2
    wrk_to "$TMP/wrk-warmup.txt" -t"$WRK_THREADS" -c16 -d"${WARMUP}s" -s "$BENCH_DIR/openid.lua" \
        "http://127.0.0.1:$SERVE_PORT/openid" ||
        die "warm-up failed: $(cat "$TMP/wrk-warmup.txt")"
    # The session lookups too, so the first measured run does not pay for a cold page cache.
    wrk_to "$TMP/wrk-warmup-session.txt" -t"$WRK_THREADS" -c16 -d"${WARMUP}s" \
        -s "$BENCH_DIR/session.lua" "http://127.0.0.1:$SERVE_PORT/v1/session" ||
        die "session warm-up failed: $(cat "$TMP/wrk-warmup-session.txt")"
    # And the Redis-backed pair (its connections to Redis, Redis's script cache).
    if [[ $REDIS == 1 ]]; then
        wrk_pair "$TMP/wrk-warmup-redis-a.txt" "$TMP/wrk-warmup-redis-b.txt" 8 "$WARMUP" ||
            die "Redis session warm-up failed: $(cat "$TMP/wrk-warmup-redis-a.txt" "$TMP/wrk-warmup-redis-b.txt")"
    fi
}

# ---------------------------------------------------------------- scenarios
# One function per scenario; add new ones here and call them from main.

scenario_openid() {
    local url="http://127.0.0.1:$SERVE_PORT/openid"
    CPU_WATCH=("wxlogin=$SERVE_PID" "mock=$MOCK_PID")
    run_wrk "POST /openid" 64 "$url" bench/openid.lua
    run_wrk "POST /openid" 512 "$url" bench/openid.lua
}

REDIS_ROW="GET /v1/session (redis, 2 inst)"

# GET /v1/session with valid tokens over the seeded stores. Per connection count: the Redis-backed
# pair (both instances at once), then the SQLite-backed service, then nginx's `return 200` driven
# by the same script (same requests, same cost to wrk). Each ratio's two runs are back to back,
# so a change in the machine's load hits both sides of a ratio alike.
scenario_session() {
    local conns nginx_pids
    nginx_pids=$(IFS=,; echo "${NGINX_WORKERS[*]}")
    for conns in 64 512; do
        if [[ $REDIS == 1 ]]; then
            CPU_WATCH=("wxlogin A=$RA_PID" "wxlogin B=$RB_PID" "redis-server=$REDIS_PID")
            run_wrk_pair "$REDIS_ROW" "$conns"
        fi
        CPU_WATCH=("wxlogin=$SERVE_PID")
        run_wrk "GET /v1/session" "$conns" "http://127.0.0.1:$SERVE_PORT/v1/session" bench/session.lua
        CPU_WATCH=()
        [[ -n $nginx_pids ]] && CPU_WATCH=("nginx=$nginx_pids")
        run_wrk "nginx return 200" "$conns" "http://127.0.0.1:$NGINX_PORT/v1/session" bench/session.lua
    done
}

# ratio A B CONNS: RPS[A@CONNS] / RPS[B@CONNS], or "" when either run failed.
ratio() {
    local a=${RPS["$1@$3"]:-} b=${RPS["$2@$3"]:-}
    if [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] && awk -v b="$b" 'BEGIN { exit !(b > 0) }'; then
        awk -v a="$a" -v b="$b" 'BEGIN { printf("%.2f", a / b) }'
    fi
}

# ratio_lines: GET /v1/session's throughput over nginx's, and the Redis pair's over SQLite's,
# per connection count.
ratio_lines() {
    local conns r
    for conns in 64 512; do
        r=$(ratio "GET /v1/session" "nginx return 200" "$conns")
        if [[ -n $r ]]; then
            awk -v r="$r" -v c="$conns" 'BEGIN {
                printf("ratio wxlogin/nginx @%s: %.2f   (goal >= 0.70%s)\n", c, r, (r >= 0.7) ? "" : ": below")
            }'
        else
            echo "ratio wxlogin/nginx @$conns: n/a (a run failed)"
        fi
    done
    [[ $REDIS == 1 ]] || return 0
    for conns in 64 512; do
        r=$(ratio "$REDIS_ROW" "GET /v1/session" "$conns")
        echo "ratio redis/sqlite @$conns: ${r:-n/a (a run failed)}"
    done
}

# ---------------------------------------------------------------- report

mock_stats() {
    curl -fsS --max-time 2 "http://127.0.0.1:$MOCK_PORT/mock/stats" 2>/dev/null || echo "(unavailable)"
}

# log_summary NAME FILE: one line (and the first lines) on a service's log, run at warn.
log_summary() {
    local n
    n=$(wc -l <"$2")
    if [[ $n -gt 0 ]]; then
        echo "$1 log: $n line(s) at warn or above; first ones:"
        head -n 5 "$2" | cut -c1-300 | sed 's/^/    /'
    else
        echo "$1 log: empty (no warnings)"
    fi
}

report() {
    echo
    printf "$ROW_FMT\n" scenario conns "req/s" "p50 ms" "p99 ms" non-2xx errors
    local r
    for r in "${ROWS[@]}"; do echo "$r"; done
    echo
    ratio_lines
    echo
    echo "store: $SESSIONS seeded sessions of $USERS users in SQLite ($(du -k "$TMP/wxlogin.db" | cut -f1) KiB);" \
        "nginx: $(nginx_workers) worker processes"
    if [[ $REDIS == 1 ]]; then
        echo "redis: $SESSIONS seeded sessions of $USERS users in a private redis-server" \
            "($(redis_cli info memory 2>/dev/null | tr -d '\r' | sed -n 's/^used_memory_human://p') used," \
            "$(redis_cli dbsize 2>/dev/null) keys); 2 wxlogin instances x $REDIS_THREADS thread(s)," \
            "SQLite-backed one: ${BENCH_SERVER_THREADS:-$(nginx_workers)} thread(s)"
    fi
    echo "mock /mock/stats: $(mock_stats)"
    log_summary serve "$TMP/serve.log"
    if [[ $REDIS == 1 ]]; then
        log_summary "serve (redis A)" "$TMP/serve-redis-a.log"
        log_summary "serve (redis B)" "$TMP/serve-redis-b.log"
    fi
    if [[ ${#CPU_LINES[@]} -gt 0 ]]; then
        echo "CPU per completed request (and cores busy over the run; wrk's includes loading its tokens):"
        for r in "${CPU_LINES[@]}"; do echo "    $r"; done
    fi
    for r in "${NOTES[@]}"; do echo "note: $r"; done
}

main() {
    [[ -x $BIN ]] || die "$BIN not found; run 'make build' first (or 'make bench')"
    command -v wrk >/dev/null || die "wrk is not installed (Debian/Ubuntu: apt-get install wrk)"
    command -v curl >/dev/null || die "curl is not installed"
    [[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive whole number"
    [[ $WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP_SECONDS must be a whole number"
    [[ $SESSIONS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SESSIONS must be a positive whole number"
    [[ $USERS =~ ^[1-9][0-9]*$ ]] || die "BENCH_USERS must be a positive whole number"
    [[ -x $PY ]] || die "$PY not found (it seeds the session store)"
    [[ -x $NGINX ]] || die "$NGINX not found (Debian: apt-get install nginx-light, or 'make deps')"
    [[ $REDIS =~ ^[01]$ ]] || die "BENCH_REDIS must be 0 or 1"
    if [[ $REDIS == 1 ]]; then
        [[ -x $REDIS_SERVER && -x $REDIS_CLI ]] || die "$REDIS_SERVER or $REDIS_CLI not found" \
            "(Debian: apt-get install redis-server; BENCH_REDIS=0 skips the Redis scenario)"
        [[ $REDIS_THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REDIS_THREADS must be a positive whole number"
    fi

    TMP=$(mktemp -d "${TMPDIR:-/tmp}/wxlogin-bench.XXXXXX")
    RUN_ID=$(printf '%x%04x%04x' "$(date +%s)" "$$" "$RANDOM")
    raise_fd_limit

    start_mock
    seed_store
    start_serve
    echo "bench: wxlogin on 127.0.0.1:$SERVE_PORT, mock on 127.0.0.1:$MOCK_PORT," \
        "$(nproc 2>/dev/null || echo '?') cores, wrk -t$WRK_THREADS, ${DURATION}s per run," \
        "fd limit $(ulimit -Sn)" >&2
    check_sessions
    start_nginx
    if [[ $REDIS == 1 ]]; then
        start_redis
        seed_redis
        start_redis_serves
        check_redis_sessions
    fi

    warm_up
    scenario_openid
    scenario_session

    report
}

main "$@"
