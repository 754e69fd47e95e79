// Types of the keyservice JavaScript client (src/index.js).

/** The header a browser sends the request date in. */
export const X_DATE: 'X-Date';

/** 64 fresh random bytes from the platform CSPRNG. */
export function newNonce(): Uint8Array;

/** base64(SHA-512(initToken)): what a device gives its Real Service. */
export function initTokenHash(initToken: string): Promise<string>;
/** The nonce of the ID token that authorises erasing userId on a namespace with oidc. */
export function eraseNonce(namespace: string, userId: string): Promise<string>;

export type Bytes = Uint8Array | ArrayBuffer | ArrayBufferView | string;

export interface SignedRequest {
  secret: string;
  method: string;
  /** Path and query exactly as sent. */
  path: string;
  body?: Bytes;
  /** The HTTP date sent in `X-Date` (or `Date`). */
  date: string;
}

/** Lowercase hex of the ss1 HMAC-SHA-512. */
export function ss1Hash(request: SignedRequest & { nonce: Bytes }): Promise<string>;

/** The ss1 Authorization header value; a fresh random nonce unless one is given. */
export function ss1Authorization(
  request: SignedRequest & { keyId: string; nonce?: Bytes | string },
): Promise<string>;

/** An error the server answered (its status and code), or a failure to reach it. */
/**
 * Every failure of this package at run time. Arguments of the wrong type (a bug in the
 * caller) throw `TypeError` instead.
 */
export class KeyserviceError extends Error {
  constructor(message: string, details?: { status?: number; code?: string; retryAfter?: number; cause?: unknown });
  /** The HTTP status when the server answered; 0 when no answer came or the failure is on this side. */
  readonly status: number;
  /**
   * The server's error code (`no_key`, `unknown_session`, …); `network_error` or
   * `timeout` when no answer came; or this package's own: `user_factor_required`,
   * `wrong_user_factor`, `not_a_data_key`, `decrypt_failed`, `webcrypto_unavailable`,
   * `indexeddb_unavailable`, and the `WrapError` codes.
   */
  readonly code: string;
  /** Seconds from `Retry-After`, when the server sent it. */
  readonly retryAfter: number | undefined;
  /** What failed underneath (a fetch `TypeError`, a `DOMException` from WebAuthn or WebCrypto), when anything did. */
  readonly cause?: unknown;
}

export interface KeyserviceOptions {
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Retries of a GET after a network error (default 2). */
  getRetries?: number;
  /** Longest `Retry-After` waited out, in seconds (default 30). */
  maxRetryAfter?: number;
  /** Per-request timeout in milliseconds (default 30,000). */
  timeoutMs?: number;
}

export interface Key {
  version: number;
  contentType: string;
  bytes: Uint8Array;
}

export class Keyservice {
  constructor(url: string, options?: KeyserviceOptions);
  readonly url: string;
  /** Seconds added to the local clock to match the server's (learnt automatically). */
  clockOffset: number;
  init(): Promise<{ initToken: string; expiresAt: string }>;
  session(sessionToken: string, initToken: string): Session;
  realService(credential: { keyId: string; secret: string }): RealService;
}

export interface PutOptions {
  contentType?: string;
  /** Compare-and-swap: write only if this is the latest version. */
  ifMatch?: number;
  /** First write only. */
  ifNoneMatch?: '*';
}

export class Session {
  putKey(bytes: Bytes, options?: PutOptions): Promise<number>;
  getKey(version?: number): Promise<Key>;
  getKeyVersion(): Promise<number>;
  deleteKey(): Promise<void>;
  logout(): Promise<void>;
  accessHistory(options?: { limit?: number; before?: string }): Promise<AccessHistory>;
}

export interface ErasureReceipt {
  userId: string;
  erasedAt: string;
  versionsDestroyed: number;
  sessionsRevoked: number;
  accessRecordsDestroyed: number;
}

export interface ExportResponse {
  userId: string;
  keyVersions: { version: number; size: number; contentType: string; createdAt: string }[];
  sessions: { expiresAt: string }[];
}

export class RealService {
  connect(
    namespace: string,
    userId: string,
    initTokenHash: string,
    options?: { idToken?: string },
  ): Promise<{ sessionToken: string; expiresAt: string }>;
  erase(namespace: string, userId: string, options?: { idToken?: string }): Promise<ErasureReceipt>;
  export(namespace: string, userId: string): Promise<ExportResponse>;
}

/** A factor only the user holds, to wrap the data key under before it is escrowed. */
export type UserFactor =
  | { passphrase: string; params?: Argon2Params }
  | { passkey: { credentialId: Uint8Array; rpId?: string } };
