/*
 * wxlogin-miniprogram: the Mini Program half of wxlogin's login.
 *
 * One instance per app (createWxLogin) owns the session token: it logs in silently (a stored,
 * unexpired token first; otherwise wx.login and POST /v1/login), keeps the token in one storage
 * key so a restart finds it, and adds it to requests. Everything that talks to wxlogin is
 * coalesced: however many pages ask at once, there is at most one wx.login + /v1/login and at
 * most one /v1/refresh in flight, because a second wx.login would spend a second code and rotate
 * the session_key under data the phone is still encrypting.
 *
 * Every failure path is bounded: a request is retried at most once, whatever wxlogin answers
 * (a 401 after a fresh login rejects instead of logging in again), waits honour Retry-After up
 * to maxRetryAfter, and every wx callback is guarded by a timer, so no promise is left pending.
 *
 * Plain CommonJS in ES2015 (Promises, no async/await): it runs as is in the Mini Program
 * runtime after the developer tool's "build npm", and in node for the tests. No dependencies.
 */
'use strict'

var DEFAULTS = {
  storageKey: 'wxlogin',
  refreshBefore: 3600, // seconds before expiry when request() renews first
  maxRetryAfter: 60, // longest Retry-After (s) waited for; WeChat's 45011 asks for 60
  timeout: 10000, // ms for each wx.request made by the library
  loginTimeout: 10000, // ms for wx.login / wx.checkSession
}

// A token this close to its expiry is not sent: it could die on the way.
var EXPIRY_MARGIN_MS = 5000
// A callback that never comes (a wx API that neither succeeds nor fails) is given up this long
// after the API's own timeout should have fired.
var GUARD_MARGIN_MS = 2000

/**
 * The error every rejection of this library carries.
 * statusCode: the HTTP status (0 when no HTTP answer was had); error: wxlogin's slug, or one of
 * ours (wx_login_failed, check_session_failed, request_failed, timeout, bad_response);
 * action: wxlogin's hint (relogin, retry, none); wxErrcode and retryAfter (seconds) when given.
 */
function WxLoginError(fields) {
  var e = new Error(fields.message || fields.error || 'wxlogin error')
  Object.setPrototypeOf(e, WxLoginError.prototype)
  e.name = 'WxLoginError'
  e.statusCode = fields.statusCode || 0
  e.error = fields.error || 'error'
  e.action = fields.action || 'none'
  if (fields.wxErrcode !== undefined) e.wxErrcode = fields.wxErrcode
  if (fields.retryAfter !== undefined) e.retryAfter = fields.retryAfter
  if (fields.data !== undefined) e.data = fields.data
  if (fields.cause !== undefined) e.cause = fields.cause
  return e
}
WxLoginError.prototype = Object.create(Error.prototype, {
  constructor: { value: WxLoginError, writable: true, configurable: true },
})

function isObject(v) {
  return v !== null && typeof v === 'object'
}

function headerValue(header, name) {
  if (!isObject(header)) return undefined
  var lower = name.toLowerCase()
  for (var k in header) {
    if (Object.prototype.hasOwnProperty.call(header, k) && k.toLowerCase() === lower) {
      return header[k]
    }
  }
  return undefined
}

// Seconds to wait from a Retry-After value (delta-seconds or an HTTP date); 1 when absent or
// unreadable, since the server asked for a retry but did not say when.
function retryAfterSeconds(value) {
  if (value === undefined || value === null || value === '') return 1
  var s = String(value).trim()
  if (/^\d+$/.test(s)) return parseInt(s, 10)
  var when = Date.parse(s)
  if (!isNaN(when)) return Math.max(0, Math.ceil((when - Date.now()) / 1000))
  return 1
}

// wxlogin's error body {error, message, action[, wx_errcode]}, parsed when wx.request handed
// back a string (a dataType other than json, or a body not served as JSON).
function errorBody(data) {
  var body = data
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body)
    } catch (e) {
      return null
    }
  }
  if (!isObject(body) || typeof body.error !== 'string') return null
  if (body.action !== 'relogin' && body.action !== 'retry' && body.action !== 'none') return null
  return body
}

