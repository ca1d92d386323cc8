#!/usr/bin/env bash
# bench/run.sh: load-test wxlogin against the local mock WeChat with wrk, beside a Go net/http
# peer and nginx; then count its allocations and syscalls per request. See bench/README.md.
#
#   bash bench/run.sh            (or `make bench`, which builds build/wxlogin first)
#
# Environment:
#   BENCH_SECONDS=10          duration of each measured wrk run, in seconds
#   BENCH_ROUNDS=3            rounds; each runs every scenario once, and the summary gives medians
#   BENCH_CONNS=64            connection counts of each round (e.g. "64 512")
#   BENCH_WARMUP_SECONDS=2    duration of each warm-up run (0 skips them)
#   BENCH_WRK_THREADS=2       wrk -t
#   BENCH_WRK_TIMEOUT=2s      wrk --timeout (a slower response counts as a timeout error)
#   BENCH_SERVER_THREADS=     WXLOGIN_THREADS for the service, nginx's workers, the Go peer's
#                             GOMAXPROCS (unset: the service's default, one per core)
#   BENCH_MOCK_THREADS=       --threads for the mock (unset: the mock's default)
#   BENCH_SESSIONS=100000     sessions seeded into the store for GET /v1/session
#   BENCH_USERS=5000          distinct users those sessions belong to
#   BENCH_NGINX=/usr/sbin/nginx  the nginx for the baseline (Debian's nginx-light)
#   BENCH_GO=go               the Go toolchain that builds the peer (Debian's golang-go)
#   BENCH_REDIS=1             0 skips the Redis store scenario (two instances on one Redis)
#   BENCH_METRICS=1           0 skips GET /v1/session with metrics_listen set (its cost)
#   BENCH_REDIS_SERVER=/usr/bin/redis-server  the private Redis for it (redis-cli beside it)
#   BENCH_REDIS_THREADS=1     WXLOGIN_THREADS of each of the two Redis-backed instances
#   BENCH_ALLOC_N=2000        requests per allocation count (0 skips the counts)
#   BENCH_STRACE_N=1000       requests per syscall count (0 skips the counts)
#   BENCH_KEEP_LOGS=1         keep the temp dir with the logs and raw wrk output
#   WXLOGIN_BIN=path          the binary (default <repo>/build/wxlogin); not passed to the service
#   WXLOGIN_MOCK_BIN=path     the mock WeChat (default: wxlogin-mock beside WXLOGIN_BIN)
#
# Everything listens on 127.0.0.1 only. Every process it starts (mock, services, Go peer, nginx,
# Redis, wrk, strace, the request loops) is stopped on exit, whatever happens. Nothing is written
# outside its temp dir but the peer and the allocation counter it builds into build/bench/.
set -Eeuo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$ROOT/bench
BIN=${WXLOGIN_BIN:-$ROOT/build/wxlogin}
MOCK_BIN=${WXLOGIN_MOCK_BIN:-$(dirname -- "$BIN")/wxlogin-mock}
OUT_DIR=$ROOT/build/bench # the Go peer and the allocation counter, built here
DURATION=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS_LIST=${BENCH_CONNS:-64}
WARMUP=${BENCH_WARMUP_SECONDS:-2}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_TIMEOUT=${BENCH_WRK_TIMEOUT:-2s}
APPID=wx1234567890abcdef # the mock's default app
SECRET=0123456789abcdef0123456789abcdef
SESSIONS=${BENCH_SESSIONS:-100000}
USERS=${BENCH_USERS:-5000}
NGINX=${BENCH_NGINX:-/usr/sbin/nginx}
REDIS=${BENCH_REDIS:-1}
METRICS=${BENCH_METRICS:-1}
REDIS_SERVER=${BENCH_REDIS_SERVER:-/usr/bin/redis-server}
REDIS_CLI=$(dirname -- "$REDIS_SERVER")/redis-cli
REDIS_THREADS=${BENCH_REDIS_THREADS:-1}
GO=${BENCH_GO:-go}
ALLOC_N=${BENCH_ALLOC_N:-2000}
STRACE_N=${BENCH_STRACE_N:-1000}
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
MS_PID= # the SQLite-backed service with metrics_listen set (on a copy of the seeded store)
MS_PORT=
MS_METRICS_PORT=
REDIS_PID=
REDIS_PORT=
REDIS_URL=
REDIS_TOKENS=
RA_PID= # the two Redis-backed instances, "A" and "B"
RB_PID=
RA_PORT=
RB_PORT=
WRK_PIDS=() # the two wrk processes of a Redis run
PEER_BIN=
PEER_PID= # the Go peer (bench/peers/go-openid)
PEER_PORT=
ALLOC_SO=
AC_PID= # the instance with the allocation counter preloaded
AC_PORT=
STRACE_PID=
REQ_PID= # a bench/reqloop.py run
RUN_ID=
RUN_SEQ=0
ROUND=0
ROWS=()
NOTES=()
CPU_LINES=()
ALLOC_LINES=()
SYSCALL_LINES=()
SUMMARY_LINES=() # goal lines of the allocation and syscall counts, repeated in the summary
declare -A ALLOC_PER=() # "session", "login", "openid" -> allocations per request
declare -A ALLOC_MHD=() # the same, of which libmicrohttpd's own
CPU_WATCH=()   # "label=pid[,pid...]" whose CPU time run_wrk/run_wrk_pair account per request
SERVER_PIDS=   # "pid[,pid...]": the server of the next run, for the table's CPU per request
declare -A CPU0=() CPU1=()
# Per round and row ("ROUND|NAME@CONNS"): good req/s, p99 ms, server CPU us per request.
declare -A GOOD=() P99=() SRV_US=()
declare -A SEEN_ROW=()
ROW_KEYS=() # "NAME@CONNS" in the order they first ran

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
    # strace first: it detaches from the service on SIGTERM.
    stop_proc "$STRACE_PID" strace
    STRACE_PID=
    for p in "$WRK_PID" "${WRK_PIDS[@]}" "$REQ_PID"; do
        [[ -n $p ]] || continue
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    WRK_PID=
    WRK_PIDS=()
    REQ_PID=
    # The services first, so they do not log upstream errors for a mock (or a Redis) that went away.
    stop_proc "$SERVE_PID" serve
    SERVE_PID=
    stop_proc "$MS_PID" "serve (metrics)"
    MS_PID=
    stop_proc "$RA_PID" "serve (redis A)"
    RA_PID=
    stop_proc "$RB_PID" "serve (redis B)"
    RB_PID=
    stop_proc "$AC_PID" "serve (allocation count)"
    AC_PID=
    stop_proc "$PEER_PID" "Go peer"
    PEER_PID=
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