export interface DataKeyOptions {
  userFactor?: UserFactor;
}
/** Generates an AES-GCM-256 key, escrows it (wrapped, with a userFactor) as the first version, returns it non-extractable. */
export function escrowNewDataKey(session: Session, options?: DataKeyOptions): Promise<CryptoKey>;
/** The escrowed data key (the latest, or `version`) as a non-extractable CryptoKey, unwrapped with the userFactor. */
export function fetchDataKey(session: Session, options?: DataKeyOptions & { version?: number }): Promise<CryptoKey>;
/** The older form: `fetchDataKey(session, version, { userFactor })`. */
export function fetchDataKey(session: Session, version?: number, options?: DataKeyOptions): Promise<CryptoKey>;
/** Fetched when escrowed, else made and escrowed. */
export function getOrCreateDataKey(session: Session, options?: DataKeyOptions): Promise<CryptoKey>;
/** The Content-Type of a data key escrowed wrapped. */
export const WRAPPED_KEY_TYPE: 'application/vnd.keyservice.wrapped-v1';

/** Argon2id's cost, stored with the wrapped key. */
export interface Argon2Params {
  memoryKib: number;
  iterations: number;
  parallelism: number;
}
export const DEFAULT_ARGON2: Readonly<Argon2Params>;
export const MINIMUM_ARGON2: Readonly<Argon2Params>;
export const MAXIMUM_ARGON2: Readonly<Argon2Params>;

/** Why a key could not be wrapped or unwrapped. */
/** A key that could not be wrapped or unwrapped (status 0). */
export class WrapError extends KeyserviceError {
  readonly code:
    | 'malformed'
    | 'wrong_user_factor'
    | 'other_factor'
    | 'parameters'
    | 'prf_unsupported'
    | 'passkey_not_allowed'
    | 'passkey_failed';
}

export type WrappedKeyDescription =
  | { kdf: 'argon2id'; params: Argon2Params }
  | { kdf: 'webauthn-prf'; credentialId: Uint8Array; prfSalt: Uint8Array };
export function describeWrapped(wrapped: Uint8Array): WrappedKeyDescription;
export function wrapWithPassphrase(
  key: Uint8Array,
  passphrase: string,
  options?: { params?: Argon2Params; salt?: Uint8Array; nonce?: Uint8Array },
): Promise<Uint8Array>;
export function unwrapWithPassphrase(wrapped: Uint8Array, passphrase: string): Promise<Uint8Array>;
export function wrapWithPrf(
  key: Uint8Array,
  prfOutput: Uint8Array,
  options: { credentialId: Uint8Array; prfSalt: Uint8Array; nonce?: Uint8Array },
): Promise<Uint8Array>;
export function unwrapWithPrf(wrapped: Uint8Array, prfOutput: Uint8Array): Promise<Uint8Array>;
/** Registers a passkey with the WebAuthn PRF extension; returns its credential id. */
export function createPasskey(options: { userName: string; rpId?: string; rpName?: string }): Promise<Uint8Array>;
/** The passkey's PRF output on prfSalt. */
export function passkeyPrf(options: { credentialId: Uint8Array; prfSalt: Uint8Array; rpId?: string }): Promise<Uint8Array>;
/** AES-GCM with a fresh IV: IV ‖ ciphertext. */
export function encrypt(key: CryptoKey, plaintext: Bytes): Promise<Uint8Array>;
export function decrypt(key: CryptoKey, sealed: Bytes): Promise<Uint8Array>;

/** Keeps a non-extractable CryptoKey in IndexedDB (browsers). */
export function storeKey(name: string, key: CryptoKey): Promise<IDBValidKey>;
export function loadKey(name: string): Promise<CryptoKey | undefined>;
export function forgetKey(name: string): Promise<undefined>;

/** One page of a user's access history, newest first. */
export interface AccessHistory {
  entries: AccessEntry[];
  /** Pass as `before` for the next (older) page; null on the last page. */
  next: string | null;
}

/** One access to a user's key or sessions. */
export interface AccessEntry {
  id: string;
  /** RFC 3339, UTC. */
  time: string;
  operation: 'connect' | 'key_read' | 'key_write' | 'key_delete' | 'logout' | 'export';
  /** Short id of the session used; null for the Real Service's own calls. */
  session: string | null;
  /** Whether that session is the one asking. */
  currentSession: boolean;
  /** The client address keyservice saw (the Real Service's, for connect and export). */
  address: string;
  /** The Real Service credential that connected the session or made the call. */
  credential: string | null;
  /** The key version read or written; for a run of writes, the last. */
  version: number | null;
  /** For a run of writes, the first version written; null otherwise (absent from older servers). */
  firstVersion?: number | null;
  /** How many accesses within about a second this entry stands for: identical reads, or a run of writes by one session. */
  count: number;
  /** When the last of them happened, if more than one. */
  until: string | null;
}

/**
 * Accesses per session (null: the Real Service's own calls) and operation, adding up
 * each entry's `count`: entries merge accesses within about a second, so their number
 * varies between readings while the counts do not.
 */
export function countAccesses(entries: AccessEntry[]): Map<string | null, Record<string, number>>;