function httpError(res, body) {
  var fields = {
    statusCode: res.statusCode,
    error: body ? body.error : 'http_' + res.statusCode,
    message: body && typeof body.message === 'string' ? body.message : 'HTTP ' + res.statusCode,
    action: body ? body.action : 'none',
    data: res.data,
  }
  if (body && typeof body.wx_errcode === 'number') fields.wxErrcode = body.wx_errcode
  var ra = headerValue(res.header, 'Retry-After')
  if (ra !== undefined) fields.retryAfter = retryAfterSeconds(ra)
  return WxLoginError(fields)
}

function delay(ms) {
  return new Promise(function (resolve) {
    setTimeout(resolve, ms)
  })
}

function validSession(s) {
  return (
    isObject(s) &&
    typeof s.token === 'string' &&
    s.token !== '' &&
    typeof s.openid === 'string' &&
    typeof s.expiresAt === 'number' &&
    isFinite(s.expiresAt)
  )
}

function copySession(s) {
  if (!s) return null
  var c = { token: s.token, openid: s.openid, expiresAt: s.expiresAt }
  if (typeof s.unionid === 'string') c.unionid = s.unionid
  return c
}

function joinURL(base, url) {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return url
  if (!base) throw new TypeError('wxlogin: relative url "' + url + '" needs a baseURL')
  return base.replace(/\/+$/, '') + '/' + String(url).replace(/^\/+/, '')
}

