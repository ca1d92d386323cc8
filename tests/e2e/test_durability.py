"""Faults and durability under load (issue 14): nothing acknowledged is lost, nothing hangs.

- kill -9 under load: 50 clients log in (`POST /v1/login`) for a few seconds, every token
  answered 200 is recorded, wxlogin is SIGKILLed mid-load and started again on the same store,
  and every acknowledged token must still verify (`GET /v1/session` 200). Rounds on SQLite, on
  Redis (AOF, `appendfsync everysec`) killing wxlogin, and killing redis-server itself
  (`everysec`, then `always`).
- Redis frozen (SIGSTOP) under load: 503 `store_unavailable` within `store_timeout_ms`, then
  SIGKILL + restart on the same AOF: recovery without restarting wxlogin, nothing lost.
- Chaos upstream (test_chaos.py): faulty WeChat answers under load, the mock killed mid-load.

Every round prints its figures (`pytest -s` shows them) and puts them in its assertion
messages. Time is bounded (loadgen.py): LOAD_S seconds of load per round and ROUNDS rounds per
kind, fewer in sanitizer builds; `WXLOGIN_DURABILITY_LOAD_S=10` gives the issue's 10 s rounds.

What "lost" may mean is what docs/operations.md promises: SQLite answers a login after its
commit (WAL, synchronous=NORMAL: survives the process, not a power loss), so nothing; Redis
answers after write(2) of its AOF, except that with `everysec` it postpones that write for up
to 2 s while a background fsync is still running (src/aof.c, flushAppendOnlyFile): a Redis crash
may then lose logins acknowledged in the last seconds before it, never older ones. With
`always` nothing.
"""

import os
import random
import signal
import time

import pytest

from conftest import new_code, request, wait_until
from loadgen import (CLIENTS, LOAD_S, NO_LIMITS, ROUNDS, SLACK_S, Load, histogram, kill9,
                     login_and_session_ok, run_for, stop_loads, verify)  # noqa: F401 (fixture)
from test_redis import MASTER_KEY, REDIS_SERVER, RedisServer, redis_env

# With appendfsync everysec Redis postpones its AOF write(2) while a background fsync runs, "for
# a couple of seconds" (less than 2 s by its clock of whole seconds, so under 3 s of real time),
# and answers clients meanwhile: only logins acknowledged that recently may die with Redis.
EVERYSEC_LOSS_WINDOW_S = 3.0


def codes():
    """Clean codes WeChat answers in 10 ms (the mock's delay10): the Python clients are slower
    than wxlogin, so with an instant WeChat most of the 50 answers would be already written and
    waiting for a client when the kill comes; with a real exchange's latency, requests are in
    flight in wxlogin at the kill, as in production."""
    return new_code("dura", "delay10"), None


def sample(rng, items, n):
    return items if len(items) <= n else rng.sample(items, n)


def report(kind, rounds):
    lines = [f"{kind} round {r['round']}: {r['acked']} acknowledged, {r['lost']} lost"
             f" ({r['in_flight']} in flight at the kill, outcome unknown; {r.get('extra', '')})"
             for r in rounds]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Redis with an append-only file
# --------------------------------------------------------------------------

@pytest.fixture
def aof_redis(tmp_path):
    if not os.path.exists(REDIS_SERVER):
        pytest.fail(f"{REDIS_SERVER} not found: run scripts/install-deps.sh", pytrace=False)
    started = []

    def make(fsync):
        # appendonly yes: a start() after kill9() replays the AOF (tests/harness)
        r = RedisServer(tmp_path / f"redis-{fsync}-{len(started)}", appendfsync=fsync)
        started.append(r)
        return r.start()

    yield make
    for r in started:
        r.stop()


def assert_redis_loss_allowed(fsync, lost_acks, kill_t, figures):
    """Lost logins a Redis crash may cost (module docstring): none with `always`; with
    `everysec`, only some acknowledged in the last EVERYSEC_LOSS_WINDOW_S before the crash."""
    if fsync == "always":
        assert not lost_acks, f"appendfsync always lost {len(lost_acks)} acknowledged " \
                              f"login(s):\n{figures}"
        return
    old = [kill_t - t for _, t in lost_acks if kill_t - t > EVERYSEC_LOSS_WINDOW_S]
    assert not old, (f"{len(old)} login(s) acknowledged more than {EVERYSEC_LOSS_WINDOW_S} s "
                     f"before Redis died are lost (up to {max(old):.1f} s before):\n{figures}")


# --------------------------------------------------------------------------
# kill -9 wxlogin under load
# --------------------------------------------------------------------------

