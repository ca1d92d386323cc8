-- wrk script: GET /v1/session with a valid bearer token, a different one on every request.
--
-- The tokens come from the file named by BENCH_TOKENS (one per line; run.py writes it when it
-- seeds the store, see seed_sessions.py). Every wrk thread loads the whole file in init() and
-- builds each request once, up front, so request() only hands out a prepared string: the
-- client spends as little as possible per request (the same script drives the nginx baseline,
-- so both sides cost wrk the same).
--
-- Thread t of n starts at token (t-1) * N / n and walks the file round-robin from there, so
-- the threads use different tokens at any moment and together cover all N of them. The file is
-- in random order relative to token_hash, so consecutive requests hit unrelated B-tree pages.
--
-- At the end it prints the same RESULT line as openid.lua (and NON2XX lines when any response
-- was not 200):
--
--   RESULT requests=N duration_s=S rps=R p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. non2xx=N
--          errors=N connect=N read=N write=N timeout=N

-- Globals, not locals: setup() copies their values into each thread's state.
tokens_path = os.getenv("BENCH_TOKENS")
request_path = os.getenv("BENCH_PATH") or "/v1/session"

threads = {} -- global: bench/report.lua reads it in done()
local nthreads = 0

-- Runs in wrk's main Lua state, once per thread, before the threads start.
function setup(thread)
    nthreads = nthreads + 1
    thread:set("tid", nthreads)
    thread:set("tokens_path", tokens_path)
    thread:set("request_path", request_path)
    table.insert(threads, thread)
end

-- Everything below until done() runs in each thread's own Lua state.
local reqs = {}
local nreqs = 0
local pos = 0
non2xx = 0
statuses = ""   -- "code:count,..." of non-200 statuses, for the summary
sample = ""     -- the first non-200 body this thread saw, for diagnosis
by_status = {} -- global: bench/report.lua counts into it

function init(args)
    if tokens_path == nil or tokens_path == "" then
        error("session.lua: set BENCH_TOKENS to a file of session tokens, one per line")
    end
    local f, err = io.open(tokens_path, "r")
    if f == nil then
        error("session.lua: cannot open BENCH_TOKENS: " .. tostring(err))
    end
    for line in f:lines() do
        local tok = line:match("^%s*(wxl_[%w_-]+)%s*$")
        if tok ~= nil then
            nreqs = nreqs + 1
            reqs[nreqs] = wrk.format("GET", request_path, { ["Authorization"] = "Bearer " .. tok })
        end
    end
    f:close()
    if nreqs == 0 then
        error("session.lua: no tokens in " .. tokens_path)
    end
    -- The thread count is not known here; setup() numbered the threads, and run.py passes it.
    local n = tonumber(os.getenv("BENCH_WRK_THREADS") or "") or 2
    pos = math.floor(((tid or 1) - 1) * nreqs / n) % nreqs
end

function request()
    pos = pos + 1
    if pos > nreqs then
        pos = 1
    end
    return reqs[pos]
end

-- response() and done(): shared with the other scripts.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

-- BENCH_MAX_REQUESTS (run.py's soak line): each thread stops after its share of that many
-- answers. wrk's main thread still sleeps out -d; run.py interrupts it once the threads are gone.
local max_requests = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "")
if max_requests ~= nil then
    local share = math.ceil(max_requests / (tonumber(os.getenv("BENCH_WRK_THREADS") or "") or 2))
    local count_response = response
    local answered = 0
    function response(status, hdrs, body)
        count_response(status, hdrs, body)
        answered = answered + 1
        if answered == share then
            wrk.thread:stop()
        end
    end
end
