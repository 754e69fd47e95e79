// keyservice client for browsers and Node >= 20: WebCrypto, and @noble/hashes for
// Argon2id (loaded only when a passphrase is used).
//
// A device keeps its data keys at keyservice: it asks for an init token (`init`), gives
// the Real Service only `initTokenHash(token)`, receives a session token back, and then
// reads and writes its key with requests signed by the Sessionist ss1 scheme (key id =
// session token, secret = init token). A Real Service backend (Node) uses `RealService`
// to connect users' devices, erase users and export what is held about them.

const encoder = new TextEncoder();

/** The header a browser sends the date in (it may not set `Date`). */
export const X_DATE = 'X-Date';

function subtle() {
  const c = globalThis.crypto;
  if (!c || !c.subtle || typeof c.getRandomValues !== 'function') {
    throw new KeyserviceError('WebCrypto is not available: keyservice needs a secure context (HTTPS or localhost) or Node >= 20', { code: 'webcrypto_unavailable' });
  }
  return c.subtle;
}

function toHex(bytes) {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

function fromHex(text) {
  if (text.length % 2 !== 0 || /[^0-9a-f]/i.test(text)) throw new TypeError('not hex');
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function toBase64(bytes) {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

function asBytes(data) {
  if (data === undefined || data === null) return new Uint8Array(0);
  if (typeof data === 'string') return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('expected a string, Uint8Array, ArrayBuffer or typed array');
}

function concat(parts) {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** 64 fresh random bytes from the platform CSPRNG. */
export function newNonce() {
  subtle();
  return globalThis.crypto.getRandomValues(new Uint8Array(64));
}

/**
 * The initTokenHash a device gives its Real Service: standard base64 of SHA-512 of the
 * init token's UTF-8 bytes.
 * @param {string} initToken
 * @returns {Promise<string>}
 */
export async function initTokenHash(initToken) {
  const digest = await subtle().digest('SHA-512', encoder.encode(initToken));
  return toBase64(new Uint8Array(digest));
}

/**
 * The nonce a Real Service asks the identity provider for, in the ID token that
 * authorises erasing `userId` of `namespace` on a namespace with `oidc`: `erase:` and the
 * unpadded base64url of SHA-256 of `"keyservice erase\n" + namespace + "\n" + userId`.
 * @param {string} namespace
 * @param {string} userId
 * @returns {Promise<string>}
 */
export async function eraseNonce(namespace, userId) {
  const digest = await subtle().digest('SHA-256', encoder.encode(`keyservice erase\n${namespace}\n${userId}`));
  const base64url = toBase64(new Uint8Array(digest)).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
  return `erase:${base64url}`;
}

/**
 * The ss1 MAC: lowercase hex of HMAC-SHA-512 keyed with the secret's UTF-8 bytes over
 * nonce (64 raw bytes) ‖ METHOD ‖ path-and-query ‖ body ‖ date.
 */
export async function ss1Hash({ secret, nonce, method, path, body, date }) {
  const key = await subtle().importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-512' }, false, [
    'sign',
  ]);
  const message = concat([
    asBytes(nonce),
    encoder.encode(method.toUpperCase()),
    encoder.encode(path),
    asBytes(body),
    encoder.encode(date),
  ]);
  return toHex(new Uint8Array(await subtle().sign('HMAC', key, message)));
}

/**
 * The ss1 Authorization header value for one request. `nonce` defaults to 64 fresh
 * random bytes; pass one only for known-answer tests.
 * @returns {Promise<string>}
 */
export async function ss1Authorization({ keyId, secret, method, path, body, date, nonce }) {
  if (!keyId || keyId.includes(',') || new TextEncoder().encode(keyId).length > 256) {
    throw new TypeError('a key id is 1 to 256 bytes and holds no comma');
  }
  const n = nonce === undefined ? newNonce() : typeof nonce === 'string' ? fromHex(nonce) : asBytes(nonce);
  if (n.length !== 64) throw new TypeError('an ss1 nonce is 64 bytes');
  const hash = await ss1Hash({ secret, nonce: n, method, path, body, date });
  return `ss1 keyid=${keyId}, hash=${hash}, nonce=${toHex(n)}`;
}

/**
 * Every failure of this package at run time: an error the server answered (`status` is
 * its HTTP status, `code` its error code), no answer (`status` 0, `code`
 * `network_error` or `timeout`), or a failure on this side (`status` 0, a code of this
 * package: `wrong_user_factor`, `user_factor_required`, `passkey_not_allowed`,
 * `decrypt_failed`, …). What went wrong underneath is kept in `cause`. Arguments of the
 * wrong type (a bug in the caller) throw `TypeError` instead.
 */
export class KeyserviceError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, retryAfter?: number, cause?: unknown}} [details]
   */
  constructor(message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'KeyserviceError';
    /** The HTTP status when the server answered; 0 otherwise (no answer, or a failure on this side). */
    this.status = details.status ?? 0;
    /** The server's error code (`no_key`, `precondition_failed`, …); `network_error` or `timeout` when no answer came; this package's own code for a failure on this side. */
    this.code = details.code ?? 'network_error';
    /** Seconds the server asked to wait, from `Retry-After`. */
    this.retryAfter = details.retryAfter;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function retryAfterOf(response) {
  const value = response.headers.get('retry-after');
  if (value === null) return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : undefined;
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = `keyservice answered ${response.status}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === 'string') code = body.error;
    if (body && typeof body.message === 'string') message = body.message;
  } catch {
    // Not our JSON error body (a proxy's page, say): keep the generic code.
  }
  return new KeyserviceError(message, { status: response.status, code, retryAfter: retryAfterOf(response) });
}

/**
 * A connection to one keyservice: the device's and the Real Service's calls go through
 * it. Keeps the offset between its clock and the server's, learnt from the server's
 * `Date` when a request is refused for its date.
 */
export class Keyservice {
  /**
   * @param {string} url The service's base URL, e.g. `https://keys.example.com`.
   * @param {{fetch?: typeof fetch, getRetries?: number, maxRetryAfter?: number, timeoutMs?: number}} [options]
   */
  constructor(url, options = {}) {
    this.url = String(url).replace(/\/+$/, '');
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.getRetries = options.getRetries ?? 2;
    this.maxRetryAfter = options.maxRetryAfter ?? 30;
    this.timeoutMs = options.timeoutMs ?? 30000;
    /** Seconds to add to the local clock to get the server's. */
    this.clockOffset = 0;
  }

  /** The date to sign with, as an HTTP date, corrected by the learnt offset. */
  date() {
    return new Date(Date.now() + this.clockOffset * 1000).toUTCString();
  }

  async send(method, path, { body, headers = {}, signer } = {}) {
    const bytes = body === undefined ? undefined : asBytes(body);
    const all = { ...headers };
    if (signer) {
      const date = this.date();
      all[X_DATE] = date;
      all.Authorization = await ss1Authorization({
        keyId: signer.keyId,
        secret: signer.secret,
        method,
        path,
        body: bytes,
        date,
      });
    }
    const controller = typeof AbortController === 'function' ? new AbortController() : undefined;
    const timer = controller ? setTimeout(() => controller.abort(), this.timeoutMs) : undefined;
    try {
      return await this.fetch(this.url + path, {
        method,
        headers: all,
        body: bytes,
        signal: controller?.signal,
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch (cause) {
      const timedOut = controller?.signal.aborted;
      if (!timedOut && (await this.answersOtherPages())) {
        throw new KeyserviceError(
          `keyservice answered, but not to this page: add ${globalThis.location.origin} to its cors_origins`,
          { code: 'cors_refused', cause },
        );
      }
      throw new KeyserviceError(timedOut ? 'keyservice did not answer in time' : 'keyservice could not be reached', {
        code: timedOut ? 'timeout' : 'network_error',
        cause,
      });
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /**
   * In a page of another origin, whether keyservice is up although the call failed: a
   * browser reports a refusal by CORS exactly as it reports an outage, but a `no-cors`
   * request (whose answer the page cannot read) still tells whether the server answered.
   * @returns {Promise<boolean>}
   */
  async answersOtherPages() {
    const here = globalThis.location?.origin;
    if (typeof globalThis.document === 'undefined' || !here || here === new URL(this.url).origin) return false;
    const controller = typeof AbortController === 'function' ? new AbortController() : undefined;
    const timer = controller ? setTimeout(() => controller.abort(), Math.min(this.timeoutMs, 3000)) : undefined;
    try {
      await this.fetch(`${this.url}/healthz`, {
        mode: 'no-cors',
        credentials: 'omit',
        cache: 'no-store',
        signal: controller?.signal,
      });
      return true;
    } catch {
      return false;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /**
   * One call with the client's retry rules: a refused date is corrected from the
   * server's clock and retried once; `Retry-After` on 429/503 is honoured (within
   * `maxRetryAfter`) for idempotent calls; GETs are retried on network errors. A PUT
   * without a condition is never retried: it may have landed.
   */
  async call(method, path, { body, headers, signer, idempotent = method === 'GET', expect = [200] } = {}) {
    let corrected = false;
    let networkRetries = method === 'GET' ? this.getRetries : 0;
    let waits = 2;
    for (;;) {
      let response;
      try {
        response = await this.send(method, path, { body, headers, signer });
      } catch (error) {
        if (networkRetries > 0) {
          networkRetries -= 1;
          await sleep(200);
          continue;
        }
        throw error;
      }
      if (expect.includes(response.status)) return response;
      const error = await errorOf(response);
      if (signer && !corrected && (error.code === 'clock_skew' || error.code === 'stale_date')) {
        corrected = true;
        const server = Date.parse(response.headers.get('date') ?? '');
        if (error.code === 'clock_skew' && Number.isFinite(server)) {
          this.clockOffset = Math.round((server - Date.now()) / 1000);
          continue;
        }
        if (error.code === 'stale_date' && error.retryAfter !== undefined && error.retryAfter <= this.maxRetryAfter) {
          await sleep(error.retryAfter * 1000);
          continue;
        }
      }
      if (
        idempotent &&
        waits > 0 &&
        (response.status === 429 || response.status === 503) &&
        error.retryAfter !== undefined &&
        error.retryAfter <= this.maxRetryAfter
      ) {
        waits -= 1;
        await sleep(error.retryAfter * 1000);
        continue;
      }
      throw error;
    }
  }

  /**
   * `POST /init`: a new init token, the device's signing secret.
   * @returns {Promise<{initToken: string, expiresAt: string}>}
   */
  async init() {
    const response = await this.call('POST', '/init', { idempotent: true });
    const body = await response.json();
    return { initToken: body.initToken, expiresAt: body.expiresAt };
  }

  /**
   * A device session from the session token the Real Service handed over and the
   * device's own init token. Makes no request.
   * @param {string} sessionToken
   * @param {string} initToken
   */
  session(sessionToken, initToken) {
    return new Session(this, sessionToken, initToken);
  }

  /**
   * The Real Service's side (Node backends): its namespace credential. Never ship a
   * credential to a browser.
   * @param {{keyId: string, secret: string}} credential
   */
  realService(credential) {
    return new RealService(this, credential);
  }
}

/** A device's session: reads and writes its user's key. */
export class Session {
  constructor(keyservice, sessionToken, initToken) {
    this.keyservice = keyservice;
    // Kept off enumerable properties so that logging the object does not print them.
    Object.defineProperty(this, 'signer', { value: { keyId: sessionToken, secret: initToken }, enumerable: false });
  }

  /**
   * `PUT /key`: stores a new version; returns its number. `ifMatch` (a version) makes it
   * a compare-and-swap and `ifNoneMatch: '*'` a first write; only those are retried.
   * @param {Uint8Array|ArrayBuffer|string} bytes
   * @param {{contentType?: string, ifMatch?: number, ifNoneMatch?: '*'}} [options]
   * @returns {Promise<number>}
   */
  async putKey(bytes, options = {}) {
    const headers = { 'Content-Type': options.contentType ?? 'application/octet-stream' };
    if (options.ifMatch !== undefined && options.ifNoneMatch !== undefined) {
      throw new TypeError('ifMatch and ifNoneMatch cannot both be given');
    }
    if (options.ifMatch !== undefined) headers['If-Match'] = `"${options.ifMatch}"`;
    if (options.ifNoneMatch !== undefined) {
      if (options.ifNoneMatch !== '*') throw new TypeError("ifNoneMatch takes only '*'");
      headers['If-None-Match'] = '*';
    }
    const conditional = options.ifMatch !== undefined || options.ifNoneMatch !== undefined;
    const response = await this.keyservice.call('PUT', '/key', {
      body: asBytes(bytes),
      headers,
      signer: this.signer,
      idempotent: conditional,
      expect: [200, 201],
    });
    return (await response.json()).version;
  }

  /**
   * `GET /key`: the latest version, or the given one.
   * @param {number} [version]
   * @returns {Promise<{version: number, contentType: string, bytes: Uint8Array}>}
   */
  async getKey(version) {
    const path = version === undefined ? '/key' : `/key?version=${Number(version)}`;
    const response = await this.keyservice.call('GET', path, { signer: this.signer });
    const etag = response.headers.get('etag') ?? '';
    return {
      version: Number(etag.replaceAll('"', '')),
      contentType: response.headers.get('content-type') ?? 'application/octet-stream',
      bytes: new Uint8Array(await response.arrayBuffer()),
    };
  }

  /**
   * The number of the latest version (a `GET /key` whose bytes are dropped).
   * @returns {Promise<number>}
   */
  async getKeyVersion() {
    const key = await this.getKey();
    key.bytes.fill(0);
    return key.version;
  }

  /** `DELETE /key`: every version of the key, gone. */
  async deleteKey() {
    await this.keyservice.call('DELETE', '/key', { signer: this.signer, idempotent: true, expect: [204] });
  }

  /** `DELETE /session`: this session ends at once. */
  async logout() {
    await this.keyservice.call('DELETE', '/session', { signer: this.signer, idempotent: true, expect: [204] });
  }

  /**
   * `GET /key/history`: a page of who used this user's key and sessions, newest first.
   * Pass a page's `next` as `before` for the older page after it.
   * @param {{limit?: number, before?: string}} [options]
   * @returns {Promise<{entries: AccessEntry[], next: string|null}>}
   */
  async accessHistory(options = {}) {
    const query = new URLSearchParams();
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    if (options.before !== undefined) query.set('before', options.before);
    const path = query.size === 0 ? '/key/history' : `/key/history?${query}`;
    const response = await this.keyservice.call('GET', path, { signer: this.signer });
    return response.json();
  }
}

/**
 * @typedef {object} AccessEntry
 * @property {string} id
 * @property {string} time RFC 3339, UTC
 * @property {'connect'|'key_read'|'key_write'|'key_write_unconfirmed'|'key_delete'|'logout'|'export'} operation
 * @property {string|null} session short id of the session used; null for the Real Service's own calls
 * @property {boolean} currentSession whether that is the session asking
 * @property {string} address the client address keyservice saw
 * @property {string|null} credential the Real Service credential that connected the session or made the call
 * @property {number|null} version the key version read or written; for a run of writes, the last
 * @property {number|null} [firstVersion] for a run of writes, the first version written; null otherwise
 * @property {number} count how many accesses within about a second it stands for: identical reads, or a run of writes by one session
 * @property {string|null} until when the last of them happened, if more than one
 */

/**
 * How many accesses `entries` stand for, per session and operation: each entry counts
 * `count` times. Entries merge identical reads (and a session's run of writes) that came
 * within about a second, so the same accesses may come as 7 entries in one reading and 8
 * in another: add up `count`, never the entries, to show how often something happened.
 * @param {AccessEntry[]} entries
 * @returns {Map<string|null, Record<string, number>>} session id (null: the Real Service's own calls) → operation → accesses
 */
export function countAccesses(entries) {
  const out = new Map();
  for (const entry of entries) {
    const bySession = out.get(entry.session) ?? {};
    bySession[entry.operation] = (bySession[entry.operation] ?? 0) + entry.count;
    out.set(entry.session, bySession);
  }
  return out;
}

/** The Real Service's calls, signed with its namespace credential (Node only). */
export class RealService {
  constructor(keyservice, credential) {
    this.keyservice = keyservice;
    Object.defineProperty(this, 'signer', {
      value: { keyId: credential.keyId, secret: credential.secret },
      enumerable: false,
    });
  }

  async post(path, payload) {
    const response = await this.keyservice.call('POST', path, {
      body: JSON.stringify(payload),
      headers: { 'Content-Type': 'application/json' },
      signer: this.signer,
      idempotent: path !== '/connect',
    });
    return response.json();
  }

  /**
   * `POST /connect`: a session for the device whose init token hashes to
   * `initTokenHash`, for `userId` in `namespace`. A namespace that requires independent
   * identity also needs `idToken`: the ID token the user's identity provider issued for
   * this login, with `nonce` = `initTokenHash`.
   * @returns {Promise<{sessionToken: string, expiresAt: string}>}
   */
  connect(namespace, userId, initTokenHash, { idToken } = {}) {
    const body = { namespace, userId, initTokenHash };
    if (idToken !== undefined) body.idToken = idToken;
    return this.post('/connect', body);
  }

  /**
   * `POST /erase`: destroys the user's key, sessions and access history; returns the
   * receipt. A namespace that requires independent identity also needs `idToken`: an ID
   * token the user's identity provider issued for this erasure, with `nonce` =
   * `await eraseNonce(namespace, userId)`, recently (`erase_max_age_secs`); a token
   * authorises one erasure.
   * @returns {Promise<{userId: string, erasedAt: string, versionsDestroyed: number, sessionsRevoked: number, accessRecordsDestroyed: number}>}
   */
  erase(namespace, userId, { idToken } = {}) {
    const body = { namespace, userId };
    if (idToken !== undefined) body.idToken = idToken;
    return this.post('/erase', body);
  }

  /** `POST /export`: what keyservice holds about the user (never key bytes). */
  export(namespace, userId) {
    return this.post('/export', { namespace, userId });
  }
}

// ---- Data keys: generate, escrow, fetch as non-extractable CryptoKeys. ----

const AES_GCM = { name: 'AES-GCM', length: 256 };

/** The Content-Type of a raw 256-bit data key at keyservice. */
const DATA_KEY_TYPE = 'application/vnd.keyservice.aes-gcm-256';
/** The Content-Type of a data key wrapped under a factor only the user holds. */
export const WRAPPED_KEY_TYPE = 'application/vnd.keyservice.wrapped-v1';

/**
 * What the user holds, for wrapping the data key before it is escrowed:
 * `{ passphrase, params? }` (Argon2id) or `{ passkey: { credentialId, rpId? } }` (a
 * passkey's WebAuthn PRF; browsers). Without one, keyservice holds the key itself.
 * @typedef {{passphrase: string, params?: Argon2Params} | {passkey: {credentialId: Uint8Array, rpId?: string}}} UserFactor
 */

/**
 * Makes a new 256-bit AES-GCM data key, escrows it (only if none is escrowed yet), and
 * returns it as a non-extractable `CryptoKey`; the raw bytes are wiped. With a
 * `userFactor`, what is escrowed is the key wrapped under it.
 * @param {Session} session
 * @param {{userFactor?: UserFactor}} [options]
 * @returns {Promise<CryptoKey>}
 */
export async function escrowNewDataKey(session, options = {}) {
  const raw = globalThis.crypto.getRandomValues(new Uint8Array(32));
  try {
    const factor = options.userFactor;
    if (factor) {
      const wrapped = await wrapForFactor(raw, factor);
      await session.putKey(wrapped, { contentType: WRAPPED_KEY_TYPE, ifNoneMatch: '*' });
    } else {
      await session.putKey(raw, { contentType: DATA_KEY_TYPE, ifNoneMatch: '*' });
    }
    return await subtle().importKey('raw', raw, AES_GCM, false, ['encrypt', 'decrypt']);
  } finally {
    raw.fill(0);
  }
}

/**
 * Fetches the escrowed data key and returns it as a non-extractable `CryptoKey`; the
 * fetched bytes are wiped. A key escrowed wrapped needs its `userFactor`
 * (`user_factor_required` without one, `wrong_user_factor` with another).
 *
 * `fetchDataKey(session, { version, userFactor })`; the older form
 * `fetchDataKey(session, version, { userFactor })` still works.
 * @param {Session} session
 * @param {number | {version?: number, userFactor?: UserFactor}} [versionOrOptions] the latest version when absent
 * @param {{userFactor?: UserFactor}} [legacyOptions]
 * @returns {Promise<CryptoKey>}
 */
export async function fetchDataKey(session, versionOrOptions, legacyOptions = {}) {
  const options =
    versionOrOptions !== null && typeof versionOrOptions === 'object'
      ? versionOrOptions
      : { ...legacyOptions, version: versionOrOptions };
  const key = await session.getKey(options.version);
  let raw = key.bytes;
  try {
    if (key.contentType === WRAPPED_KEY_TYPE) {
      if (!options.userFactor) {
        throw new KeyserviceError('the data key is wrapped under a passphrase or passkey; give the userFactor', { code: 'user_factor_required' });
      }
      raw = await unwrapForFactor(key.bytes, options.userFactor);
    }
    if (raw.length !== 32) throw new KeyserviceError('the escrowed key is not a 256-bit AES key', { code: 'not_a_data_key' });
    return await subtle().importKey('raw', raw, AES_GCM, false, ['encrypt', 'decrypt']);
  } finally {
    key.bytes.fill(0);
    raw.fill(0);
  }
}

/**
 * The user's data key: fetched when escrowed, else made and escrowed. If another device
 * escrowed one first, that one is fetched.
 * @param {Session} session
 * @param {{userFactor?: UserFactor}} [options]
 * @returns {Promise<CryptoKey>}
 */
export async function getOrCreateDataKey(session, options = {}) {
  try {
    return await fetchDataKey(session, { userFactor: options.userFactor });
  } catch (error) {
    if (!(error instanceof KeyserviceError) || error.code !== 'no_key') throw error;
  }
  try {
    return await escrowNewDataKey(session, options);
  } catch (error) {
    if (error instanceof KeyserviceError && error.code === 'precondition_failed') {
      return fetchDataKey(session, { userFactor: options.userFactor });
    }
    throw error;
  }
}

async function wrapForFactor(raw, factor) {
  if (typeof factor.passphrase === 'string') return wrapWithPassphrase(raw, factor.passphrase, { params: factor.params });
  if (factor.passkey) {
    const prfSalt = globalThis.crypto.getRandomValues(new Uint8Array(PRF_SALT_LEN));
    const output = await passkeyPrf({ ...factor.passkey, prfSalt });
    try {
      return await wrapWithPrf(raw, output, { credentialId: factor.passkey.credentialId, prfSalt });
    } finally {
      output.fill(0);
    }
  }
  throw new TypeError('userFactor takes { passphrase } or { passkey: { credentialId } }');
}

async function unwrapForFactor(wrapped, factor) {
  try {
    if (typeof factor.passphrase === 'string') return await unwrapWithPassphrase(wrapped, factor.passphrase);
    if (factor.passkey) {
      const described = describeWrapped(wrapped);
      if (described.kdf !== 'webauthn-prf') throw new WrapError('the key is wrapped under a passphrase', 'other_factor');
      const output = await passkeyPrf({ ...factor.passkey, credentialId: described.credentialId, prfSalt: described.prfSalt });
      try {
        return await unwrapWithPrf(wrapped, output);
      } finally {
        output.fill(0);
      }
    }
  } catch (error) {
    throw error instanceof KeyserviceError ? error : passkeyError(error);
  }
  throw new TypeError('userFactor takes { passphrase } or { passkey: { credentialId } }');
}

// ---- Wrapping a key under a factor only the user holds (docs/wrapping.md). ----
//
// Version 1, the same bytes as the Rust client's `wrap` module: version, kdf (1 =
// Argon2id, 2 = WebAuthn PRF), the kdf's parameters, a 12-byte nonce, then AES-256-GCM
// of the key with every byte before it as associated data.

const WRAP_VERSION = 1;
const KDF_ARGON2ID = 1;
const KDF_PRF = 2;
const PRF_SALT_LEN = 32;
const PRF_INFO = encoder.encode('keyservice-wrap v1 webauthn-prf');

/** @typedef {{memoryKib: number, iterations: number, parallelism: number}} Argon2Params */

/** 64 MiB, 3 passes, 1 lane: about 1.7 s in Node on a server core. */
export const DEFAULT_ARGON2 = Object.freeze({ memoryKib: 65536, iterations: 3, parallelism: 1 });
/** The least a new wrap may use (OWASP's minimum for Argon2id). */
export const MINIMUM_ARGON2 = Object.freeze({ memoryKib: 19456, iterations: 2, parallelism: 1 });
/** The most a wrapped key may ask of the device opening it. */
export const MAXIMUM_ARGON2 = Object.freeze({ memoryKib: 2 * 1024 * 1024, iterations: 64, parallelism: 16 });

/**
 * Why a key could not be wrapped or unwrapped: a `KeyserviceError` (status 0) whose
 * `code` says which case: `malformed`, `wrong_user_factor`, `other_factor`,
 * `parameters`, `prf_unsupported`, `passkey_not_allowed`, `passkey_failed`.
 */
export class WrapError extends KeyserviceError {
  constructor(message, code, cause) {
    super(message, { code, cause });
    this.name = 'WrapError';
  }
}

/** A WebAuthn call's failure as a `WrapError`: declined, timed out or no such passkey, or anything else. */
function passkeyError(cause) {
  if (cause instanceof KeyserviceError) return cause;
  if (cause?.name === 'NotAllowedError') {
    return new WrapError('the passkey was not available, or the user did not confirm in time', 'passkey_not_allowed', cause);
  }
  return new WrapError('the passkey could not be used', 'passkey_failed', cause);
}

function within(params, low, high) {
  return ['memoryKib', 'iterations', 'parallelism'].every(
    (name) => Number.isInteger(params[name]) && params[name] >= low[name] && params[name] <= high[name],
  );
}

async function argon2Kek(passphrase, params, salt) {
  const { argon2idAsync } = await import('@noble/hashes/argon2.js');
  const password = encoder.encode(passphrase.normalize('NFC'));
  try {
    return await argon2idAsync(password, salt, {
      m: params.memoryKib,
      t: params.iterations,
      p: params.parallelism,
      dkLen: 32,
      version: 0x13,
    });
  } finally {
    password.fill(0);
  }
}

async function prfKek(prfOutput) {
  const bytes = asBytes(prfOutput);
  if (bytes.length !== 32) throw new WrapError('a PRF output is 32 bytes', 'malformed');
  const ikm = await subtle().importKey('raw', bytes, 'HKDF', false, ['deriveBits']);
  const bits = await subtle().deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: PRF_INFO }, ikm, 256);
  return new Uint8Array(bits);
}

async function sealWrapped(kek, header, nonce, key) {
  if (key.length === 0) throw new WrapError('an empty key', 'malformed');
  const full = concat([header, nonce]);
  const aes = await subtle().importKey('raw', kek, 'AES-GCM', false, ['encrypt']);
  kek.fill(0);
  const sealed = await subtle().encrypt({ name: 'AES-GCM', iv: nonce, additionalData: full }, aes, key);
  return concat([full, new Uint8Array(sealed)]);
}

async function openWrapped(kek, wrapped, headerLength) {
  const aes = await subtle().importKey('raw', kek, 'AES-GCM', false, ['decrypt']);
  kek.fill(0);
  const header = wrapped.slice(0, headerLength);
  try {
    const plain = await subtle().decrypt(
      { name: 'AES-GCM', iv: header.slice(headerLength - 12), additionalData: header },
      aes,
      wrapped.slice(headerLength),
    );
    return new Uint8Array(plain);
  } catch {
    throw new WrapError('the passphrase or passkey does not open this key', 'wrong_user_factor');
  }
}

function parseWrapped(wrapped) {
  const bytes = asBytes(wrapped);
  const tooShort = () => new WrapError('not a wrapped key: too short', 'malformed');
  if (bytes.length < 2) throw tooShort();
  if (bytes[0] !== WRAP_VERSION) throw new WrapError('not a wrapped key: unknown format version', 'malformed');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let described;
  let headerLength;
  if (bytes[1] === KDF_ARGON2ID) {
    if (bytes.length < 2 + 9 + 16) throw tooShort();
    const params = { memoryKib: view.getUint32(2), iterations: view.getUint32(6), parallelism: bytes[10] };
    const floor = { memoryKib: 8, iterations: 1, parallelism: 1 };
    if (!within(params, floor, MAXIMUM_ARGON2) || params.memoryKib < 8 * params.parallelism) {
      throw new WrapError('the wrapped key asks for an Argon2id cost outside what is allowed', 'parameters');
    }
    described = { kdf: 'argon2id', params, salt: bytes.slice(11, 27) };
    headerLength = 27 + 12;
  } else if (bytes[1] === KDF_PRF) {
    if (bytes.length < 2 + PRF_SALT_LEN + 2) throw tooShort();
    const length = view.getUint16(2 + PRF_SALT_LEN);
    if (length < 1 || length > 1023) throw new WrapError('not a wrapped key: a credential id is 1 to 1023 bytes', 'malformed');
    const start = 2 + PRF_SALT_LEN + 2;
    if (bytes.length < start + length) throw tooShort();
    described = { kdf: 'webauthn-prf', prfSalt: bytes.slice(2, 2 + PRF_SALT_LEN), credentialId: bytes.slice(start, start + length) };
    headerLength = start + length + 12;
  } else {
    throw new WrapError('not a wrapped key: unknown key derivation', 'malformed');
  }
  if (bytes.length <= headerLength + 16) throw tooShort();
  return { bytes, described, headerLength };
}

/**
 * What a wrapped key needs to be opened: `{kdf: 'argon2id', params}` or
 * `{kdf: 'webauthn-prf', credentialId, prfSalt}`.
 * @param {Uint8Array} wrapped
 */
export function describeWrapped(wrapped) {
  const { described } = parseWrapped(wrapped);
  if (described.kdf === 'argon2id') return { kdf: described.kdf, params: described.params };
  return described;
}

/**
 * Wraps `key` under `passphrase` (Argon2id, then AES-256-GCM), with fresh salt and
 * nonce. `salt` and `nonce` may be given for known-answer tests only.
 * @param {Uint8Array} key
 * @param {string} passphrase
 * @param {{params?: Argon2Params, salt?: Uint8Array, nonce?: Uint8Array}} [options]
 * @returns {Promise<Uint8Array>}
 */
export async function wrapWithPassphrase(key, passphrase, options = {}) {
  const params = options.params ?? DEFAULT_ARGON2;
  if (!within(params, MINIMUM_ARGON2, MAXIMUM_ARGON2)) {
    throw new WrapError('Argon2id parameters below the minimum (19 MiB, 2 passes, 1 lane) or above the maximum', 'parameters');
  }
  const salt = options.salt ?? globalThis.crypto.getRandomValues(new Uint8Array(16));
  const nonce = options.nonce ?? globalThis.crypto.getRandomValues(new Uint8Array(12));
  const header = new Uint8Array(11);
  const view = new DataView(header.buffer);
  header[0] = WRAP_VERSION;
  header[1] = KDF_ARGON2ID;
  view.setUint32(2, params.memoryKib);
  view.setUint32(6, params.iterations);
  header[10] = params.parallelism;
  const kek = await argon2Kek(passphrase, params, salt);
  return sealWrapped(kek, concat([header, salt]), nonce, asBytes(key));
}

/**
 * Opens a key `wrapWithPassphrase` wrapped.
 * @param {Uint8Array} wrapped
 * @param {string} passphrase
 * @returns {Promise<Uint8Array>}
 */
export async function unwrapWithPassphrase(wrapped, passphrase) {
  const { bytes, described, headerLength } = parseWrapped(wrapped);
  if (described.kdf !== 'argon2id') throw new WrapError('the key is wrapped under a passkey', 'other_factor');
  const kek = await argon2Kek(passphrase, described.params, described.salt);
  return openWrapped(kek, bytes, headerLength);
}

/**
 * Wraps `key` under a passkey's PRF output (evaluated on `prfSalt`), for the passkey
 * `credentialId`, with a fresh nonce (`nonce` for known-answer tests only).
 * @param {Uint8Array} key
 * @param {Uint8Array} prfOutput 32 bytes
 * @param {{credentialId: Uint8Array, prfSalt: Uint8Array, nonce?: Uint8Array}} options
 * @returns {Promise<Uint8Array>}
 */
export async function wrapWithPrf(key, prfOutput, options) {
  const credentialId = asBytes(options.credentialId);
  const prfSalt = asBytes(options.prfSalt);
  if (credentialId.length < 1 || credentialId.length > 1023) throw new WrapError('a credential id is 1 to 1023 bytes', 'malformed');
  if (prfSalt.length !== PRF_SALT_LEN) throw new WrapError('a PRF salt is 32 bytes', 'malformed');
  const nonce = options.nonce ?? globalThis.crypto.getRandomValues(new Uint8Array(12));
  const length = new Uint8Array(2);
  new DataView(length.buffer).setUint16(0, credentialId.length);
  const header = concat([new Uint8Array([WRAP_VERSION, KDF_PRF]), prfSalt, length, credentialId]);
  return sealWrapped(await prfKek(prfOutput), header, nonce, asBytes(key));
}

/**
 * Opens a key `wrapWithPrf` wrapped, with its passkey's PRF output on its `prfSalt`
 * (see `describeWrapped`).
 * @param {Uint8Array} wrapped
 * @param {Uint8Array} prfOutput
 * @returns {Promise<Uint8Array>}
 */
export async function unwrapWithPrf(wrapped, prfOutput) {
  const { bytes, described, headerLength } = parseWrapped(wrapped);
  if (described.kdf !== 'webauthn-prf') throw new WrapError('the key is wrapped under a passphrase', 'other_factor');
  return openWrapped(await prfKek(prfOutput), bytes, headerLength);
}

// ---- Passkeys with the WebAuthn PRF extension (browsers). ----

/**
 * Registers a passkey that can derive keys (WebAuthn `prf`) for `userName`; returns its
 * credential id. Throws `WrapError` (`prf_unsupported`) when the authenticator cannot.
 * @param {{userName: string, rpId?: string, rpName?: string}} options
 * @returns {Promise<Uint8Array>}
 */
export async function createPasskey({ userName, rpId, rpName }) {
  const credential = await navigator.credentials.create({
    publicKey: {
      rp: { name: rpName ?? 'keyservice', ...(rpId ? { id: rpId } : {}) },
      user: { id: globalThis.crypto.getRandomValues(new Uint8Array(16)), name: userName, displayName: userName },
      challenge: globalThis.crypto.getRandomValues(new Uint8Array(32)),
      pubKeyCredParams: [{ type: 'public-key', alg: -7 }, { type: 'public-key', alg: -257 }],
      authenticatorSelection: { residentKey: 'preferred', userVerification: 'required' },
      extensions: { prf: {} },
    },
  }).catch((cause) => {
    throw passkeyError(cause);
  });
  if (!credential.getClientExtensionResults().prf?.enabled) {
    throw new WrapError('this authenticator cannot derive keys (no WebAuthn PRF)', 'prf_unsupported');
  }
  return new Uint8Array(credential.rawId);
}

/**
 * The PRF output of the passkey `credentialId` on `prfSalt` (32 bytes each way); asks
 * the user to confirm with their authenticator.
 * @param {{credentialId: Uint8Array, prfSalt: Uint8Array, rpId?: string}} options
 * @returns {Promise<Uint8Array>}
 */
export async function passkeyPrf({ credentialId, prfSalt, rpId }) {
  const assertion = await navigator.credentials.get({
    publicKey: {
      challenge: globalThis.crypto.getRandomValues(new Uint8Array(32)),
      allowCredentials: [{ type: 'public-key', id: asBytes(credentialId) }],
      userVerification: 'required',
      ...(rpId ? { rpId } : {}),
      extensions: { prf: { eval: { first: asBytes(prfSalt) } } },
    },
  }).catch((cause) => {
    throw passkeyError(cause);
  });
  const first = assertion.getClientExtensionResults().prf?.results?.first;
  if (!first) throw new WrapError('the authenticator gave no PRF output', 'prf_unsupported');
  return new Uint8Array(first);
}

/**
 * Encrypts with AES-GCM under a fresh 96-bit IV: returns IV ‖ ciphertext.
 * @param {CryptoKey} key
 * @param {Uint8Array|string} plaintext
 * @returns {Promise<Uint8Array>}
 */
export async function encrypt(key, plaintext) {
  const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
  const sealed = new Uint8Array(await subtle().encrypt({ name: 'AES-GCM', iv }, key, asBytes(plaintext)));
  return concat([iv, sealed]);
}

/**
 * Decrypts what `encrypt` made. Throws when the key is wrong or the data was changed.
 * @param {CryptoKey} key
 * @param {Uint8Array} sealed
 * @returns {Promise<Uint8Array>}
 */
export async function decrypt(key, sealed) {
  const bytes = asBytes(sealed);
  const failed = (cause) =>
    new KeyserviceError('the data does not open under this key: another key, or it was changed', { code: 'decrypt_failed', cause });
  if (bytes.length < 12 + 16) throw failed(new RangeError('too short to be AES-GCM output'));
  const plain = await subtle()
    .decrypt({ name: 'AES-GCM', iv: bytes.slice(0, 12) }, key, bytes.slice(12))
    .catch((cause) => {
      throw failed(cause);
    });
  return new Uint8Array(plain);
}

// ---- Keeping a CryptoKey for the session in IndexedDB (browsers). ----

const DB_NAME = 'keyservice';
const STORE = 'keys';

function openDb() {
  return new Promise((resolve, reject) => {
    if (!globalThis.indexedDB) {
      reject(new KeyserviceError('IndexedDB is not available here', { code: 'indexeddb_unavailable' }));
      return;
    }
    const request = globalThis.indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function withStore(mode, action) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(STORE, mode);
      const request = action(transaction.objectStore(STORE));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
    });
  } finally {
    db.close();
  }
}

/**
 * Keeps a (non-extractable) `CryptoKey` in IndexedDB under `name`: the browser stores
 * the key object itself, and script can use it but never read its bytes. Never put key
 * bytes in localStorage.
 */
export function storeKey(name, key) {
  if (key.extractable) throw new TypeError('store only non-extractable keys');
  return withStore('readwrite', (store) => store.put(key, name));
}

/** The `CryptoKey` kept under `name`, or `undefined`. */
export function loadKey(name) {
  return withStore('readonly', (store) => store.get(name));
}

/** Forgets the key kept under `name` (at logout). */
export function forgetKey(name) {
  return withStore('readwrite', (store) => store.delete(name));
}
