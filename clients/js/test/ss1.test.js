// The ss1 known-answer vectors the Rust client is tested against, and initTokenHash
// against the Rust wire format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';

import { initTokenHash, ss1Authorization, ss1Hash, newNonce } from '../src/index.js';

const vectors = JSON.parse(
  readFileSync(new URL('../../../spec/ss1/accept.json', import.meta.url), 'utf8'),
);

const rejections = JSON.parse(readFileSync(new URL('../../../spec/ss1/reject.json', import.meta.url), 'utf8'));

const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));

test('the vector file still has its cases', () => {
  assert.ok(vectors.length >= 6, `only ${vectors.length} vectors`);
});

for (const v of vectors) {
  test(`ss1 vector: ${v.name}`, async () => {
    const request = { secret: v.secret, method: v.method, path: v.path, body: fromHex(v.body_hex), date: v.date };
    assert.equal(await ss1Hash({ ...request, nonce: fromHex(v.nonce) }), v.hash);
    assert.equal(await ss1Authorization({ ...request, keyId: v.key_id, nonce: v.nonce }), v.header);
  });
}

test('a changed part changes the MAC', async () => {
  const base = { secret: 's', nonce: new Uint8Array(64), method: 'PUT', path: '/key', body: 'b', date: 'd' };
  const reference = await ss1Hash(base);
  for (const change of [{ secret: 't' }, { method: 'POST' }, { path: '/key?version=1' }, { body: 'c' }, { date: 'e' }]) {
    assert.notEqual(await ss1Hash({ ...base, ...change }), reference, JSON.stringify(change));
  }
  assert.equal(await ss1Hash({ ...base, method: 'put' }), reference, 'the method is upper-cased');
});

test('nonces are fresh 64-byte values', () => {
  const a = newNonce();
  const b = newNonce();
  assert.equal(a.length, 64);
  assert.notDeepEqual(a, b);
});

test('bad signing input is refused', async () => {
  const request = { secret: 's', method: 'GET', path: '/key', date: 'd' };
  await assert.rejects(ss1Authorization({ ...request, keyId: 'a,b' }), TypeError);
  await assert.rejects(ss1Authorization({ ...request, keyId: '' }), TypeError);
  await assert.rejects(ss1Authorization({ ...request, keyId: 'k', nonce: new Uint8Array(8) }), TypeError);
});

test('initTokenHash is standard base64 of SHA-512', async () => {
  for (const token of ['abc', 'A-token_with-url-safe_chars', '']) {
    assert.equal(await initTokenHash(token), createHash('sha512').update(token, 'utf8').digest('base64'));
  }
});

test('the signer refuses every input of the rejecting vectors', async () => {
  assert.ok(rejections.signing.length >= 4, 'the vector file lost cases');
  const request = { secret: 's', method: 'GET', path: '/key', date: 'Sun, 22 Nov 2026 06:00:00 GMT' };
  for (const v of rejections.signing) {
    await assert.rejects(ss1Authorization({ ...request, keyId: v.key_id, nonce: v.nonce }), TypeError, v.name);
  }
});

test('no header the signer makes has the shape of a rejecting vector', async () => {
  // Every rejecting header breaks the one shape a signer writes: scheme, keyid, then
  // 128 lower-case hex digits of hash and of nonce.
  const shape = /^ss1 keyid=[^,]{1,256}, hash=[0-9a-f]{128}, nonce=[0-9a-f]{128}$/;
  for (const v of rejections.headers.filter((h) => h.header !== undefined)) {
    assert.ok(!shape.test(v.header), v.name);
  }
  for (const v of vectors) assert.match(v.header, shape, v.name);
});