# listen_port PID [NOT]: the TCP port PID listens on, per `ss -ltnp`, other than NOT (a second
# listener of it, e.g. metrics_listen); empty if none (yet).
listen_port() {
    ss -Hltnp 2>/dev/null |
        awk -v pat="pid=$1," -v not="${2:-}" \
            'index($0, pat) { n = split($4, a, ":"); if (a[n] != not) { print a[n]; exit } }'
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
    local args=(--listen 127.0.0.1:0)
    [[ -n ${BENCH_MOCK_THREADS:-} ]] && args+=(--threads "$BENCH_MOCK_THREADS")
    (cd "$TMP" && unset_wxlogin_env && exec "$MOCK_BIN" "${args[@]}") >"$TMP/mock.log" 2>&1 &
    MOCK_PID=$!
    MOCK_PORT=$(wait_for mock "$MOCK_PID" "$TMP/mock.log" mock_port_from_log)
    wait_for mock "$MOCK_PID" "$TMP/mock.log" \
        http_ok "http://127.0.0.1:$MOCK_PORT/mock/stats" >/dev/null
}

# launch_serve PIDVAR PORTVAR NAME LOG THREADS [VAR=VALUE...]: starts `wxlogin serve` with the
# common configuration (mock upstream, 127.0.0.1 port 0, rate limits too high to refuse,
# everything else at its default: log level info, one access line per request) plus the given settings (the store; LD_PRELOAD for the
# allocation count); THREADS empty keeps the service's default. Its log (stderr) goes to LOG,
# opened O_APPEND. Sets the globals named PIDVAR (at once, so the cleanup stops it whatever
# happens next) and PORTVAR, and returns once it answers /healthz.
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
        export WXLOGIN_SHUTDOWN_TIMEOUT_MS=2000
        # One load generator on one address logging one user in thousands of times a second is
        # what the rate limits exist to refuse: they stay on (their cost is measured) but far
        # above anything the bench sends, so none ever refuses.
        export WXLOGIN_RATE_LIMIT_ADDRESS=1000000/s WXLOGIN_RATE_LIMIT_OPENID=1000000/s
        export WXLOGIN_RATE_LIMIT_WECHAT=1000000/s
        [[ -n $threads ]] && export WXLOGIN_THREADS="$threads"
        local kv
        for kv in "$@"; do export "${kv?}"; done
        exec "$BIN" serve
    ) >>"$log" 2>&1 &
    pid_ref=$!
    if [[ ${listen##*:} == 0 ]]; then
        port_ref=$(wait_for "$name" "$pid_ref" "$log" listen_port "$pid_ref" "${LISTEN_NOT:-}")
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

# start_metrics_serve: the same service with metrics_listen set, on a copy of the seeded store
# (SQLite belongs to one process), for the cost of counting on GET /v1/session.
start_metrics_serve() {
    mkdir -p "$TMP/metrics"
    cp -- "$TMP/wxlogin.db" "$TMP/wxlogin.db.key" "$TMP/metrics/"
    MS_METRICS_PORT=$(free_port)
    LISTEN_NOT=$MS_METRICS_PORT launch_serve MS_PID MS_PORT "serve (metrics)" \
        "$TMP/serve-metrics.log" "${BENCH_SERVER_THREADS:-}" \
        "WXLOGIN_STORE=sqlite:$TMP/metrics/wxlogin.db" \
        "WXLOGIN_METRICS_LISTEN=127.0.0.1:$MS_METRICS_PORT"
    [[ $MS_PORT != "$MS_METRICS_PORT" ]] || die "the metrics instance's ports got mixed up"
}

# check_metrics_serve: a seeded token verifies there too, and its scrape counts it.
check_metrics_serve() {
    local code n
    code=$(get_session "$(head -n 1 "$TOKENS")" "$TMP/check-metrics.hdr" "$MS_PORT")
    [[ $code == 200 ]] || die "sanity check: GET /v1/session on the metrics instance answered $code"
    n=$(curl -sS --max-time 5 "http://127.0.0.1:$MS_METRICS_PORT/metrics" |
        grep -c '^wxlogin_http_requests_total{method="GET",route="/v1/session",status="200"} [1-9]' || true)
    [[ $n == 1 ]] || die "sanity check: the metrics instance's /metrics does not count GET /v1/session"
    echo "bench: sanity check passed (metrics instance: seeded token 200, counted in /metrics)" >&2
}

# ---------------------------------------------------------------- the Go peer and the counter

# go_env CMD...: CMD with the Go toolchain confined to build/bench and offline: its build cache and
# GOPATH there, no module proxy (the peer has no dependencies), no go.work, no user go/env file.
go_env() {
    env -u GOTOOLCHAIN GOENV=off GOWORK=off GO111MODULE=on GOFLAGS=-mod=mod GOPROXY=off \
        GOCACHE="$OUT_DIR/go-cache" GOPATH="$OUT_DIR/go-path" CGO_ENABLED=0 "$@"
}

# build_peer: build/bench/openidpeer from bench/peers/go-openid, when its source is newer.
build_peer() {
    local src=$BENCH_DIR/peers/go-openid
    PEER_BIN=$OUT_DIR/openidpeer
    if [[ -x $PEER_BIN && ! $src/main.go -nt $PEER_BIN && ! $src/go.mod -nt $PEER_BIN ]]; then
        return 0
    fi
    command -v "$GO" >/dev/null || die "$GO not found: the Go peer needs Debian's golang-go" \
        "(apt-get install golang-go, or 'make deps')"
    echo "bench: building the Go peer with $("$GO" version 2>/dev/null || echo "$GO") ..." >&2
    mkdir -p "$OUT_DIR"
    if ! (cd "$src" && go_env "$GO" build -o "$PEER_BIN.tmp" .) >"$TMP/go-build.log" 2>&1; then
        sed 's/^/    /' "$TMP/go-build.log" >&2
        rm -f -- "$PEER_BIN.tmp"
        die "building the Go peer failed"
    fi
    mv -f -- "$PEER_BIN.tmp" "$PEER_BIN"
}

# build_alloccount: build/bench/alloccount.so from bench/alloccount.c, when the source is newer.
build_alloccount() {
    ALLOC_SO=$OUT_DIR/alloccount.so
    [[ -f $ALLOC_SO && ! $BENCH_DIR/alloccount.c -nt $ALLOC_SO ]] && return 0
    mkdir -p "$OUT_DIR"
    if ! "${CC:-cc}" -O2 -Wall -shared -fPIC -o "$ALLOC_SO.tmp" "$BENCH_DIR/alloccount.c" -ldl \
        >"$TMP/alloccount-build.log" 2>&1; then
        sed 's/^/    /' "$TMP/alloccount-build.log" >&2
        rm -f -- "$ALLOC_SO.tmp"
        die "building the allocation counter failed"
    fi
    mv -f -- "$ALLOC_SO.tmp" "$ALLOC_SO"
}

peer_port_from_log() {
    head -n 1 "$TMP/peer.log" | sed -n 's/^127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p'
}

# start_peer: the Go peer on 127.0.0.1 port 0 (it prints the address it got first), the mock as
# its WeChat. GOMAXPROCS is BENCH_SERVER_THREADS when set (as many threads as the service's
# workers), else Go's default (one per core, like the service); no other GO* tuning from the
# caller's environment reaches it.
start_peer() {
    (
        cd "$TMP"
        unset GOGC GODEBUG GOMEMLIMIT GOMAXPROCS
        [[ -n ${BENCH_SERVER_THREADS:-} ]] && export GOMAXPROCS="$BENCH_SERVER_THREADS"
        exec "$PEER_BIN" -listen 127.0.0.1:0 -wechat-base "http://127.0.0.1:$MOCK_PORT" \
            -appid "$APPID" -secret "$SECRET"
    ) >"$TMP/peer.log" 2>&1 &
    PEER_PID=$!
    PEER_PORT=$(wait_for "Go peer" "$PEER_PID" "$TMP/peer.log" peer_port_from_log)
    if command -v ss >/dev/null; then
        [[ $(wait_for "Go peer" "$PEER_PID" "$TMP/peer.log" listen_port "$PEER_PID") == "$PEER_PORT" ]] ||
            die "the Go peer's listener is not on the port it printed ($PEER_PORT)"
    fi
}

# openid_of PORT CODE: POST /openid; prints "STATUS OPENID" (OPENID empty if none).
openid_of() {
    local body code
    body=$(curl -sS --max-time 5 -w '\n%{http_code}' -H 'Content-Type: application/json' \
        -d "{\"code\":\"$2\"}" "http://127.0.0.1:$1/openid" || true)
    code=${body##*$'\n'}
    echo "$code $(grep -o '"openid": *"[A-Za-z0-9_-]*"' <<<"$body" | grep -o '[A-Za-z0-9_-]*"$' | tr -d '"' || true)"
}

# check_peer: the peer and the service answer the same openid for two codes of one mock user, and
# the peer refuses a bad body with 400.
check_peer() {
    local a b code
    a=$(openid_of "$SERVE_PORT" "pcheck-${RUN_ID}w")
    b=$(openid_of "$PEER_PORT" "pcheck-${RUN_ID}p")
    [[ $a == "200 "?* && $a == "$b" ]] ||
        die "sanity check: POST /openid for the same user answered '$a' on wxlogin, '$b' on the Go peer"
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -d '{"code":' \
        "http://127.0.0.1:$PEER_PORT/openid" || true)
    [[ $code == 400 ]] || die "sanity check: the Go peer answered $code to a bad body, not 400"
    echo "bench: Go peer on 127.0.0.1:$PEER_PORT; sanity check passed (same openid as wxlogin," \
        "400 on a bad body)" >&2
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
    if [[ -n $(warn_lines "$TMP/serve-schema.log" | head -n 1) ]]; then
        NOTES+=("the schema-creating start of the service logged warnings; first ones:")
        while IFS= read -r l; do NOTES+=("    $l"); done < <(warn_lines "$TMP/serve-schema.log" | head -n 3 | cut -c1-300)
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
        NOTES+=("open-file limit is only $soft: runs with many connections may fail to connect")
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
        $2 == "requests" && $3 == "in" { req = $1; d = $4; sub(/,$/, "", d); dur = ms(d) / 1000 }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { non = $NF }
        /Socket errors:/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
        END { printf "RESULT requests=%d duration_s=%.2f rps=%s p50_ms=%.2f p99_ms=%.2f non2xx=%d errors=%d\n",
                     req, dur, rps, p50, p99, non, err }
    ' "$1"
}

# good_rps RESULT: answers with a 2xx status per second, (requests - non2xx - errors) / duration,
# i.e. req/s scaled by the share of good answers (or the RESULT's own good_rps, for the Redis
# pair). Socket errors are taken off too: a request that timed out may still have completed and
# been counted, so this is a lower bound.
good_rps() {
    local g
    g=$(field "$1" good_rps)
    if [[ -n $g ]]; then
        echo "$g"
        return
    fi
    awk -v r="$(field "$1" requests)" -v n="$(field "$1" non2xx)" -v e="$(field "$1" errors)" \
        -v rps="$(field "$1" rps)" \
        'BEGIN { g = r - n - e; if (g < 0) g = 0; printf("%.1f", r > 0 ? rps * g / r : 0) }'
}

ROW_FMT='%-5s %-31s %-5s %-8s %-8s %-7s %-8s %-9s %-7s %s'

add_row() {
    ROWS+=("$(printf "$ROW_FMT" "$@")")
}

# record_row NAME CONNS RESULT: the round's figures of one run, for its row in the table and the
# summary's medians.
record_row() {
    local name=$1 conns=$2 res=$3 key="$1@$2" srv good
    if [[ -z ${SEEN_ROW[$key]:-} ]]; then
        SEEN_ROW[$key]=1
        ROW_KEYS+=("$key")
    fi
    [[ -n $res ]] || {
        add_row "$ROUND" "$name" "$conns" FAILED - - - - - -
        return 0
    }
    srv=$(server_us "$(field "$res" requests)")
    good=$(good_rps "$res")
    GOOD["$ROUND|$key"]=$good
    P99["$ROUND|$key"]=$(field "$res" p99_ms)
    [[ -z $srv ]] || SRV_US["$ROUND|$key"]=$srv
    add_row "$ROUND" "$name" "$conns" "$(printf '%.0f' "$(field "$res" rps)")" \
        "$(printf '%.0f' "$good")" "$(field "$res" p50_ms)" "$(field "$res" p99_ms)" \
        "${srv:--}" "$(field "$res" non2xx)" "$(field "$res" errors)"
}

# ---- CPU accounting: where the time goes, per run. CPU_WATCH (set by the scenario) names the
# long-running processes to account ("label=pid[,pid...]"), SERVER_PIDS the server's (for the
# table); wrk's CPU is this shell's reaped children's, per `times` (so it includes wrk's start-up:
# loading the token file).

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
    CPU0[.srv]=$(cpu_ticks ${SERVER_PIDS//,/ })
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
    CPU1[.srv]=$(cpu_ticks ${SERVER_PIDS//,/ })
    times >"$TMP/times.txt"
    CPU1[.wrk]=$(children_ms)
    CPU1[.t]=$(date +%s%N)
}

# server_us REQUESTS: the server's CPU (SERVER_PIDS, user + system, all threads) over the run, in
# microseconds per request wrk counted; empty without a server or requests.
server_us() {
    local req=$1
    [[ -n $SERVER_PIDS && $req =~ ^[0-9]+$ && $req -gt 0 ]] || return 0
    awk -v t="$((${CPU1[.srv]} - ${CPU0[.srv]}))" -v hz="$CLK_TCK" -v r="$req" \
        'BEGIN { printf("%.1f", t * 1e6 / hz / r) }'
}

# cpu_line NAME CONNS REQUESTS: one line of the CPU block: per watched process and wrk, CPU
# microseconds per completed request and cores busy over the run.
cpu_line() {
    local name=$1 conns=$2 req=$3 w label ms line wall_ms
    [[ $req =~ ^[0-9]+$ && $req -gt 0 ]] || return 0
    wall_ms=$(((${CPU1[.t]} - ${CPU0[.t]}) / 1000000))
    ((wall_ms > 0)) || return 0
    line=$(printf 'r%-2s %-31s %-4s' "$ROUND" "$name" "$conns")
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
    [[ -z $PEER_PID ]] || kill -0 "$PEER_PID" 2>/dev/null ||
        die "the Go peer died during $name @$conns (log: $TMP/peer.log)"
    [[ -z $NGINX_PID ]] || kill -0 "$NGINX_PID" 2>/dev/null ||
        die "nginx died during $name @$conns (log: $TMP/nginx/error.log)"
    [[ -z $REDIS_PID ]] || kill -0 "$REDIS_PID" 2>/dev/null ||
        die "redis-server died during $name @$conns (log: $TMP/redis/redis.log)"
    [[ -z $RA_PID ]] || kill -0 "$RA_PID" 2>/dev/null ||
        die "Redis-backed instance A died during $name @$conns (log: $TMP/serve-redis-a.log)"
    [[ -z $RB_PID ]] || kill -0 "$RB_PID" 2>/dev/null ||
        die "Redis-backed instance B died during $name @$conns (log: $TMP/serve-redis-b.log)"
}

# run_wrk NAME CONNS URL [SCRIPT]: one measured wrk run; appends a row to the round's table.
# SCRIPT is a path relative to the repo root (or absolute); empty means plain GET.
run_wrk() {
    local name=$1 conns=$2 url=$3 script=${4:-}
    next_run_id
    local out="$TMP/wrk-$RUN_SEQ-$conns.txt" tag="r$ROUND $name @$conns"
    local args=(-t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" --latency)
    if [[ -n $script ]]; then
        [[ $script == /* ]] || script=$ROOT/$script
        args+=(-s "$script")
    fi
    echo "bench: round $ROUND: $name, $conns connections, ${DURATION}s ..." >&2
    cpu_start
    if ! wrk_to "$out" "${args[@]}" "$url"; then
        echo "bench: wrk failed for $name at $conns connections:" >&2
        sed 's/^/    /' "$out" >&2
        record_row "$name" "$conns" ""
        check_alive "$name" "$conns"
        return 0
    fi
    cpu_stop
    local res
    res=$(grep '^RESULT ' "$out" | tail -n 1 || true)
    [[ -n $res ]] || res=$(parse_plain "$out")
    record_row "$name" "$conns" "$res"
    local max non errs
    max=$(field "$res" max_ms)
    non=$(field "$res" non2xx)
    errs=$(field "$res" errors)
    [[ -n $max ]] && NOTES+=("$tag: p90 $(field "$res" p90_ms) ms, max $max ms, $(field "$res" requests) requests")
    if [[ ${non:-0} != 0 ]]; then
        NOTES+=("$tag: $non non-2xx responses")
        while IFS= read -r l; do NOTES+=("    $l"); done < <(grep '^NON2XX ' "$out" || true)
    fi
    if [[ ${errs:-0} != 0 ]]; then
        NOTES+=("$tag: socket errors: $(grep -o 'connect=[0-9]* read=[0-9]* write=[0-9]* timeout=[0-9]*' <<<"$res" || grep 'Socket errors' "$out")")
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
# instances, CONNS in total (half each); appends one row: req/s and good req/s summed, p50 and p99
# the worse of the two, non-2xx and errors summed. Each side's figures, and what Redis did, go to
# the notes.
run_wrk_pair() {
    local name=$1 conns=$2 half=$(($2 / 2))
    next_run_id
    local outa="$TMP/wrk-$RUN_SEQ-$conns-a.txt" outb="$TMP/wrk-$RUN_SEQ-$conns-b.txt"
    local tag="r$ROUND $name @$conns"
    echo "bench: round $ROUND: $name, $conns connections (2 x wrk -t1 -c$half), ${DURATION}s ..." >&2
    redis_cli config resetstat >/dev/null
    cpu_start
    if ! wrk_pair "$outa" "$outb" "$half" "$DURATION"; then
        echo "bench: wrk failed for $name at $conns connections:" >&2
        sed 's/^/    A: /' "$outa" >&2
        sed 's/^/    B: /' "$outb" >&2
        record_row "$name" "$conns" ""
        check_alive "$name" "$conns"
        return 0
    fi
    cpu_stop
    local ra rb res
    ra=$(grep '^RESULT ' "$outa" | tail -n 1 || true)
    rb=$(grep '^RESULT ' "$outb" | tail -n 1 || true)
    if [[ -z $ra || -z $rb ]]; then
        echo "bench: no RESULT line from wrk for $name at $conns connections" >&2
        record_row "$name" "$conns" ""
        return 0
    fi
    res=$(awk -v a="$ra" -v b="$rb" -v ga="$(good_rps "$ra")" -v gb="$(good_rps "$rb")" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        for (i in x) { split(x[i], kv, "="); A[kv[1]] = kv[2] }
        for (i in y) { split(y[i], kv, "="); B[kv[1]] = kv[2] }
        max50 = A["p50_ms"] > B["p50_ms"] ? A["p50_ms"] : B["p50_ms"]
        max99 = A["p99_ms"] > B["p99_ms"] ? A["p99_ms"] : B["p99_ms"]
        dur = A["duration_s"] > B["duration_s"] ? A["duration_s"] : B["duration_s"]
        printf "RESULT requests=%d duration_s=%.2f rps=%.1f good_rps=%.1f p50_ms=%.2f p99_ms=%.2f non2xx=%d errors=%d\n",
            A["requests"] + B["requests"], dur, A["rps"] + B["rps"], ga + gb, max50, max99,
            A["non2xx"] + B["non2xx"], A["errors"] + B["errors"]
    }')
    record_row "$name" "$conns" "$res"
    local side r out
    for side in A B; do
        if [[ $side == A ]]; then r=$ra out=$outa; else r=$rb out=$outb; fi
        NOTES+=("$tag, instance $side (wrk -t1 -c$half): $(printf '%.0f' "$(field "$r" rps)") req/s,\
 p50 $(field "$r" p50_ms) ms, p90 $(field "$r" p90_ms) ms, p99 $(field "$r" p99_ms) ms,\
 max $(field "$r" max_ms) ms, $(field "$r" requests) requests")
        if [[ $(field "$r" non2xx) != 0 ]]; then
            NOTES+=("$tag, instance $side: $(field "$r" non2xx) non-2xx responses")
            while IFS= read -r l; do NOTES+=("    $l"); done < <(grep '^NON2XX ' "$out" || true)
        fi
        if [[ $(field "$r" errors) != 0 ]]; then
            NOTES+=("$tag, instance $side: socket errors: $(grep -o \
                'connect=[0-9]* read=[0-9]* write=[0-9]* timeout=[0-9]*' <<<"$r" || true)")
        fi
    done
    local req evals
    req=$(field "$res" requests)
    cpu_line "$name" "$conns" "$req"
    # Redis's own view: EVAL calls (one per GET /v1/session) and the time each took inside Redis.
    evals=$(redis_cli info commandstats 2>/dev/null | tr -d '\r' | grep '^cmdstat_eval:' || true)
    if [[ -n $evals ]]; then
        NOTES+=("$tag: Redis $(awk -v s="$evals" -v r="$req" 'BEGIN {
            n = split(s, kv, /[:,=]/)
            for (i = 2; i < n; i += 2) v[kv[i]] = kv[i + 1]
            printf("ran %d EVAL (%.2f per counted request), %.1f us each inside Redis", v["calls"],
                   r > 0 ? v["calls"] / r : 0, v["usec_per_call"])
        }')")
    fi
    check_alive "$name" "$conns"
}

# warm_up: every server once at 16 connections before the first round (connection pools to the
# mock and to Redis, the page cache, Redis's script cache, the Go runtime's heap).
warm_up() {
    [[ $WARMUP == 0 ]] && return 0
    echo "bench: warming up (${WARMUP}s per server) ..." >&2
    local port
    for port in "$SERVE_PORT" "$PEER_PORT"; do
        next_run_id
        wrk_to "$TMP/wrk-warmup-$port.txt" -t"$WRK_THREADS" -c16 -d"${WARMUP}s" \
            -s "$BENCH_DIR/openid.lua" "http://127.0.0.1:$port/openid" ||
            die "warm-up failed: $(cat "$TMP/wrk-warmup-$port.txt")"
    done
    # The session lookups too, so the first measured run does not pay for a cold page cache.
    wrk_to "$TMP/wrk-warmup-session.txt" -t"$WRK_THREADS" -c16 -d"${WARMUP}s" \
        -s "$BENCH_DIR/session.lua" "http://127.0.0.1:$SERVE_PORT/v1/session" ||
        die "session warm-up failed: $(cat "$TMP/wrk-warmup-session.txt")"
    if [[ $METRICS == 1 ]]; then
        wrk_to "$TMP/wrk-warmup-session-metrics.txt" -t"$WRK_THREADS" -c16 -d"${WARMUP}s" \
            -s "$BENCH_DIR/session.lua" "http://127.0.0.1:$MS_PORT/v1/session" ||
            die "session warm-up (metrics) failed: $(cat "$TMP/wrk-warmup-session-metrics.txt")"
    fi
    # And the Redis-backed pair (its connections to Redis, Redis's script cache).
    if [[ $REDIS == 1 ]]; then
        wrk_pair "$TMP/wrk-warmup-redis-a.txt" "$TMP/wrk-warmup-redis-b.txt" 8 "$WARMUP" ||
            die "Redis session warm-up failed: $(cat "$TMP/wrk-warmup-redis-a.txt" "$TMP/wrk-warmup-redis-b.txt")"
    fi
}

# ---------------------------------------------------------------- scenarios
# One function per row; run_round calls them. Add new ones here.

ROW_OPENID="POST /openid (wxlogin)"
ROW_OPENID_GO="POST /openid (go)"
ROW_SESSION="GET /v1/session (wxlogin)"
ROW_NGINX="nginx return 200"
ROW_REDIS="GET /v1/session (redis, 2 inst)"
ROW_SESSION_METRICS="GET /v1/session (metrics on)"

# POST /openid: wxlogin and the Go peer, the same script, the same mock upstream.
run_openid() {
    CPU_WATCH=("wxlogin=$SERVE_PID" "mock=$MOCK_PID")
    SERVER_PIDS=$SERVE_PID
    run_wrk "$ROW_OPENID" "$1" "http://127.0.0.1:$SERVE_PORT/openid" bench/openid.lua
}

run_openid_go() {
    CPU_WATCH=("go peer=$PEER_PID" "mock=$MOCK_PID")
    SERVER_PIDS=$PEER_PID
    run_wrk "$ROW_OPENID_GO" "$1" "http://127.0.0.1:$PEER_PORT/openid" bench/openid.lua
}

# GET /v1/session with valid tokens over the seeded store, and nginx's `return 200` driven by the
# same script (same requests, same cost to wrk).
run_session() {
    CPU_WATCH=("wxlogin=$SERVE_PID")
    SERVER_PIDS=$SERVE_PID
    run_wrk "$ROW_SESSION" "$1" "http://127.0.0.1:$SERVE_PORT/v1/session" bench/session.lua
}

# The same with metrics_listen set: counting on every request, and a scrape every second during
# the run (as a Prometheus scraping this often would; it reads every worker's counters).
run_session_metrics() {
    CPU_WATCH=("wxlogin=$MS_PID")
    SERVER_PIDS=$MS_PID
    (while sleep 1; do curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$MS_METRICS_PORT/metrics"; done) &
    local scraper=$!
    run_wrk "$ROW_SESSION_METRICS" "$1" "http://127.0.0.1:$MS_PORT/v1/session" bench/session.lua
    kill "$scraper" 2>/dev/null || true
    wait "$scraper" 2>/dev/null || true
}

run_nginx() {
    SERVER_PIDS=$(IFS=,; echo "${NGINX_WORKERS[*]}")
    CPU_WATCH=()
    [[ -n $SERVER_PIDS ]] && CPU_WATCH=("nginx=$SERVER_PIDS")
    run_wrk "$ROW_NGINX" "$1" "http://127.0.0.1:$NGINX_PORT/v1/session" bench/session.lua
}

# The same GET /v1/session on the Redis-backed pair (both instances at once).
run_redis_pair() {
    CPU_WATCH=("wxlogin A=$RA_PID" "wxlogin B=$RB_PID" "redis-server=$REDIS_PID")
    SERVER_PIDS=$RA_PID,$RB_PID
    run_wrk_pair "$ROW_REDIS" "$1"
}

# run_round N: every row once per connection count. The two runs of each ratio go back to back;
# even rounds swap their order, so a drift in the machine (or in the mock, which remembers every
# code it has spent) does not always favour the same side.
run_round() {
    local conns
    ROUND=$1
    echo "bench: round $ROUND of $ROUNDS" >&2
    for conns in $CONNS_LIST; do
        if ((ROUND % 2)); then
            run_openid "$conns"
            run_openid_go "$conns"
            run_session "$conns"
            [[ $METRICS == 1 ]] && run_session_metrics "$conns"
            run_nginx "$conns"
        else
            run_openid_go "$conns"
            run_openid "$conns"
            run_nginx "$conns"
            [[ $METRICS == 1 ]] && run_session_metrics "$conns"
            run_session "$conns"
        fi
        [[ $REDIS == 1 ]] && run_redis_pair "$conns"
    done
    return 0
}

# median V...: the median of the numbers given (nothing for none).
median() {
    (($# > 0)) || return 0
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio_line LABEL ROW_A ROW_B CONNS [GOAL]: good req/s of A over B in each round, and the median
# of those per-round ratios (checked against GOAL, a minimum, when given).
ratio_line() {
    local label=$1 a="$2@$4" b="$3@$4" conns=$4 goal=${5:-} r x y m line list=()
    for ((r = 1; r <= ROUNDS; r++)); do
        x=${GOOD["$r|$a"]:-}
        y=${GOOD["$r|$b"]:-}
        [[ -n $x && -n $y ]] || continue
        awk -v y="$y" 'BEGIN { exit !(y > 0) }' || continue
        list+=("$(awk -v x="$x" -v y="$y" 'BEGIN { printf("%.2f", x / y) }')")
    done
    if ((${#list[@]} == 0)); then
        echo "ratio $label @$conns: n/a (a run failed)"
        return 0
    fi
    m=$(awk -v m="$(median "${list[@]}")" 'BEGIN { printf("%.2f", m) }')
    line="ratio $label @$conns: $m"
    [[ -z $goal ]] || line+=" (goal >= $goal: $(awk -v m="$m" -v g="$goal" 'BEGIN { print (m + 0 >= g + 0) ? "met" : "below" }'))"
    echo "$line  per round: ${list[*]}"
}

# ratio_lines: wxlogin's POST /openid over the Go peer's, its GET /v1/session over nginx's (the
# issue's goals, at 64 connections), and the Redis pair over SQLite.
ratio_lines() {
    local conns g1 g2
    for conns in $CONNS_LIST; do
        g1='' g2=''
        [[ $conns == 64 ]] && g1=1.5 g2=0.8
        ratio_line "wxlogin/go POST /openid" "$ROW_OPENID" "$ROW_OPENID_GO" "$conns" "$g1"
        ratio_line "wxlogin/nginx GET /v1/session" "$ROW_SESSION" "$ROW_NGINX" "$conns" "$g2"
        [[ $REDIS == 1 ]] && ratio_line "redis/sqlite GET /v1/session" "$ROW_REDIS" "$ROW_SESSION" "$conns"
        [[ $METRICS == 1 ]] && ratio_line "metrics on/off GET /v1/session" "$ROW_SESSION_METRICS" "$ROW_SESSION" "$conns"
    done
    return 0
}

# ---------------------------------------------------------------- allocations and syscalls per request

# reqloop PORT MODE N [ARGS...]: bench/reqloop.py, N sequential requests on one keep-alive
# connection (every answer must be 200). In the background and waited for, so a signal to this
# script runs the cleanup at once.
reqloop() {
    local rc=0
    "$PY" "$BENCH_DIR/reqloop.py" "$@" 2>>"$TMP/reqloop.log" &
    REQ_PID=$!
    wait "$REQ_PID" || rc=$?
    REQ_PID=
    if ((rc != 0)); then
        tail -n 3 "$TMP/reqloop.log" | sed 's/^/    /' >&2
        die "request loop failed: $2 on port $1"
    fi
}

# warm_one PORT TOKEN CODE_PREFIX: a few hundred requests of each kind before counting: the token
# into the session cache, the connections to the mock, SQLite's page and statement caches.
warm_one() {
    reqloop "$1" session 200 --token "$2"
    reqloop "$1" login 100 --code-prefix "$3-wl-"
    reqloop "$1" openid 100 --code-prefix "$3-wo-"
}

# alloc_count: the counting instance's allocation counts so far, "<all> <libmicrohttpd's>":
# SIGUSR2 makes alloccount.so write "ALLOCMHD <n>" and "ALLOCCOUNT <n>" to its stderr, i.e. its log.
alloc_count() {
    local log=$TMP/serve-alloc.log before i n m
    before=$(grep -c '^ALLOCCOUNT ' "$log" || true)
    kill -USR2 "$AC_PID"
    for ((i = 0; i < 50; i++)); do
        n=$(awk -v k="$((before + 1))" '/^ALLOCCOUNT [0-9]+$/ && ++c == k { print $2; exit }' "$log")
        if [[ -n $n ]]; then
            m=$(awk -v k="$((before + 1))" '/^ALLOCMHD [0-9]+$/ && ++c == k { print $2; exit }' "$log")
            echo "$n ${m:-0}"
            return 0
        fi
        sleep 0.1
    done
    die "the allocation counter did not answer SIGUSR2 (log: $log)"
}

# alloc_per LABEL MODE ARGS...: allocations per request over ALLOC_N requests of MODE.
alloc_per() {
    local label=$1 mode=$2 c0 c1 m0 m1 per mhd
    shift 2
    read -r c0 m0 <<<"$(alloc_count)"
    reqloop "$AC_PORT" "$mode" "$ALLOC_N" "$@"
    read -r c1 m1 <<<"$(alloc_count)"
    per=$(awk -v a="$c0" -v b="$c1" -v n="$ALLOC_N" 'BEGIN { printf("%.1f", (b - a) / n) }')
    mhd=$(awk -v a="$m0" -v b="$m1" -v n="$ALLOC_N" 'BEGIN { printf("%.1f", (b - a) / n) }')
    ALLOC_LINES+=("$(printf '%-24s %7s per request  (%d over %d requests; libmicrohttpd %s per request, the rest %s)' \
        "$label" "$per" "$((c1 - c0))" "$ALLOC_N" "$mhd" \
        "$(awk -v a="$per" -v b="$mhd" 'BEGIN { printf("%.1f", a - b) }')")")
    ALLOC_PER[$mode]=$per
    ALLOC_MHD[$mode]=$mhd
}

# measure_allocs: a separate instance at the default configuration with the counter preloaded,
# on the same mock, with its own store; ALLOC_N requests of each kind, counted before and after.
measure_allocs() {
    ((ALLOC_N > 0)) || return 0
    echo "bench: allocations: a wxlogin instance with alloccount.so preloaded," \
        "$ALLOC_N requests per count ..." >&2
    mkdir -p "$TMP/alloc"
    launch_serve AC_PID AC_PORT "serve (allocation count)" "$TMP/serve-alloc.log" \
        "${BENCH_SERVER_THREADS:-}" "WXLOGIN_STORE=sqlite:$TMP/alloc/wxlogin.db" "LD_PRELOAD=$ALLOC_SO"
    # Without the counter loaded, SIGUSR2 would kill it.
    grep -q 'alloccount\.so' "/proc/$AC_PID/maps" ||
        die "alloccount.so is not loaded in the counting instance (log: $TMP/serve-alloc.log)"
    local token c0 c1 m0 m1
    token=$(login_token "$AC_PORT" "alloc-${RUN_ID}-t")
    warm_one "$AC_PORT" "$token" "alloc-$RUN_ID"
    alloc_per "cached GET /v1/session" session --token "$token"
    alloc_per "POST /v1/login" login --code-prefix "alloc-$RUN_ID-l-"
    alloc_per "POST /openid" openid --code-prefix "alloc-$RUN_ID-o-"
    read -r c0 m0 <<<"$(alloc_count)"
    sleep 1
    read -r c1 m1 <<<"$(alloc_count)"
    ALLOC_LINES+=("$(printf '%-24s %7s in 1 s without requests' idle "$((c1 - c0))")")
    local m=${ALLOC_PER[session]}
    SUMMARY_LINES+=("allocations per cached GET /v1/session: $m (goal <= 8: $(awk -v m="$m" \
        'BEGIN { print (m + 0 <= 8) ? "met" : "below" }'); libmicrohttpd's own: ${ALLOC_MHD[session]}, wxlogin's: $(awk -v a="$m" -v b="${ALLOC_MHD[session]}" 'BEGIN { printf("%.1f", a - b) }'))")
    SUMMARY_LINES+=("allocations per POST /v1/login: ${ALLOC_PER[login]}, per POST /openid: ${ALLOC_PER[openid]}")
    stop_proc "$AC_PID" "serve (allocation count)"
    AC_PID=
}

# strace_start OUT: strace -f -c on the SQLite-backed service (-p with -f: every thread); returns
# once it has attached to all of them ("Process N attached with T threads", or one line per
# thread), non-zero if it could not.
strace_start() {
    local out=$1 ntask i
    ntask=$(find "/proc/$SERVE_PID/task" -mindepth 1 -maxdepth 1 | wc -l)
    strace -f -c -U calls,name -S calls -o "$out" -p "$SERVE_PID" 2>"$out.err" &
    STRACE_PID=$!
    for ((i = 0; i < 100; i++)); do
        kill -0 "$STRACE_PID" 2>/dev/null || break
        grep -Eq " attached with [0-9]+ threads$" "$out.err" && return 0
        (($(grep -c ' attached$' "$out.err" || true) >= ntask)) && return 0
        sleep 0.1
    done
    strace_stop
    return 1
}

# strace_stop: SIGINT, as at a terminal: strace detaches and writes its summary.
strace_stop() {
    local i
    [[ -n $STRACE_PID ]] || return 0
    kill -INT "$STRACE_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$STRACE_PID" 2>/dev/null || break
        sleep 0.1
    done
    stop_proc "$STRACE_PID" strace # reaps it; SIGTERM/SIGKILL only if it is still running
    STRACE_PID=
}

STAT_CALLS='^(fcntl|fcntl64|fstat|fstat64|stat|stat64|lstat|lstat64|newfstatat|fstatat64|statx)$'

# syscalls_per LABEL MODE ARGS...: the service's syscalls over STRACE_N requests of MODE, per
# request: the total, each syscall made at least 0.05 times per request, and whether a fcntl or
# stat family call is made per request (at least 0.5 times).
syscalls_per() {
    local label=$1 mode=$2 out=$TMP/strace-$2.txt
    shift 2
    if ! strace_start "$out"; then
        SYSCALL_LINES+=("skipped: strace could not attach to the service: $(head -n 1 "$out.err" | cut -c1-200)")
        return 1
    fi
    reqloop "$SERVE_PORT" "$mode" "$STRACE_N" "$@"
    strace_stop
    kill -0 "$SERVE_PID" 2>/dev/null || die "the service died under strace (log: $TMP/serve.log)"
    local res
    res=$(awk -v n="$STRACE_N" -v label="$label" -v stat="$STAT_CALLS" '
        NF == 2 && $1 ~ /^[0-9]+$/ && $2 != "total" { calls[++k] = $1; name[k] = $2; total += $1 }
        END {
            printf("%-24s %6.1f syscalls per request:", label, total / n)
            for (i = 1; i <= k; i++)
                if (calls[i] / n >= 0.05) printf(" %s %.2f", name[i], calls[i] / n)
            printf("\n")
            fs = ""
            for (i = 1; i <= k; i++)
                if (name[i] ~ stat && calls[i] / n >= 0.5) fs = fs sprintf(" %s %.2f", name[i], calls[i] / n)
            if (fs == "") printf("fcntl/stat per request, %s: none (goal: none: met)\n", label)
            else printf("fcntl/stat per request, %s:%s (goal: none: not met)\n", label, fs)
        }' "$out")
    SYSCALL_LINES+=("$(head -n 1 <<<"$res")")
    SUMMARY_LINES+=("$(tail -n 1 <<<"$res")")
}

# measure_syscalls: strace on the SQLite-backed service (default configuration, no preload), over
# STRACE_N requests of each kind on one connection. strace slows every syscall down; only the
# counts are reported.
measure_syscalls() {
    ((STRACE_N > 0)) || return 0
    if ! command -v strace >/dev/null; then
        SYSCALL_LINES+=("skipped: strace is not installed (Debian: apt-get install strace)")
        return 0
    fi
    echo "bench: syscalls: strace -f -c on the service, $STRACE_N requests per count ..." >&2
    local token
    token=$(login_token "$SERVE_PORT" "strace-${RUN_ID}-t")
    warm_one "$SERVE_PORT" "$token" "strace-$RUN_ID"
    syscalls_per "cached GET /v1/session" session --token "$token" || return 0
    syscalls_per "POST /v1/login" login --code-prefix "strace-$RUN_ID-l-" || return 0
    syscalls_per "POST /openid" openid --code-prefix "strace-$RUN_ID-o-" || return 0
}

# ---------------------------------------------------------------- report

mock_stats() {
    curl -fsS --max-time 2 "http://127.0.0.1:$MOCK_PORT/mock/stats" 2>/dev/null || echo "(unavailable)"
}

# warn_lines FILE: a service log's lines at warn or error (JSON "level"), and any line that is not
# a JSON log line (a library or the loader writing to stderr), except the counter's.
warn_lines() {
    awk '/^ALLOC(COUNT|MHD) [0-9]+$/ { next }
         /^\{/ { if ($0 ~ /"level": *"(warn|error)"/) print; next }
         NF { print }' "$1" 2>/dev/null || true
}

# log_summary NAME FILE: one line (and the first warnings) on a service's log. At the default
# level (info) it has a line per request, so only its warn and error lines are shown.
log_summary() {
    local n w
    n=$(wc -l <"$2")
    w=$(warn_lines "$2" | wc -l)
    if ((w > 0)); then
        echo "$1 log: $n lines, $w at warn or error; first ones:"
        warn_lines "$2" | head -n 5 | cut -c1-300 | sed 's/^/    /'
    else
        echo "$1 log: $n lines, none at warn or error"
    fi
}

SUM_FMT='%-31s %-5s %-10s %-8s %s'

# summary: per row, the median over the rounds of good req/s, p99 and server CPU per request; the
# ratios; the allocation and syscall goals.
summary() {
    local key r vg vp vs
    local -a g p s
    echo "summary: median of $ROUNDS round(s), ${DURATION}s per run; good req/s = 2xx answers per" \
        "second, server CPU = the server process(es)' user + system time per request"
    printf "$SUM_FMT\n" scenario conns "good req/s" "p99 ms" "server CPU us/req"
    for key in "${ROW_KEYS[@]}"; do
        g=() p=() s=()
        for ((r = 1; r <= ROUNDS; r++)); do
            [[ -n ${GOOD["$r|$key"]:-} ]] && g+=("${GOOD["$r|$key"]}")
            [[ -n ${P99["$r|$key"]:-} ]] && p+=("${P99["$r|$key"]}")
            [[ -n ${SRV_US["$r|$key"]:-} ]] && s+=("${SRV_US["$r|$key"]}")
        done
        vg=$(median "${g[@]}")
        vp=$(median "${p[@]}")
        vs=$(median "${s[@]}")
        printf "$SUM_FMT\n" "${key%@*}" "${key##*@}" "$([[ -n $vg ]] && printf '%.0f' "$vg" || echo n/a)" \
            "$([[ -n $vp ]] && printf '%.2f' "$vp" || echo n/a)" \
            "$([[ -n $vs ]] && printf '%.1f' "$vs" || echo n/a)"
    done
    echo
    ratio_lines
    if ((${#SUMMARY_LINES[@]} > 0)); then
        echo
        for r in "${SUMMARY_LINES[@]}"; do echo "$r"; done
    fi
    return 0
}

report() {
    echo
    echo "every run (good/s: 2xx answers per second; srv us: the server's CPU per request, in us):"
    printf "$ROW_FMT\n" round scenario conns "req/s" "good/s" "p50 ms" "p99 ms" "srv us" non-2xx errors
    local r
    for r in "${ROWS[@]}"; do echo "$r"; done
    echo
    echo "store: $SESSIONS seeded sessions of $USERS users in SQLite ($(du -k "$TMP/wxlogin.db" | cut -f1) KiB);" \
        "nginx: $(nginx_workers) worker processes; Go peer built with" \
        "$(go_env "$GO" version "$PEER_BIN" 2>/dev/null | awk '{ print $2 }' | grep . || echo '?')," \
        "GOMAXPROCS" \
        "${BENCH_SERVER_THREADS:-default (cores)}"
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
    [[ -f $TMP/serve-alloc.log ]] && log_summary "serve (allocation count)" "$TMP/serve-alloc.log"
    if [[ $(wc -l <"$TMP/peer.log") -gt 1 ]]; then
        echo "Go peer log: $(($(wc -l <"$TMP/peer.log") - 1)) line(s) after its address; first ones:"
        tail -n +2 "$TMP/peer.log" | head -n 5 | cut -c1-300 | sed 's/^/    /'
    else
        echo "Go peer log: empty but for its address"
    fi
    if [[ ${#CPU_LINES[@]} -gt 0 ]]; then
        echo "CPU per completed request (and cores busy over the run; wrk's includes loading its tokens):"
        for r in "${CPU_LINES[@]}"; do echo "    $r"; done
    fi
    for r in "${NOTES[@]}"; do echo "note: $r"; done
    if ((ALLOC_N > 0)); then
        echo
        echo "heap allocations per request (malloc, calloc, realloc, *memalign, *valloc calls; LD_PRELOAD" \
            "counter; one keep-alive connection; default configuration):"
        for r in "${ALLOC_LINES[@]}"; do echo "    $r"; done
    fi
    if ((STRACE_N > 0)); then
        echo
        echo "syscalls per request (strace -f -c on the service, all threads, $STRACE_N sequential" \
            "requests on one keep-alive connection):"
        for r in "${SYSCALL_LINES[@]}"; do echo "    $r"; done
    fi
    echo
    summary
}

main() {
    [[ -x $BIN ]] || die "$BIN not found; run 'make build' first (or 'make bench')"
    [[ -x $MOCK_BIN ]] || die "$MOCK_BIN not found; run 'make build' first (or 'make bench')"
    command -v wrk >/dev/null || die "wrk is not installed (Debian/Ubuntu: apt-get install wrk)"
    command -v curl >/dev/null || die "curl is not installed"
    [[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive whole number"
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive whole number"
    [[ $CONNS_LIST =~ ^[[:space:]]*[1-9][0-9]*([[:space:]]+[1-9][0-9]*)*[[:space:]]*$ ]] ||
        die "BENCH_CONNS must be connection counts separated by spaces, e.g. \"64 512\""
    [[ $WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP_SECONDS must be a whole number"
    [[ $SESSIONS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SESSIONS must be a positive whole number"
    [[ $USERS =~ ^[1-9][0-9]*$ ]] || die "BENCH_USERS must be a positive whole number"
    [[ $ALLOC_N =~ ^[0-9]+$ ]] || die "BENCH_ALLOC_N must be a whole number"
    [[ $STRACE_N =~ ^[0-9]+$ ]] || die "BENCH_STRACE_N must be a whole number"
    [[ -x $PY ]] || die "$PY not found (it seeds the session store)"
    [[ -x $NGINX ]] || die "$NGINX not found (Debian: apt-get install nginx-light, or 'make deps')"
    [[ $REDIS =~ ^[01]$ ]] || die "BENCH_REDIS must be 0 or 1"
    [[ $METRICS =~ ^[01]$ ]] || die "BENCH_METRICS must be 0 or 1"
    if [[ $REDIS == 1 ]]; then
        [[ -x $REDIS_SERVER && -x $REDIS_CLI ]] || die "$REDIS_SERVER or $REDIS_CLI not found" \
            "(Debian: apt-get install redis-server; BENCH_REDIS=0 skips the Redis scenario)"
        [[ $REDIS_THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REDIS_THREADS must be a positive whole number"
        local c
        for c in $CONNS_LIST; do
            ((c >= 2)) || die "BENCH_CONNS: the Redis pair needs at least 2 connections (1 per instance)"
        done
    fi
    # LD_PRELOAD splits its list at spaces and colons.
    [[ $ALLOC_N == 0 || $OUT_DIR != *[[:space:]:]* ]] ||
        die "the allocation counter cannot be preloaded from $OUT_DIR (a space or ':' in the path);" \
            "BENCH_ALLOC_N=0 skips it"

    TMP=$(mktemp -d "${TMPDIR:-/tmp}/wxlogin-bench.XXXXXX")
    RUN_ID=$(printf '%x%04x%04x' "$(date +%s)" "$$" "$RANDOM")
    raise_fd_limit
    build_peer
    ((ALLOC_N == 0)) || build_alloccount

    start_mock
    seed_store
    [[ $METRICS == 1 ]] && start_metrics_serve
    start_serve
    echo "bench: wxlogin on 127.0.0.1:$SERVE_PORT, mock on 127.0.0.1:$MOCK_PORT," \
        "$(nproc 2>/dev/null || echo '?') cores, wrk -t$WRK_THREADS, ${DURATION}s per run," \
        "$ROUNDS round(s) at $CONNS_LIST connections, fd limit $(ulimit -Sn)" >&2
    check_sessions
    [[ $METRICS == 1 ]] && check_metrics_serve
    start_peer
    check_peer
    start_nginx
    if [[ $REDIS == 1 ]]; then
        start_redis
        seed_redis
        start_redis_serves
        check_redis_sessions
    fi

    warm_up
    local r
    for ((r = 1; r <= ROUNDS; r++)); do
        run_round "$r"
    done
    measure_allocs
    measure_syscalls

    report
}

main "$@"
