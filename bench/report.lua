-- bench/report.lua: what openid.lua and session.lua share: counting non-200 answers per
-- thread (response) and printing one machine-readable RESULT line after the run (done).
-- Loaded by each script with dofile(); it expects the per-thread globals non2xx, by_status,
-- statuses and sample, and the main-state global `threads`, which both scripts set up.

function response(status, hdrs, body)
    if status ~= 200 then
        non2xx = non2xx + 1
        by_status[status] = (by_status[status] or 0) + 1
        local parts = {}
        for s, n in pairs(by_status) do
            parts[#parts + 1] = s .. ":" .. n
        end
        statuses = table.concat(parts, ",")
        if sample == "" and body ~= nil then
            sample = string.sub(body, 1, 300)
        end
    end
end

-- Back in the main state after the run.
function done(summary, latency, requests)
    local non = 0
    local merged = {}
    local samples = {}
    for _, t in ipairs(threads) do
        non = non + (tonumber(t:get("non2xx")) or 0)
        local st = t:get("statuses") or ""
        for s, n in string.gmatch(st, "(%d+):(%d+)") do
            merged[s] = (merged[s] or 0) + tonumber(n)
        end
        local sm = t:get("sample") or ""
        if sm ~= "" then
            samples[#samples + 1] = sm
        end
    end

    local e = summary.errors
    local errors = e.connect + e.read + e.write + e.timeout
    local secs = summary.duration / 1e6
    local rps = secs > 0 and summary.requests / secs or 0
    local function ms(us) return us / 1000 end

    if non > 0 then
        local parts = {}
        for s, n in pairs(merged) do parts[#parts + 1] = s .. "=" .. n end
        table.sort(parts)
        io.write("NON2XX statuses: ", table.concat(parts, " "), "\n")
        for _, sm in ipairs(samples) do
            io.write("NON2XX sample body: ", (sm:gsub("[\r\n]", " ")), "\n")
        end
    end

    io.write(string.format(
        "RESULT requests=%d duration_s=%.2f rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f " ..
        "max_ms=%.2f non2xx=%d errors=%d connect=%d read=%d write=%d timeout=%d\n",
        summary.requests, secs, rps,
        ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
        ms(latency.max), non, errors, e.connect, e.read, e.write, e.timeout))
end
