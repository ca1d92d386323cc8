'use strict'
// Test support: the real wxlogin and wxlogin-mock as processes on 127.0.0.1 (as
// tests/e2e/conftest.py starts them), mock codes, and a small `wx` whose `request` is real HTTP.

const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const http = require('node:http')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')

const REPO = path.resolve(__dirname, '..', '..', '..')
const BIN = process.env.WXLOGIN_BIN || path.join(REPO, 'build', 'wxlogin')
const MOCK_BIN = process.env.WXLOGIN_MOCK_BIN || path.join(path.dirname(BIN), 'wxlogin-mock')

const APPID = 'wx1234567890abcdef'
const SECRET = '0123456789abcdef0123456789abcdef'
const APPID2 = 'wxbbbb000000000002'
const SECRET2 = 'fedcba9876543210fedcba9876543210'

const READY_TIMEOUT_MS = 30000 // a loaded 2-core machine starts slowly
// Every test's own bound: a promise the library left pending fails its test instead of
// hanging the run (the slowest test takes a few seconds).
const T = { timeout: 60000 }
const SANITIZER_MARKERS = ['ERROR: AddressSanitizer', 'runtime error:', 'LeakSanitizer', 'ThreadSanitizer']

// The captured timer: tests may replace the global one to compress long waits.
const realSetTimeout = setTimeout

function sleep(ms) {
  return new Promise((resolve) => realSetTimeout(resolve, ms))
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** A fresh single-use mock code: `[app_]dir1_dir2_user-<nonce>` (docs/mock.md). */
function newCode(user, directives = [], app = null) {
  const nonce = crypto.randomBytes(8).toString('hex')
  return [...(app ? [app] : []), ...directives, `${user}-${nonce}`].join('_')
}

/** A user name no other test uses (the mock derives the openid from it). */
function newUser(prefix = 'js') {
  return `${prefix}${crypto.randomBytes(5).toString('hex')}`
}

/** One HTTP request from the test itself: {status, headers, body (parsed JSON or text)}. */
function call(port, method, urlPath, { body, headers = {}, timeout = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body)
    const req = http.request(
      { host: '127.0.0.1', port, method, path: urlPath, headers, agent: false, timeout },
      (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let parsed = text
          try {
            parsed = JSON.parse(text)
          } catch (e) {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode, headers: res.headers, body: parsed })
        })
      },
    )
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: no answer in ${timeout} ms`)))
    req.on('error', reject)
    if (data !== undefined) req.write(data)
    req.end()
  })
}

class Proc {
  constructor(name, argv, env, dir, port) {
    this.name = name
    this.port = port
    this.base = `http://127.0.0.1:${port}`
    this.logPath = path.join(dir, `${name}.log`)
    const fd = fs.openSync(this.logPath, 'w')
    const cwd = path.join(dir, `${name}.cwd`)
    fs.mkdirSync(cwd, { recursive: true })
    this.child = spawn(argv[0], argv.slice(1), { env, cwd, stdio: ['ignore', fd, fd] })
    fs.closeSync(fd)
    this.exited = new Promise((resolve) => this.child.once('exit', (code, sig) => resolve({ code, sig })))
    this.alive = true
    this.exited.then(() => {
      this.alive = false
    })
  }

  log() {
    try {
      return fs.readFileSync(this.logPath, 'utf8')
    } catch (e) {
      return ''
    }
  }

  async ready(readyPath) {
    const deadline = Date.now() + READY_TIMEOUT_MS
    while (Date.now() < deadline && this.alive) {
      try {
        const r = await call(this.port, 'GET', readyPath, { timeout: 1000 })
        if (r.status === 200) return true
      } catch (e) {
        // not listening yet
      }
      await sleep(25)
    }
    return false
  }

  async stop() {
    if (this.alive) {
      this.child.kill('SIGTERM')
      const timer = realSetTimeout(() => this.alive && this.child.kill('SIGKILL'), 10000)
      await this.exited
      clearTimeout(timer)
    }
    const text = this.log()
    const marker = SANITIZER_MARKERS.find((m) => text.includes(m))
    if (marker) throw new Error(`${this.name}: sanitizer report in ${this.logPath}:\n${text.slice(-3000)}`)
  }
}

