// A Real Service on a namespace with `oidc`, through the JavaScript client: connects and
// erasures carry the user's ID token, an erasure's token has the erase nonce and works
// once. The identity provider is a P-256 key made here with WebCrypto.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { Keyservice, KeyserviceError, eraseNonce, initTokenHash } from '../src/index.js';
import { startKeyservice, NAMESPACE, CREDENTIAL } from './support.js';

const ISSUER = 'https://idp.example.test';
const AUDIENCE = 'shop-web';
const KID = 'idp-js-1';

let server;
let idp;

/** A test identity provider: signs ES256 JWTs with a key whose public half is its JWKS. */
async function identityProvider() {
  const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const jwk = await crypto.subtle.exportKey('jwk', pair.publicKey);
  const b64url = (bytes) => Buffer.from(bytes).toString('base64url');
  return {
    jwks: JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, kid: KID, alg: 'ES256', use: 'sig' }] }),
    async token(claims) {
      const now = Math.floor(Date.now() / 1000);
      const header = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', kid: KID }));
      const body = b64url(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 300, ...claims }));
      const signature = await crypto.subtle.sign(
        { name: 'ECDSA', hash: 'SHA-256' },
        pair.privateKey,
        new TextEncoder().encode(`${header}.${body}`),
      );
      return `${header}.${body}.${b64url(new Uint8Array(signature))}`;
    },
  };
}

before(async () => {
  idp = await identityProvider();
  server = await startKeyservice({
    files: { 'jwks.json': idp.jwks },
    namespaceExtra: `[namespaces.${NAMESPACE}.oidc]\nissuer = "${ISSUER}"\naudience = "${AUDIENCE}"\njwks_file = "{dir}/jwks.json"\n`,
  });
});

after(() => server?.stop());

async function rejectsWith(promise, status, code) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof KeyserviceError, String(error));
    assert.equal(error.status, status);
    assert.equal(error.code, code);
    return true;
  });
}

test('eraseNonce matches the protocol (the Rust client computes the same)', async () => {
  assert.equal(await eraseNonce('notes', 'alice'), 'erase:s3cQUEap7p_L_Rfiyx1KFAwn-p8a25qiH0ZHWsL-2pU');
  assert.notEqual(await eraseNonce('notes', 'alice'), await eraseNonce('notes', 'bob'));
});

test('connect and erase carry the user ID token; an erasure token works once', async () => {
  const keyservice = new Keyservice(server.url);
  const realService = keyservice.realService(CREDENTIAL);
  const pending = await keyservice.init();
  const hash = await initTokenHash(pending.initToken);
  await rejectsWith(realService.connect(NAMESPACE, 'dana', hash), 401, 'id_token_required');
  const login = await idp.token({ sub: 'dana', nonce: hash });
  const { sessionToken } = await realService.connect(NAMESPACE, 'dana', hash, { idToken: login });
  const session = keyservice.session(sessionToken, pending.initToken);
  await session.putKey('dana key');

  // The stolen credential alone, or the login's token, erases nothing.
  await rejectsWith(realService.erase(NAMESPACE, 'dana'), 401, 'id_token_required');
  await rejectsWith(realService.erase(NAMESPACE, 'dana', { idToken: login }), 401, 'id_token_nonce_mismatch');
  assert.equal(new TextDecoder().decode((await session.getKey()).bytes), 'dana key');

  const consent = await idp.token({ sub: 'dana', nonce: await eraseNonce(NAMESPACE, 'dana') });
  const receipt = await realService.erase(NAMESPACE, 'dana', { idToken: consent });
  assert.deepEqual([receipt.versionsDestroyed, receipt.sessionsRevoked], [1, 1]);
  await rejectsWith(session.getKey(), 401, 'unknown_session');
  await rejectsWith(realService.erase(NAMESPACE, 'dana', { idToken: consent }), 401, 'id_token_replayed');
});
