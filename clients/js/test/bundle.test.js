// The self-contained build (dist/keyservice.js) a page loads with a plain
// <script type="module">: no import a browser cannot resolve, and the same answers as
// the source, Argon2id included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import * as bundle from '../dist/keyservice.js';
import * as source from '../src/index.js';

const text = readFileSync(new URL('../dist/keyservice.js', import.meta.url), 'utf8');
const vectors = JSON.parse(readFileSync(new URL('../../../spec/wrap/vectors.json', import.meta.url)));
const hex = (value) => Uint8Array.from(Buffer.from(value, 'hex'));

test('the bundle imports nothing by package name', () => {
  const bare = [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']([^"']+)["']/g)].map((m) => m[1]);
  assert.deepEqual(bare, [], 'a browser cannot resolve these without a bundler or an import map');
});

test('the bundle exports what the source does', () => {
  assert.deepEqual(Object.keys(bundle).sort(), Object.keys(source).sort());
});

test('the bundle wraps and opens passphrase keys byte for byte like the source', async () => {
  for (const v of vectors.passphrase) {
    const options = { params: v.params, salt: hex(v.salt), nonce: hex(v.nonce) };
    const wrapped = await bundle.wrapWithPassphrase(hex(v.key), v.passphrase, options);
    assert.equal(Buffer.from(wrapped).toString('hex'), v.wrapped, v.name);
    assert.equal(Buffer.from(await source.unwrapWithPassphrase(wrapped, v.passphrase)).toString('hex'), v.key);
  }
});