function baseEnv(extra) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('WXLOGIN_')) env[k] = v
  return Object.assign(env, extra)
}

async function start(name, dir, mk, readyPath) {
  let last = ''
  for (let attempt = 0; attempt < 4; attempt++) {
    const port = await freePort()
    const { argv, env } = mk(port)
    const p = new Proc(attempt ? `${name}-${attempt}` : name, argv, env, dir, port)
    if (await p.ready(readyPath)) return p
    last = p.log()
    await p.stop().catch(() => {})
    if (p.alive === false && !last.includes('ddress already in use')) break
  }
  throw new Error(`${name} did not start; log:\n${last.slice(-3000)}`)
}

/**
 * A mock and a wxlogin serve against it, in a fresh directory. The mock knows APPID and APPID2;
 * serve serves both (APPID by the environment, APPID2 by a config file section).
 * env: more WXLOGIN_* variables for serve.
 */
async function startStack({ env = {} } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wxlogin-js-'))
  for (const bin of [BIN, MOCK_BIN]) {
    if (!fs.existsSync(bin)) throw new Error(`${bin} not found: run make build (or set WXLOGIN_BIN)`)
  }
  const mock = await start(
    'mock',
    dir,
    (port) => ({
      argv: [MOCK_BIN, '--listen', `127.0.0.1:${port}`, '--threads', '2',
        '--app', `${APPID}:${SECRET}`, '--app', `${APPID2}:${SECRET2}`],
      env: baseEnv({}),
    }),
    '/mock/stats',
  )
  const conf = path.join(dir, 'wxlogin.conf')
  fs.writeFileSync(conf, `[app "${APPID2}"]\nsecret = ${SECRET2}\n`, { mode: 0o600 })
  let serve
  try {
    serve = await start(
      'serve',
      dir,
      (port) => ({
        argv: [BIN, 'serve', '--config', conf],
        env: baseEnv(
          Object.assign(
            {
              WXLOGIN_LISTEN: `127.0.0.1:${port}`,
              WXLOGIN_APPID: APPID,
              WXLOGIN_SECRET: SECRET,
              WXLOGIN_WECHAT_BASE: mock.base,
              WXLOGIN_STORE: `sqlite:${dir}/wx.db`,
              WXLOGIN_THREADS: '2',
              WXLOGIN_UPSTREAM_TIMEOUT_MS: '5000',
              WXLOGIN_LOG_LEVEL: 'warn',
              // every test logs in from 127.0.0.1; the limit gets its own test
              WXLOGIN_RATE_LIMIT_ADDRESS: 'off',
            },
            env,
          ),
        ),
      }),
      '/healthz',
    )
  } catch (e) {
    await mock.stop().catch(() => {})
    throw e
  }
  return {
    dir,
    mock,
    serve,
    baseURL: serve.base,
    async mockStats() {
      const r = await call(mock.port, 'GET', '/mock/stats')
      assert.equal(r.status, 200)
      return r.body.jscode2session // {requests, exchanges}
    },
    async stop() {
      const errors = []
      for (const p of [serve, mock]) await p.stop().catch((e) => errors.push(e))
      if (errors.length) throw errors[0]
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * A small `wx` for node: login hands out mock codes, request performs real HTTP with node's
 * http, storage is a Map (of JSON, as WeChat serialises), checkSession answers what the test
 * sets. Every call is recorded in `calls`.
 *
 *   codes:   () => code, called once per wx.login (default: fresh codes of `user`)
 *   storage: a Map to share with another fake (an app restart keeps its storage)
 */
function fakeWx({ user = newUser(), codes, storage = new Map() } = {}) {
  const calls = { login: 0, checkSession: 0, request: [] }
  const wx = {
    user,
    calls,
    storage,
    codes: codes || (() => newCode(user)),
    loginMode: 'ok', // 'ok' | 'fail' | 'silent' (never calls back)
    requestMode: 'ok', // 'ok' | 'silent'
    sessionFresh: true,

    login(o) {
      calls.login++
      if (wx.loginMode === 'silent') return
      setImmediate(() => {
        if (wx.loginMode === 'fail') o.fail && o.fail({ errMsg: 'login:fail system error' })
        else o.success && o.success({ code: wx.codes(), errMsg: 'login:ok' })
        o.complete && o.complete()
      })
    },

    checkSession(o) {
      calls.checkSession++
      setImmediate(() => {
        if (wx.sessionFresh) o.success && o.success({ errMsg: 'checkSession:ok' })
        else o.fail && o.fail({ errMsg: 'checkSession:fail session time out, need relogin' })
        o.complete && o.complete()
      })
    },

    request(o) {
      const u = new URL(o.url)
      const method = (o.method || 'GET').toUpperCase()
      const headers = Object.assign({}, o.header)
      let body
      if (o.data !== undefined && o.data !== null) {
        if (method === 'GET') {
          for (const [k, v] of Object.entries(o.data)) u.searchParams.set(k, String(v))
        } else {
          body = typeof o.data === 'string' ? o.data : JSON.stringify(o.data)
          if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) {
            headers['content-type'] = 'application/json'
          }
        }
      }
      const rec = { method, path: u.pathname, headers, body, status: null, responseHeaders: null, at: Date.now() }
      calls.request.push(rec)
      let finished = false
      const done = (fn, arg) => {
        if (finished) return
        finished = true
        clearTimeout(timer)
        fn && fn(arg)
        o.complete && o.complete()
      }
      if (wx.requestMode === 'silent') return { abort() {} }
      const req = http.request({
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method,
        headers,
        agent: false,
      })
      const timer = realSetTimeout(() => {
        req.destroy()
        done(o.fail, { errMsg: 'request:fail timeout' })
      }, o.timeout || 60000)
      req.on('response', (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => {
          // WeChat hands back the header names as the server sent them
          const header = {}
          for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) header[res.rawHeaders[i]] = res.rawHeaders[i + 1]
          const text = Buffer.concat(chunks).toString('utf8')
          let data = text
          if (o.dataType === undefined || o.dataType === 'json') {
            try {
              data = JSON.parse(text)
            } catch (e) {
              // as wx.request: a body that is not JSON stays a string
            }
          }
          rec.status = res.statusCode
          rec.responseHeaders = header
          done(o.success, { statusCode: res.statusCode, data, header, errMsg: 'request:ok' })
        })
      })
      req.on('error', (e) => done(o.fail, { errMsg: `request:fail ${e.message}` }))
      if (body !== undefined) req.write(body)
      req.end()
      return {
        abort() {
          req.destroy()
          done(o.fail, { errMsg: 'request:fail abort' })
        },
      }
    },

    getStorageSync(key) {
      return storage.has(key) ? JSON.parse(storage.get(key)) : ''
    },
    setStorageSync(key, value) {
      storage.set(key, JSON.stringify(value))
    },
    removeStorageSync(key) {
      storage.delete(key)
    },
  }
  return wx
}

/** The requests the fake made to a path (e.g. '/v1/login'). */
function requestsTo(wx, p) {
  return wx.calls.request.filter((r) => r.path === p)
}

/*
 * One stack for a test file: started before its tests, stopped after them. set(stack) hands it
 * to the file; the returned auth(wx, extra) makes a client of that stack for APPID (the stack
 * serves two apps, so every client names its own, as a multi-app deployment must).
 */
function useStack(set, opts) {
  const { before, after } = require('node:test')
  const { createWxLogin } = require('..')
  let stack
  before(async () => {
    stack = await startStack(opts)
    set(stack)
  })
  after(async () => {
    if (stack) await stack.stop()
  })
  return (wx, extra = {}) =>
    createWxLogin(Object.assign({ baseURL: stack.baseURL, wx, appid: APPID }, extra))
}

module.exports = {
  useStack,
  APPID,
  APPID2,
  REPO,
  call,
  fakeWx,
  newCode,
  newUser,
  realSetTimeout,
  requestsTo,
  sleep,
  startStack,
  T,
}