def kill_rounds(procs, kind, start_serve):
    """ROUNDS times: load for LOAD_S, SIGKILL wxlogin mid-load, start it again on the same
    store, and verify this round's acknowledged tokens and a sample of the earlier rounds'."""
    rng = random.Random()
    rounds, earlier = [], []
    s = start_serve()
    for n in range(1, ROUNDS + 1):
        load = run_for(Load(s.port, codes), LOAD_S + rng.uniform(0, 0.25))
        kill_t = time.monotonic()
        kill9(s)
        load.stop()
        acked = [tok for tok, _ in load.acked()]
        in_flight = sum(1 for o in load.outcomes if o.status is None and o.t0 < kill_t)
        bad = [o for o in load.outcomes if o.status not in (200, None)]
        t_restart = time.monotonic()
        s = start_serve()
        restart_s = time.monotonic() - t_restart
        t_verify = time.monotonic()
        old = sample(rng, earlier, 1000)
        lost, unknown = verify(s.port, acked + old)
        verify_s = time.monotonic() - t_verify
        rounds.append({"round": n, "acked": len(acked), "lost": len(lost),
                       "in_flight": in_flight,
                       "extra": f"{len(old)} of earlier rounds rechecked; restart "
                                f"{restart_s:.2f} s, verify {verify_s:.1f} s"})
        print(f"\n{report(kind, rounds[-1:])}", flush=True)
        figures = report(kind, rounds)
        assert not bad, f"answers other than 200 before the kill: " \
                        f"{[(o.status, o.body) for o in bad[:5]]}\n{figures}"
        assert len(acked) >= 50, f"too few logins to mean anything:\n{figures}"
        assert not unknown, f"{len(unknown)} tokens neither verified nor refused:\n{figures}"
        assert not lost, f"{len(lost)} acknowledged session(s) lost after kill -9:\n{figures}"
        earlier += acked
    assert s.alive()
    # A kill can land when every answer is written and waits for its client (the clients are
    # slower than wxlogin); not in every round.
    assert sum(r["in_flight"] for r in rounds) > 0, \
        f"no kill hit requests in flight:\n{report(kind, rounds)}"
    return rounds


def test_kill9_under_load_sqlite(procs, tmp_path):
    """A 200 from /v1/login is committed: SIGKILL mid-load loses none of them (WAL recovery on
    restart), round after round on the same database."""
    mock = procs.mock()
    env = {"WXLOGIN_STORE": f"sqlite:{tmp_path / 'wxlogin.db'}", "WXLOGIN_MASTER_KEY": MASTER_KEY,
           **NO_LIMITS}
    kill_rounds(procs, "sqlite, wxlogin killed", lambda: procs.serve(mock=mock, env=env))


def test_kill9_under_load_redis(procs, aof_redis):
    """Killing wxlogin loses no login Redis was told about: a 200 comes after Redis answered."""
    rd = aof_redis("everysec")
    mock = procs.mock()
    env = redis_env(rd.url(0), **NO_LIMITS)
    kill_rounds(procs, "redis everysec, wxlogin killed", lambda: procs.serve(mock=mock, env=env))
    assert rd.popen.poll() is None


# --------------------------------------------------------------------------
# kill -9 Redis under load
# --------------------------------------------------------------------------

STORE_TIMEOUT_MS = 300
# docs/operations.md: each worker reconnects by itself, 100 ms doubling to 2 s after a failure
RECOVERY_BOUND_S = 2.0 + STORE_TIMEOUT_MS / 1000 + SLACK_S


def wait_recovered(s, timeout=10.0):
    """Seconds until /readyz and logins on every worker work again (None: they did not)."""
    t0 = time.monotonic()
    ok = wait_until(lambda: request(s.port, "GET", "/readyz", timeout=10).status == 200
                    and login_and_session_ok(s.port), timeout=timeout, interval=0.05)
    return round(time.monotonic() - t0, 2) if ok else None


def redis_serve(procs, rd):
    return procs.serve(mock=procs.mock(),
                       env=redis_env(rd.url(0), WXLOGIN_STORE_TIMEOUT_MS=STORE_TIMEOUT_MS,
                                     **NO_LIMITS))


