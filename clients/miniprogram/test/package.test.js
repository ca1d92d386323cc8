'use strict'
// The published package: only what a Mini Program needs, no runtime dependency, loadable alone.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const DIR = path.resolve(__dirname, '..')

test('npm pack holds only index.js, index.d.ts, README.md and package.json', () => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: DIR,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60000,
  })
  const [pack] = JSON.parse(out)
  assert.equal(pack.name, 'wxlogin-miniprogram')
  assert.deepEqual(pack.files.map((f) => f.path).sort(), ['README.md', 'index.d.ts', 'index.js', 'package.json'])
  assert.ok(pack.unpackedSize < 100000, `unpacked ${pack.unpackedSize} bytes`)
})

test('no runtime dependencies: package.json lists none and index.js requires nothing', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(DIR, 'package.json'), 'utf8'))
  for (const k of ['dependencies', 'peerDependencies', 'optionalDependencies', 'bundleDependencies']) {
    assert.equal(pkg[k], undefined, `${k} in package.json`)
  }
  assert.equal(pkg.main, 'index.js')
  assert.equal(pkg.types, 'index.d.ts')
  const src = fs.readFileSync(path.join(DIR, 'index.js'), 'utf8')
  assert.doesNotMatch(src, /\brequire\s*\(|\bimport\s*[({'"]/)
})

test('loads without a global wx and says what is missing', () => {
  const { createWxLogin } = require('..')
  assert.equal(typeof globalThis.wx, 'undefined')
  assert.throws(() => createWxLogin({ baseURL: 'https://login.example.com' }), /no wx object/)
  assert.throws(() => createWxLogin({}), /baseURL is required/)
})
