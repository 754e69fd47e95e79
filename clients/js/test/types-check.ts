// Compiled by `tsc --noEmit` only: the declarations describe how the client is used.
import {
  Keyservice,
  KeyserviceError,
  decrypt,
  encrypt,
  getOrCreateDataKey,
  initTokenHash,
  MINIMUM_ARGON2,
  WrapError,
  describeWrapped,
  unwrapWithPassphrase,
  ss1Authorization,
} from '../src/index.js';

export async function flow(url: string, credential: { keyId: string; secret: string }): Promise<string> {
  const keyservice = new Keyservice(url, { getRetries: 1, timeoutMs: 5000 });
  const { initToken } = await keyservice.init();
  const hash: string = await initTokenHash(initToken);
  const grant = await keyservice.realService(credential).connect('demo', 'alice', hash);
  const session = keyservice.session(grant.sessionToken, initToken);
  const version: number = await session.putKey(new Uint8Array(32), { ifNoneMatch: '*' });
  const key = await session.getKey(version);
  const dataKey: CryptoKey = await getOrCreateDataKey(session);
  const wrappedKey: CryptoKey = await getOrCreateDataKey(session, { userFactor: { passphrase: 'p', params: MINIMUM_ARGON2 } });
  const escrowed = await session.getKey();
  const described = describeWrapped(escrowed.bytes);
  if (described.kdf === 'argon2id') {
    try {
      await unwrapWithPassphrase(escrowed.bytes, 'p');
    } catch (error) {
      if (error instanceof WrapError && error.code === 'wrong_user_factor') return 'wrong';
    }
  }
  await encrypt(wrappedKey, 'note');
  const sealed: Uint8Array = await encrypt(dataKey, 'note');
  await decrypt(dataKey, sealed);
  try {
    await session.putKey(key.bytes, { ifMatch: version - 1 });
  } catch (error) {
    if (error instanceof KeyserviceError && error.code === 'precondition_failed') return String(error.status);
  }
  return ss1Authorization({ keyId: 'k', secret: 's', method: 'GET', path: '/key', date: keyservice.url });
}