@pytest.mark.parametrize("fsync,rounds", [("everysec", ROUNDS), ("always", 1)])
def test_redis_killed_under_load(procs, aof_redis, fsync, rounds):
    """SIGKILL redis-server mid-load and restart it on its AOF: wxlogin answers 503 at once
    while it is gone, serves again by itself (same process), and the acknowledged sessions are
    there (module docstring: what `everysec` may cost)."""
    rd = aof_redis(fsync)
    s = redis_serve(procs, rd)
    kind = f"redis {fsync}, redis-server killed"
    rng = random.Random()
    results, earlier = [], []
    for n in range(1, rounds + 1):
        load = run_for(Load(s.port, codes), LOAD_S + rng.uniform(0, 0.25))
        kill_t = time.monotonic()
        rd.kill9()
        time.sleep(0.5)  # the load goes on: answers while Redis is gone
        load.stop()
        acks = load.acked()
        gone = [o for o in load.outcomes if o.t0 > kill_t + 0.05]
        rd.start()
        recovery = wait_recovered(s)
        old = sample(rng, earlier, 1000)
        lost, unknown = verify(s.port, [tok for tok, _ in acks] + old)
        lost_acks = [(tok, t) for tok, t in acks if tok in set(lost)]
        worst = max((o.latency for o in gone), default=0.0)
        in_flight = sum(1 for o in load.outcomes if o.t0 < kill_t < o.t1 and o.status != 200)
        results.append({"round": n, "acked": len(acks), "lost": len(lost), "in_flight": in_flight,
                        "extra": f"{len(old)} of earlier rounds rechecked; while Redis was gone "
                                 f"{histogram(gone)}, slowest {worst * 1000:.0f} ms; served "
                                 f"again {recovery} s after its restart; lost ones acknowledged "
                                 f"{[round(kill_t - t, 2) for _, t in lost_acks]} s before the "
                                 f"kill"})
        print(f"\n{report(kind, results[-1:])}", flush=True)
        figures = report(kind, results)
        assert gone and set(histogram(gone)) == {(503, "store_unavailable")}, \
            f"answers while Redis was gone:\n{figures}"
        assert worst < STORE_TIMEOUT_MS / 1000 + SLACK_S, \
            f"an answer took {worst:.2f} s with Redis gone\n{figures}"
        assert recovery is not None and recovery < RECOVERY_BOUND_S, \
            f"not serving again within {RECOVERY_BOUND_S:.1f} s of Redis's restart\n{figures}"
        assert s.alive()
        assert not unknown, f"{len(unknown)} tokens neither verified nor refused:\n{figures}"
        assert not set(lost) & set(old), f"earlier rounds' sessions lost:\n{figures}"
        assert_redis_loss_allowed(fsync, lost_acks, kill_t, figures)
        earlier += [tok for tok, _ in acks if tok not in set(lost)]


# --------------------------------------------------------------------------
# Redis frozen under load
# --------------------------------------------------------------------------

def test_redis_frozen_under_load_answers_503_in_time_and_recovers(procs, aof_redis):
    """SIGSTOP Redis mid-load: every answer comes within store_timeout_ms (+ slack) of the freeze
    or of its request, 503 store_unavailable for what started after the freeze, /readyz 503;
    then SIGKILL the frozen Redis and restart it on its AOF: wxlogin serves again by itself and
    the sessions acknowledged before the freeze verify."""
    rd = aof_redis("everysec")
    s = redis_serve(procs, rd)
    limit = STORE_TIMEOUT_MS / 1000 + SLACK_S
    load = run_for(Load(s.port, codes), LOAD_S)
    stop_t = time.monotonic()
    rd.pause()
    time.sleep(1.0)
    t0 = time.monotonic()
    ready = request(s.port, "GET", "/readyz", timeout=10)
    ready_s = time.monotonic() - t0
    time.sleep(0.5)
    load.stop()
    frozen_s = time.monotonic() - stop_t
    rd.kill9()
    rd.start()
    recovery = wait_recovered(s)
    acks = load.acked()
    lost, unknown = verify(s.port, [tok for tok, _ in acks])
    lost_acks = [(tok, t) for tok, t in acks if tok in set(lost)]

    answered_during = [o for o in load.outcomes if o.t1 > stop_t]
    started_during = [o for o in answered_during if o.t0 > stop_t + 0.05]
    lat = sorted(o.latency for o in started_during) or [0.0]
    late = [o for o in answered_during if o.t1 - max(o.t0, stop_t) > limit]
    figures = (f"Redis frozen {frozen_s:.1f} s under {CLIENTS} clients: {len(started_during)} "
               f"requests started meanwhile: {histogram(started_during)}; latency p50 "
               f"{lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms "
               f"(store_timeout_ms {STORE_TIMEOUT_MS}); /readyz {ready.status} in "
               f"{ready_s * 1000:.0f} ms; served again {recovery} s after the SIGKILL and restart; "
               f"{len(acks)} acknowledged, {len(lost)} lost (acknowledged "
               f"{[round(stop_t - t, 2) for _, t in lost_acks]} s before the freeze)")
    print(f"\n{figures}", flush=True)
    assert started_during and set(histogram(started_during)) == {(503, "store_unavailable")}, \
        figures
    assert not late, (f"{len(late)} answers came more than {limit:.1f} s after the freeze or "
                      f"their request, e.g. {[(o.status, round(o.latency, 2)) for o in late[:5]]}"
                      f"\n{figures}")
    assert ready.status == 503 and ready_s < limit, figures
    assert recovery is not None and recovery < RECOVERY_BOUND_S, \
        f"not serving again within {RECOVERY_BOUND_S:.1f} s of Redis's restart\n{figures}"
    assert s.alive()
    assert not unknown, f"{len(unknown)} tokens neither verified nor refused:\n{figures}"
    # nothing can be acknowledged while Redis is frozen: as a crash at the freeze
    assert_redis_loss_allowed("everysec", lost_acks, stop_t, figures)
