#!/usr/bin/env bash
# `make run`: starts wxlogin. With no app credentials configured (no appid in
# wxlogin.conf and no WXLOGIN_APPID in the environment) it also starts
# `wxlogin-mock` (the local WeChat, its own program) and points the service at
# it, so everything works offline.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/wxlogin
MOCK_BIN=build/wxlogin-mock
CONF=()
[ -f wxlogin.conf ] && CONF=(--config wxlogin.conf)

have_appid=
[ -n "${WXLOGIN_APPID:-}" ] && have_appid=1
[ -f wxlogin.conf ] && grep -Eq '^[[:space:]]*appid[[:space:]]*=' wxlogin.conf && have_appid=1

if [ -z "$have_appid" ]; then
    MOCK_LISTEN=${MOCK_LISTEN:-127.0.0.1:2021}
    "$MOCK_BIN" --listen "$MOCK_LISTEN" &
    MOCK_PID=$!
    trap 'kill $MOCK_PID 2>/dev/null || true' EXIT
    export WXLOGIN_APPID=wx1234567890abcdef
    export WXLOGIN_SECRET=0123456789abcdef0123456789abcdef
    export WXLOGIN_WECHAT_BASE="http://$MOCK_LISTEN"
    export WXLOGIN_LOG_FORMAT=${WXLOGIN_LOG_FORMAT:-text}
    LISTEN=${WXLOGIN_LISTEN:-127.0.0.1:2020}
    cat <<MSG

  No app credentials configured: using the local mock WeChat (wxlogin-mock) at $MOCK_LISTEN.
  Log in as user "alice" (every code is single use; change the suffix to log in again):

    curl -s -X POST http://$LISTEN/openid -d '{"code":"alice-'\$RANDOM'"}'

  Mock codes can make WeChat fail on purpose (e.g. "busy2_alice-1", "err40029_x"):
  see docs/mock.md. Stop with Ctrl-C.

MSG
    "$BIN" serve "${CONF[@]}" &
    SERVE_PID=$!
    trap 'kill $SERVE_PID $MOCK_PID 2>/dev/null || true' EXIT INT TERM
    wait $SERVE_PID
else
    exec "$BIN" serve "${CONF[@]}"
fi