function createWxLogin(options) {
  var opts = options || {}
  if (typeof opts.baseURL !== 'string' || opts.baseURL === '') {
    throw new TypeError('wxlogin: baseURL is required')
  }
  /* global wx */
  var w = opts.wx || (typeof wx !== 'undefined' ? wx : undefined)
  if (!w) throw new TypeError('wxlogin: no wx object (pass options.wx)')

  var baseURL = opts.baseURL.replace(/\/+$/, '')
  var storageKey = opts.storageKey || DEFAULTS.storageKey
  var refreshBeforeMs =
    1000 * (typeof opts.refreshBefore === 'number' ? opts.refreshBefore : DEFAULTS.refreshBefore)
  var maxRetryAfter =
    typeof opts.maxRetryAfter === 'number' ? opts.maxRetryAfter : DEFAULTS.maxRetryAfter
  var timeout = typeof opts.timeout === 'number' ? opts.timeout : DEFAULTS.timeout
  var loginTimeout =
    typeof opts.loginTimeout === 'number' ? opts.loginTimeout : DEFAULTS.loginTimeout

  // The session as stored; undefined until read from storage once.
  var current
  // The login (wx.login + /v1/login) and the refresh in flight, shared by every caller.
  var loginInFlight = null
  var refreshInFlight = null
  var refreshOf = null // the token refreshInFlight renews
  // The lifetime wxlogin gave the token it issued last (not stored: the stored shape is fixed).
  var issued = { token: null, lifetimeMs: 0 }

  function load() {
    if (current === undefined) {
      var stored
      try {
        stored = w.getStorageSync(storageKey)
      } catch (e) {
        stored = null
      }
      current = validSession(stored) ? copySession(stored) : null
    }
    return current
  }

  function save(s) {
    current = s
    try {
      if (s) w.setStorageSync(storageKey, copySession(s))
      else w.removeStorageSync(storageKey)
    } catch (e) {
      // Storage full or unavailable: the session still works for this run of the app.
    }
  }

  // Forget the session only if it still holds the token that failed: another caller may have
  // logged in again meanwhile, and its fresh token must not be thrown away.
  function dropIfCurrent(token) {
    var s = load()
    if (s && s.token === token) save(null)
  }

  function live(s) {
    return s && s.expiresAt - Date.now() > EXPIRY_MARGIN_MS
  }

  // --- the wx APIs as promises, each guarded so that none is left pending -----------------

  function guarded(what, ms, start) {
    return new Promise(function (resolve, reject) {
      var done = false
      var abort = null
      var timer = setTimeout(function () {
        if (done) return
        done = true
        if (abort) {
          try {
            abort()
          } catch (e) {
            // already finished
          }
        }
        reject(
          WxLoginError({
            error: 'timeout',
            action: 'retry',
            message: what + ' did not answer within ' + ms + ' ms',
          }),
        )
      }, ms + GUARD_MARGIN_MS)
      function finish(fn, v) {
        if (done) return
        done = true
        clearTimeout(timer)
        fn(v)
      }
      try {
        abort = start(
          function (v) {
            finish(resolve, v)
          },
          function (e) {
            finish(reject, e)
          },
        )
      } catch (e) {
        var failure = WxLoginError({
          error: 'request_failed',
          action: 'retry',
          message: what + ' threw: ' + e.message,
          cause: e,
        })
        finish(reject, failure)
      }
    })
  }

  function loginFailed(message, cause) {
    return WxLoginError({ error: 'wx_login_failed', action: 'retry', message: message, cause: cause })
  }

  function wxLogin() {
    return guarded('wx.login', loginTimeout, function (resolve, reject) {
      w.login({
        timeout: loginTimeout,
        success: function (res) {
          if (res && typeof res.code === 'string' && res.code !== '') resolve(res.code)
          else reject(loginFailed('wx.login gave no code', res))
        },
        fail: function (err) {
          var msg = err && err.errMsg ? err.errMsg : 'unknown error'
          reject(loginFailed('wx.login failed: ' + msg, err))
        },
      })
    })
  }

  // Resolves {statusCode, data, header} for any HTTP answer; rejects only when there was none.
  function wxRequest(o) {
    var ms = typeof o.timeout === 'number' ? o.timeout : timeout
    return guarded('wx.request ' + o.url, ms, function (resolve, reject) {
      var req = {}
      for (var k in o) {
        if (Object.prototype.hasOwnProperty.call(o, k) && k !== 'baseURL') req[k] = o[k]
      }
      req.timeout = ms
      req.success = function (res) {
        resolve({ statusCode: res.statusCode, data: res.data, header: res.header || {} })
      }
      req.fail = function (err) {
        var msg = err && err.errMsg ? err.errMsg : 'unknown error'
        var timedOut = /timeout|timed out/i.test(msg)
        reject(
          WxLoginError({
            error: timedOut ? 'timeout' : 'request_failed',
            action: 'retry',
            message: 'wx.request ' + o.url + ' failed: ' + msg,
            cause: err,
          }),
        )
      }
      var task = w.request(req)
      return task && typeof task.abort === 'function' ? task.abort.bind(task) : null
    })
  }

  function checkSession() {
    return guarded('wx.checkSession', loginTimeout, function (resolve) {
      w.checkSession({
        success: function () {
          resolve(true)
        },
        // WeChat's fail means the session_key is no longer the user's current one.
        fail: function () {
          resolve(false)
        },
      })
    })
  }

  function wxloginHeaders(token) {
    var h = { 'Content-Type': 'application/json' }
    if (opts.appid) h['X-WX-AppID'] = opts.appid
    if (token) h.Authorization = 'Bearer ' + token
    return h
  }

  function sessionFrom(res) {
    var d = res.data
    if (typeof d === 'string') {
      try {
        d = JSON.parse(d)
      } catch (e) {
        d = null
      }
    }
    if (
      !isObject(d) ||
      typeof d.token !== 'string' ||
      typeof d.openid !== 'string' ||
      typeof d.expires_in !== 'number'
    ) {
      throw WxLoginError({
        statusCode: res.statusCode,
        error: 'bad_response',
        action: 'retry',
        message: 'wxlogin answered without a session',
        data: res.data,
      })
    }
    var s = { token: d.token, openid: d.openid, expiresAt: Date.now() + d.expires_in * 1000 }
    issued = { token: d.token, lifetimeMs: d.expires_in * 1000 }
    if (typeof d.unionid === 'string') s.unionid = d.unionid
    return s
  }

  // Waits out a retry answer's Retry-After, or rejects with it when that is past the bound:
  // retrying sooner than asked would only be refused again.
  function waitRetryAfter(err) {
    var s = err.retryAfter !== undefined ? err.retryAfter : 1
    if (s > maxRetryAfter) return Promise.reject(err)
    return delay(s * 1000)
  }

  // --- login ------------------------------------------------------------------------------

  // wx.login then POST /v1/login, following wxlogin's action once: relogin → one more
  // wx.login (the code is spent or bad), retry → the same code after Retry-After.
  function freshLogin() {
    if (loginInFlight) return loginInFlight
    var reloginsLeft = 1
    var retriesLeft = 1
    function withCode(code) {
      return wxRequest({
        url: baseURL + '/v1/login',
        method: 'POST',
        header: wxloginHeaders(null),
        data: { code: code },
      }).then(function (res) {
        if (res.statusCode === 200) {
          var s = sessionFrom(res)
          save(s)
          return copySession(s)
        }
        var err = httpError(res, errorBody(res.data))
        if (err.action === 'retry' && retriesLeft > 0) {
          retriesLeft--
          return waitRetryAfter(err).then(function () {
            return withCode(code)
          })
        }
        if (err.action === 'relogin' && reloginsLeft > 0) {
          reloginsLeft--
          return wxLogin().then(withCode)
        }
        throw err
      })
    }
    var p = wxLogin().then(withCode)
    loginInFlight = p
    function clear() {
      if (loginInFlight === p) loginInFlight = null
    }
    p.then(clear, clear)
    return p
  }

  function login() {
    var s = load()
    if (live(s) && !loginInFlight) return Promise.resolve(copySession(s))
    return freshLogin()
  }

  // --- renewal ----------------------------------------------------------------------------

  // POST /v1/refresh for token, one at a time per token. Resolves the session to use: the new
  // one; a fresh login when wxlogin says the token is dead (401); the old one, still valid,
  // when the refresh could not be had now (network, 429, 503, an older wxlogin's 404). Rejects
  // on 403 user_banned.
  function refresh(old) {
    if (refreshInFlight && refreshOf === old.token) return refreshInFlight
    var p = wxRequest({
      url: baseURL + '/v1/refresh',
      method: 'POST',
      header: wxloginHeaders(old.token),
      data: {},
    }).then(
      function (res) {
        if (res.statusCode === 200) {
          var s = sessionFrom(res)
          var cur = load()
          // A login that finished meanwhile wins over the renewal of the older token.
          if (!cur || cur.token === old.token) save(s)
          return copySession(load())
        }
        var err = httpError(res, errorBody(res.data))
        if (res.statusCode === 401 || err.action === 'relogin') {
          dropIfCurrent(old.token)
          return login()
        }
        if (err.action === 'none' && res.statusCode === 403) {
          // The user is refused (user_banned): surfaced, not papered over with the old token.
          dropIfCurrent(old.token)
          throw err
        }
        // Busy, rate limited, a wxlogin without the route: the token in hand is still good.
        return live(old) ? copySession(old) : login()
      },
      function () {
        return live(old) ? copySession(old) : login()
      },
    )
    refreshInFlight = p
    refreshOf = old.token
    function clear() {
      if (refreshInFlight === p) {
        refreshInFlight = null
        refreshOf = null
      }
    }
    p.then(clear, clear)
    return p
  }

  // The session request() should use: stored and live, renewed first when close to expiry.
  function sessionForRequest() {
    var s = load()
    if (loginInFlight) return loginInFlight
    if (!live(s)) return login()
    // Within refreshBefore of expiry, or half the token's life when that is shorter: a
    // session_ttl under refreshBefore must not make every request renew.
    var before = refreshBeforeMs
    if (issued.token === s.token) before = Math.min(before, issued.lifetimeMs / 2)
    if (s.expiresAt - Date.now() <= before) return refresh(s)
    return Promise.resolve(copySession(s))
  }

  // --- requests ---------------------------------------------------------------------------

  function request(options) {
    var o = options || {}
    if (typeof o.url !== 'string' || o.url === '') {
      return Promise.reject(new TypeError('wxlogin: request() needs a url'))
    }
    var url
    try {
      url = joinURL(o.baseURL || baseURL, o.url)
    } catch (e) {
      return Promise.reject(e)
    }
    var retried = false

    function attempt(s) {
      var header = {}
      var h = o.header || {}
      for (var k in h) {
        if (Object.prototype.hasOwnProperty.call(h, k) && k.toLowerCase() !== 'authorization') {
          header[k] = h[k]
        }
      }
      header.Authorization = 'Bearer ' + s.token
      var req = {}
      for (var j in o) {
        if (Object.prototype.hasOwnProperty.call(o, j)) req[j] = o[j]
      }
      req.url = url
      req.header = header
      return wxRequest(req).then(function (res) {
        var body = res.statusCode >= 400 ? errorBody(res.data) : null
        if (!body) return res
        var err = httpError(res, body)
        if (retried || err.action === 'none') throw err
        retried = true
        if (err.action === 'relogin') {
          // Logged out elsewhere, expired, revoked: log in again (once, shared with every
          // caller that saw the same token fail) and try once more.
          dropIfCurrent(s.token)
          return login().then(attempt)
        }
        return waitRetryAfter(err).then(function () {
          return sessionForRequest().then(attempt)
        })
      })
    }

    return sessionForRequest().then(attempt)
  }

  // --- logout -----------------------------------------------------------------------------

  function logout(logoutOptions) {
    var all = !!(logoutOptions && logoutOptions.all)
    // A login in flight would store its session after this logout: let it land, then end it.
    if (loginInFlight) {
      var again = function () {
        return logout(logoutOptions)
      }
      return loginInFlight.then(again, again)
    }
    var s = load()
    if (!s) return Promise.resolve()
    var retriesLeft = 1
    function send() {
      return wxRequest({
        url: baseURL + '/v1/logout',
        method: 'POST',
        header: wxloginHeaders(s.token),
        data: all ? { all: true } : {},
      }).then(function (res) {
        // 401: the token is already dead, which is what was asked for.
        if (res.statusCode === 204 || res.statusCode === 200 || res.statusCode === 401) {
          dropIfCurrent(s.token)
          return undefined
        }
        var err = httpError(res, errorBody(res.data))
        if (err.action === 'retry' && retriesLeft > 0) {
          retriesLeft--
          return waitRetryAfter(err).then(send)
        }
        throw err
      })
    }
    return send()
  }

  // --- session_key ------------------------------------------------------------------------

  // Before an encryptedData flow (getPhoneNumber old style, getWeRunData...): the session_key
  // wxlogin holds must be the one WeChat will encrypt with. wx.login is called only when
  // WeChat says the key is stale (or there is no session), since every wx.login may rotate it.
  function ensureFreshSessionKey() {
    return checkSession().then(function (fresh) {
      // Stale: a new wx.login, whose /v1/login hands wxlogin the new key. The token in hand
      // stays valid meanwhile (and if this login fails), so it is not dropped first.
      return fresh ? login() : freshLogin()
    })
  }

  var auth = {
    login: login,
    request: request,
    logout: logout,
    ensureFreshSessionKey: ensureFreshSessionKey,
  }
  Object.defineProperty(auth, 'session', {
    enumerable: true,
    get: function () {
      return copySession(load())
    },
  })
  return auth
}

module.exports = { createWxLogin: createWxLogin, WxLoginError: WxLoginError }
