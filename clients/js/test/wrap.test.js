// The wrapped-key format against the known answers the Rust client's tests read too:
// both produce the same bytes from the same inputs, and open each other's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  KeyserviceError,
  MINIMUM_ARGON2,
  WrapError,
  decrypt,
  encrypt,
  describeWrapped,
  unwrapWithPassphrase,
  unwrapWithPrf,
  wrapWithPassphrase,
  wrapWithPrf,
} from '../src/index.js';

const vectors = JSON.parse(readFileSync(new URL('../../../spec/wrap/vectors.json', import.meta.url)));
const hex = (text) => Uint8Array.from(Buffer.from(text, 'hex'));
const toHex = (bytes) => Buffer.from(bytes).toString('hex');

async function rejectsWithCode(promise, code) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof WrapError, `not a WrapError: ${error}`);
    assert.ok(error instanceof KeyserviceError, 'every failure is a KeyserviceError');
    assert.equal(error.status, 0, 'no server answered');
    assert.equal(error.code, code);
    return true;
  });
}

test('passphrase vectors: the same bytes as the Rust client, and they open', async () => {
  assert.ok(vectors.passphrase.length >= 2);
  for (const v of vectors.passphrase) {
    const wrapped = await wrapWithPassphrase(hex(v.key), v.passphrase, { params: v.params, salt: hex(v.salt), nonce: hex(v.nonce) });
    assert.equal(toHex(wrapped), v.wrapped, v.name);
    assert.deepEqual(describeWrapped(hex(v.wrapped)), { kdf: 'argon2id', params: v.params });
    assert.equal(toHex(await unwrapWithPassphrase(hex(v.wrapped), v.passphrase)), v.key, v.name);
    if (v.alsoOpensWith) assert.equal(toHex(await unwrapWithPassphrase(hex(v.wrapped), v.alsoOpensWith)), v.key, v.name);
    await rejectsWithCode(unwrapWithPassphrase(hex(v.wrapped), `${v.passphrase}!`), 'wrong_user_factor');
  }
});

test('PRF vectors: the same bytes as the Rust client, and they open', async () => {
  for (const v of vectors.prf) {
    const options = { credentialId: hex(v.credentialId), prfSalt: hex(v.prfSalt), nonce: hex(v.nonce) };
    const wrapped = await wrapWithPrf(hex(v.key), hex(v.prfOutput), options);
    assert.equal(toHex(wrapped), v.wrapped, v.name);
    const described = describeWrapped(wrapped);
    assert.equal(described.kdf, 'webauthn-prf');
    assert.equal(toHex(described.credentialId), v.credentialId);
    assert.equal(toHex(described.prfSalt), v.prfSalt);
    assert.equal(toHex(await unwrapWithPrf(wrapped, hex(v.prfOutput))), v.key);
    const other = hex(v.prfOutput);
    other[0] ^= 1;
    await rejectsWithCode(unwrapWithPrf(wrapped, other), 'wrong_user_factor');
    await rejectsWithCode(unwrapWithPassphrase(wrapped, 'x'), 'other_factor');
  }
});

test('weak costs, altered or truncated wrapped keys and huge costs are refused', async () => {
  const key = new Uint8Array(32).fill(7);
  await rejectsWithCode(wrapWithPassphrase(key, 'p', { params: { memoryKib: 1024, iterations: 2, parallelism: 1 } }), 'parameters');
  const wrapped = await wrapWithPassphrase(key, 'pass phrase', { params: MINIMUM_ARGON2 });
  const again = await wrapWithPassphrase(key, 'pass phrase', { params: MINIMUM_ARGON2 });
  assert.notEqual(toHex(wrapped), toHex(again), 'salt and nonce are fresh');
  assert.ok(!toHex(wrapped).includes(toHex(key)), 'the key shows through');
  for (const at of [2, 11, 30, wrapped.length - 1]) {
    const altered = wrapped.slice();
    altered[at] ^= 1;
    await assert.rejects(unwrapWithPassphrase(altered, 'pass phrase'), WrapError, `byte ${at}`);
  }
  for (const cut of [0, 1, 20, 39, 55]) {
    await rejectsWithCode(unwrapWithPassphrase(wrapped.slice(0, cut), 'pass phrase'), 'malformed');
  }
  const huge = wrapped.slice();
  new DataView(huge.buffer).setUint32(2, 4 * 1024 * 1024);
  await rejectsWithCode(unwrapWithPassphrase(huge, 'pass phrase'), 'parameters');
});

test('a sealed note that does not open is a KeyserviceError with its cause', async () => {
  const key = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  const other = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  const sealed = await encrypt(key, 'note');
  for (const [with_, data] of [[other, sealed], [key, sealed.slice(0, 20)]]) {
    await assert.rejects(decrypt(with_, data), (error) => {
      assert.ok(error instanceof KeyserviceError);
      assert.deepEqual([error.code, error.status], ['decrypt_failed', 0]);
      assert.ok(error.cause, 'the underlying failure is kept');
      return true;
    });
  }
});
