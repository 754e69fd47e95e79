// The client against the real keyservice binary on loopback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  Keyservice,
  KeyserviceError,
  MINIMUM_ARGON2,
  WRAPPED_KEY_TYPE,
  countAccesses,
  describeWrapped,
  unwrapWithPassphrase,
  decrypt,
  encrypt,
  fetchDataKey,
  getOrCreateDataKey,
  initTokenHash,
} from '../src/index.js';
import { CREDENTIAL, NAMESPACE, startKeyservice } from './support.js';

let server;
before(async () => {
  server = await startKeyservice({ extra: 'max_key_versions = 100' });
});
after(() => server.stop());

/** A device session for `userId`, connected by the Real Service role. */
async function device(userId, keyservice = new Keyservice(server.url)) {
  const { initToken } = await keyservice.init();
  const grant = await keyservice.realService(CREDENTIAL).connect(NAMESPACE, userId, await initTokenHash(initToken));
  return keyservice.session(grant.sessionToken, initToken);
}

async function rejectsWith(promise, status, code) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof KeyserviceError, `not a KeyserviceError: ${error}`);
    assert.equal(error.code, code);
    assert.equal(error.status, status);
    return true;
  });
}

test('a device stores, reads and versions its key', async () => {
  const session = await device('alice');
  await rejectsWith(session.getKey(), 404, 'no_key');
  assert.equal(await session.putKey(new Uint8Array([1, 2, 3]), { ifNoneMatch: '*' }), 1);
  await rejectsWith(session.putKey('again', { ifNoneMatch: '*' }), 412, 'precondition_failed');
  assert.equal(await session.putKey('second', { contentType: 'text/plain', ifMatch: 1 }), 2);
  await rejectsWith(session.putKey('stale', { ifMatch: 1 }), 412, 'precondition_failed');
  const latest = await session.getKey();
  assert.deepEqual(
    { version: latest.version, type: latest.contentType, text: new TextDecoder().decode(latest.bytes) },
    { version: 2, type: 'text/plain', text: 'second' },
  );
  assert.deepEqual([...(await session.getKey(1)).bytes], [1, 2, 3]);
  assert.equal(await session.getKeyVersion(), 2);
  await rejectsWith(session.getKey(9), 404, 'no_such_version');
  await assert.rejects(session.putKey('x', { ifMatch: 1, ifNoneMatch: '*' }), TypeError);
});

test('delete, logout and erase take effect', async () => {
  const bob = await device('bob');
  await bob.putKey('bob');
  await bob.deleteKey();
  await rejectsWith(bob.getKey(), 404, 'no_key');
  await bob.logout();
  await rejectsWith(bob.getKey(), 401, 'unknown_session');

  const carol = await device('carol');
  await carol.putKey('carol');
  const realService = new Keyservice(server.url).realService(CREDENTIAL);
  const exported = await realService.export(NAMESPACE, 'carol');
  assert.equal(exported.keyVersions.length, 1);
  assert.equal(exported.sessions.length, 1);
  const receipt = await realService.erase(NAMESPACE, 'carol');
  assert.deepEqual([receipt.versionsDestroyed, receipt.sessionsRevoked], [1, 1]);
  await rejectsWith(carol.getKey(), 401, 'unknown_session');
});

test('the access history shows each use of the key, paged, to the user alone', async () => {
  const mine = await device('carol');
  await mine.putKey('k');
  await mine.getKey();
  const other = await device('carol');
  await other.getKey(1);
  const history = await mine.accessHistory();
  assert.deepEqual(
    history.entries.map((e) => [e.operation, e.currentSession, e.version]),
    [
      ['key_read', false, 1],
      ['connect', false, null],
      ['key_read', true, 1],
      ['key_write', true, 1],
      ['connect', true, null],
    ],
  );
  assert.equal(history.next, null);
  for (const entry of history.entries) {
    assert.equal(entry.credential, CREDENTIAL.keyId);
    assert.equal(entry.address, '127.0.0.1');
  }
  const first = await mine.accessHistory({ limit: 3 });
  assert.equal(first.entries.length, 3);
  const rest = await mine.accessHistory({ limit: 3, before: first.next });
  assert.deepEqual([...first.entries, ...rest.entries], history.entries);
  assert.equal(rest.next, null);
  assert.deepEqual((await (await device('dave')).accessHistory()).entries.map((e) => e.operation), ['connect']);
  await rejectsWith(mine.accessHistory({ limit: 0 }), 400, 'bad_query');
});

test('countAccesses adds up merged entries, however the reads were merged', async () => {
  const phone = await device('erik');
  await phone.putKey('k');
  for (let i = 0; i < 6; i += 1) await phone.getKey();
  const { entries } = await phone.accessHistory();
  const reads = entries.filter((e) => e.operation === 'key_read');
  assert.ok(reads.length >= 1 && reads.length <= 6, 'six identical reads make one to six entries');
  const mine = entries.find((e) => e.currentSession).session;
  assert.deepEqual(countAccesses(entries).get(mine), { key_read: 6, key_write: 1, connect: 1 });
});

test('a data key wrapped under a passphrase: keyservice holds only the wrapped key', async () => {
  const factor = { userFactor: { passphrase: 'blue harbour lantern', params: MINIMUM_ARGON2 } };
  const phone = await device('wren');
  const key = await getOrCreateDataKey(phone, factor);
  const sealed = await encrypt(key, 'a secret note');
  // What keyservice holds is the wrapped key, not the data key.
  const escrowed = await phone.getKey();
  assert.equal(escrowed.contentType, WRAPPED_KEY_TYPE);
  assert.equal(describeWrapped(escrowed.bytes).kdf, 'argon2id');
  const raw = await unwrapWithPassphrase(escrowed.bytes, 'blue harbour lantern');
  assert.equal(raw.length, 32);
  assert.ok(!Buffer.from(escrowed.bytes).includes(Buffer.from(raw)), 'the data key shows in what keyservice holds');
  // Another device of the same user opens it with the passphrase, and only with it.
  const laptop = await device('wren');
  const again = await getOrCreateDataKey(laptop, factor);
  assert.equal(new TextDecoder().decode(await decrypt(again, sealed)), 'a secret note');
  await rejectsWith(fetchDataKey(laptop), 0, 'user_factor_required');
  await rejectsWith(fetchDataKey(laptop, { userFactor: { passphrase: 'blue harbour lanterns' } }), 0, 'wrong_user_factor');
  await rejectsWith(fetchDataKey(laptop, 1, { userFactor: { passphrase: 'blue harbour lanterns' } }), 0, 'wrong_user_factor');
});

test('a wrong credential or namespace is a typed error', async () => {
  const keyservice = new Keyservice(server.url);
  const { initToken } = await keyservice.init();
  const hash = await initTokenHash(initToken);
  const wrong = keyservice.realService({ keyId: CREDENTIAL.keyId, secret: 'not-the-secret-0123456789abcdef0123' });
  await rejectsWith(wrong.connect(NAMESPACE, 'dave', hash), 401, 'bad_signature');
  await rejectsWith(keyservice.realService(CREDENTIAL).connect('other', 'dave', hash), 403, 'wrong_namespace');
});

test('a client clock an hour off is corrected from the server date', async () => {
  const keyservice = new Keyservice(server.url);
  const session = await device('erin', keyservice);
  keyservice.clockOffset = -3600;
  assert.equal(await session.putKey('from a slow clock', { ifNoneMatch: '*' }), 1);
  assert.ok(Math.abs(keyservice.clockOffset) <= 2, `offset ${keyservice.clockOffset}`);
});

test('data keys: escrowed once, fetched as non-extractable keys by every device', async () => {
  const first = await device('frank');
  const key = await getOrCreateDataKey(first);
  assert.equal(key.extractable, false);
  assert.deepEqual(key.algorithm, { name: 'AES-GCM', length: 256 });
  const sealed = await encrypt(key, 'a note');

  // A second device of the same user gets the same key, not a new one.
  const second = await device('frank');
  const again = await getOrCreateDataKey(second);
  assert.equal(new TextDecoder().decode(await decrypt(again, sealed)), 'a note');
  assert.equal(await second.getKeyVersion(), 1);

  // Another user's key cannot open it.
  const other = await getOrCreateDataKey(await device('grace'));
  await assert.rejects(decrypt(other, sealed));

  // A key that is not 32 bytes is refused as a data key.
  const odd = await device('heidi');
  await odd.putKey('short');
  await rejectsWith(fetchDataKey(odd), 0, 'not_a_data_key');
});

/** A fetch that fails in the given ways first, then passes through. */
function flaky(failures) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push(init.method);
    const next = failures.shift();
    if (next === 'network') throw new TypeError('fetch failed');
    if (next === 503) {
      return new Response(JSON.stringify({ error: 'store_unavailable', message: 'Later.' }), {
        status: 503,
        headers: { 'retry-after': '1', 'content-type': 'application/json' },
      });
    }
    return fetch(url, init);
  };
  return { fetchImpl, calls };
}

test('GET is retried after a network error and after Retry-After; a blind PUT is not', async () => {
  const session = await device('ivan');
  await session.putKey('k');

  const network = flaky(['network']);
  const viaNetwork = new Keyservice(server.url, { fetch: network.fetchImpl });
  const afterNetwork = viaNetwork.session(session.signer.keyId, session.signer.secret);
  assert.equal(await afterNetwork.getKeyVersion(), 1);
  assert.deepEqual(network.calls, ['GET', 'GET']);

  const busy = flaky([503]);
  const started = Date.now();
  const viaBusy = new Keyservice(server.url, { fetch: busy.fetchImpl }).session(session.signer.keyId, session.signer.secret);
  assert.equal((await viaBusy.getKey()).version, 1);
  assert.ok(Date.now() - started >= 1000, 'Retry-After was not waited out');
  assert.deepEqual(busy.calls, ['GET', 'GET']);

  const put = flaky([503]);
  const viaPut = new Keyservice(server.url, { fetch: put.fetchImpl }).session(session.signer.keyId, session.signer.secret);
  await rejectsWith(viaPut.putKey('blind'), 503, 'store_unavailable');
  assert.deepEqual(put.calls, ['PUT'], 'an unconditional PUT was retried');

  const cas = flaky([503]);
  const viaCas = new Keyservice(server.url, { fetch: cas.fetchImpl }).session(session.signer.keyId, session.signer.secret);
  assert.equal(await viaCas.putKey('safe', { ifMatch: 1 }), 2);
  assert.deepEqual(cas.calls, ['PUT', 'PUT']);

  const down = flaky(['network', 'network', 'network', 'network']);
  const viaDown = new Keyservice(server.url, { fetch: down.fetchImpl, getRetries: 2 }).session('a', 'b');
  await rejectsWith(viaDown.getKey(), 0, 'network_error');
  assert.equal(down.calls.length, 3);
});

test('secrets stay out of what a session prints', async () => {
  const session = await device('judy');
  const printed = JSON.stringify(session) + String(Object.keys(session));
  assert.ok(!printed.includes(session.signer.secret));
  assert.ok(!printed.includes(session.signer.keyId));
});
