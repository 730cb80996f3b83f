/**
 * Signing keys: ed25519 as OSTree's signapi uses them, and OpenPGP (GPG) keys, which the `ostree`
 * packaged by Debian (2022.7, built without libsodium) verifies through gpgme.
 *
 *   ed25519 secret   a file holding base64(seed(32) ‖ public(32)): libsodium's 64-byte secret key,
 *                    the format `ostree sign --keys-file` reads
 *   ed25519 public   base64 of the 32 raw bytes (what `ostree remote add --sign-verify=ed25519=inline:`
 *                    and trusted.ed25519 / revoked.ed25519 hold, one per line)
 *   gpg secret       an ASCII-armored OpenPGP private key (v4; EdDSA "legacy" ed25519, which gpg 2.2
 *                    and gpgme verify; RSA keys made by gpg are read too)
 *   gpg public       ASCII-armored or binary (`gpg --export`) OpenPGP public key(s)
 *
 * A key's id names it wherever a signature is reported (errors, ref log records, GET /api/v1/keys):
 * `ed25519:<base64 public key>` (the text ostree's key files hold) or `gpg:<40 hex fingerprint>`.
 * Private keys are never written into a repository: they are read from files given by path.
 *
 * OpenPGP.js (~600 KB of JavaScript) is loaded only when a GPG key is used.
 */
import { createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { errnoCode, RegistryError } from '../errors.js';

export type KeyType = 'ed25519' | 'gpg';

/** A public key as it is published and configured. */
export interface PublicKeyInfo {
  type: KeyType;
  id: string;
  /** A label chosen by whoever configured the key (server config, `key generate --name`). */
  name?: string;
  /** ed25519: base64 of the 32 bytes; gpg: the armored public key. */
  public: string;
}

export interface SigningKey extends PublicKeyInfo {
  /** A detached signature over exactly `data`: 64 bytes (ed25519) or one binary OpenPGP signature packet. */
  sign(data: Uint8Array): Promise<Buffer>;
}

export interface VerifyKey extends PublicKeyInfo {
  /** True if `sig` is a valid signature over `data` by this key. Never throws for a malformed sig. */
  verify(data: Uint8Array, sig: Uint8Array): Promise<boolean>;
}

type OpenPgp = typeof import('openpgp');
let openpgpModule: Promise<OpenPgp> | undefined;
export function loadOpenPgp(): Promise<OpenPgp> {
  openpgpModule ??= import('openpgp');
  return openpgpModule;
}

/** PKCS#8 DER prefix of an ed25519 private key; the 32-byte seed follows (RFC 8410). */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
/** SPKI DER prefix of an ed25519 public key; the 32 raw bytes follow. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function ed25519Id(pub: Buffer): string {
  return `ed25519:${pub.toString('base64')}`;
}

export function gpgId(fingerprint: string): string {
  return `gpg:${fingerprint.toUpperCase()}`;
}

/** A file name for a key id, safe everywhere (base64 has "/" and "+"). */
export function keyFileName(id: string): string {
  if (id.startsWith('ed25519:')) return `ed25519-${Buffer.from(id.slice(8), 'base64').toString('hex')}`;
  return `gpg-${id.slice(4).toLowerCase()}`;
}

function badKey(what: string, why: string, hint?: string): RegistryError {
  return new RegistryError('E_USAGE', `${what}: ${why}`, { path: what }, hint);
}

export function ed25519FromSeed(seed: Buffer, name?: string): SigningKey {
  const priv = createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  const pub = createPublicKey(priv).export({ format: 'der', type: 'spki' }).subarray(-32);
  return {
    type: 'ed25519',
    id: ed25519Id(pub),
    ...(name ? { name } : {}),
    public: pub.toString('base64'),
    // Pure Ed25519 (RFC 8032): deterministic, byte for byte what ostree's libsodium signer makes.
    sign: async (data) => sign(null, data, priv),
  };
}

export function ed25519VerifyKey(pub: Buffer, name?: string): VerifyKey {
  if (pub.length !== 32) throw badKey('ed25519 public key', `${pub.length} bytes, expected 32`);
  const key: KeyObject = createPublicKey({
    key: Buffer.concat([ED25519_SPKI_PREFIX, pub]),
    format: 'der',
    type: 'spki',
  });
  return {
    type: 'ed25519',
    id: ed25519Id(pub),
    ...(name ? { name } : {}),
    public: pub.toString('base64'),
    verify: async (data, sig) => {
      if (sig.length !== 64) return false;
      try {
        return verify(null, data, key, sig);
      } catch {
        return false;
      }
    },
  };
}

const ARMOR_PRIVATE = '-----BEGIN PGP PRIVATE KEY BLOCK-----';
const ARMOR_PUBLIC = '-----BEGIN PGP PUBLIC KEY BLOCK-----';
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Parse a secret key file's text (see the top of this file). `what` names it in errors. */
export async function parseSigningKey(text: string, what: string, name?: string): Promise<SigningKey> {
  const trimmed = text.trim();
  if (trimmed.includes(ARMOR_PRIVATE)) {
    const openpgp = await loadOpenPgp();
    let key: import('openpgp').PrivateKey;
    try {
      key = await openpgp.readPrivateKey({ armoredKey: trimmed });
    } catch (e) {
      throw badKey(what, `not a readable OpenPGP private key (${(e as Error).message})`);
    }
    if (!key.isDecrypted()) {
      throw badKey(
        what,
        'the OpenPGP key is protected by a passphrase',
        'export it without one for the signer',
      );
    }
    const pub = key.toPublic();
    return {
      type: 'gpg',
      id: gpgId(key.getFingerprint()),
      ...(name ? { name } : {}),
      public: pub.armor(),
      sign: async (data) => {
        const sig = await openpgp.sign({
          message: await openpgp.createMessage({ binary: data }),
          signingKeys: key,
          detached: true,
          format: 'binary',
        });
        return Buffer.from(sig as Uint8Array);
      },
    };
  }
  if (trimmed.includes(ARMOR_PUBLIC)) {
    throw badKey(what, 'is a public key; signing needs the secret key');
  }
  const raw = BASE64.test(trimmed) ? Buffer.from(trimmed, 'base64') : undefined;
  if (raw?.length === 64) {
    const key = ed25519FromSeed(raw.subarray(0, 32), name);
    // The second half is the public key; one that does not match the seed is a damaged file.
    if (Buffer.from(key.public, 'base64').compare(raw.subarray(32)) !== 0) {
      throw badKey(what, 'the public half of the ed25519 secret key does not match its seed');
    }
    return key;
  }
  if (raw?.length === 32) {
    throw badKey(
      what,
      'holds 32 bytes: a public ed25519 key, or a bare seed; signing needs seed ‖ public (64 bytes)',
    );
  }
  throw badKey(
    what,
    'is neither an ed25519 secret key (base64 of 64 bytes) nor an armored OpenPGP private key',
    'make one with: sysroot key generate --type ed25519|gpg --name NAME -o FILE',
  );
}

async function readKeyFile(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new RegistryError(
      errnoCode(e) === 'ENOENT' ? 'E_NOT_FOUND' : 'E_IO',
      `cannot read ${what} ${path}: ${(e as Error).message}`,
      { path },
    );
  }
}

/** A secret key file, given as `PATH` or `NAME=PATH` (the name labels the key in reports). */
export async function loadSigningKey(spec: string): Promise<SigningKey> {
  const eq = spec.indexOf('=');
  const named = eq > 0 && /^[A-Za-z0-9_][-._A-Za-z0-9]*$/.test(spec.slice(0, eq));
  const name = named ? spec.slice(0, eq) : undefined;
  const path = named ? spec.slice(eq + 1) : spec;
  const bytes = await readKeyFile(path, 'signing key');
  return parseSigningKey(bytes.toString('utf8'), path, name);
}

/**
 * Public keys from text: armored OpenPGP public keys (several blocks allowed), or ed25519 keys as
 * base64, one per line (ostree's trusted.ed25519 format; `#` comments and blank lines skipped).
 */
export async function parseVerifyKeys(text: string | Buffer, what: string): Promise<VerifyKey[]> {
  const s = typeof text === 'string' ? text : text.toString('latin1');
  if (s.includes(ARMOR_PUBLIC) || s.includes(ARMOR_PRIVATE)) {
    const openpgp = await loadOpenPgp();
    let keys: import('openpgp').Key[];
    try {
      keys = await openpgp.readKeys({ armoredKeys: s });
    } catch (e) {
      throw badKey(what, `not a readable OpenPGP key (${(e as Error).message})`);
    }
    return keys.map((k) => gpgVerifyKey(openpgp, k.isPrivate() ? k.toPublic() : k));
  }
  if (typeof text !== 'string' && text.length > 0 && (text[0]! & 0x80) !== 0) {
    // Binary OpenPGP (a `gpg --export` keyring): the first byte of a packet has its top bit set.
    const openpgp = await loadOpenPgp();
    let keys: import('openpgp').Key[];
    try {
      keys = await openpgp.readKeys({ binaryKeys: new Uint8Array(text) });
    } catch (e) {
      throw badKey(what, `not a readable OpenPGP keyring (${(e as Error).message})`);
    }
    return keys.map((k) => gpgVerifyKey(openpgp, k.isPrivate() ? k.toPublic() : k));
  }
  const out: VerifyKey[] = [];
  for (const line of s.split('\n')) {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) continue;
    const raw = BASE64.test(l) ? Buffer.from(l, 'base64') : undefined;
    if (raw?.length !== 32) {
      throw badKey(
        what,
        `"${l.slice(0, 60)}" is not an ed25519 public key (base64 of 32 bytes)`,
        'give an ed25519 public key in base64, a file of them (one per line), or an OpenPGP public key file',
      );
    }
    out.push(ed25519VerifyKey(raw));
  }
  if (out.length === 0) throw badKey(what, 'holds no key');
  return out;
}

function gpgVerifyKey(openpgp: OpenPgp, key: import('openpgp').Key): VerifyKey {
  return {
    type: 'gpg',
    id: gpgId(key.getFingerprint()),
    public: key.armor(),
    verify: async (data, sig) => {
      try {
        const r = await openpgp.verify({
          message: await openpgp.createMessage({ binary: data }),
          signature: await openpgp.readSignature({ binarySignature: sig }),
          verificationKeys: key,
          format: 'binary',
          expectSigned: true,
        });
        // expectSigned makes verify throw unless a signature by one of the keys checks out.
        return r.signatures.length > 0;
      } catch {
        return false;
      }
    },
  };
}

/**
 * A key given on a command line or in a config: inline ed25519 base64, or a file (ed25519 lines, an
 * OpenPGP public key or keyring).
 */
export async function loadVerifyKeys(spec: string): Promise<VerifyKey[]> {
  const t = spec.trim();
  if (BASE64.test(t) && Buffer.from(t, 'base64').length === 32) return parseVerifyKeys(t, 'key');
  if (t.includes(ARMOR_PUBLIC)) return parseVerifyKeys(t, 'key');
  return parseVerifyKeys(await readKeyFile(spec, 'public key'), spec);
}

/** The public half of a key, to verify with. */
export async function verifyKeyOf(info: PublicKeyInfo): Promise<VerifyKey> {
  const [k] =
    info.type === 'ed25519'
      ? [ed25519VerifyKey(Buffer.from(info.public, 'base64'), info.name)]
      : await parseVerifyKeys(info.public, info.id);
  if (!k || k.id !== info.id) {
    throw new RegistryError('E_CORRUPT_OBJECT', `key ${info.id}: its public key material names ${k?.id}`, {
      found: k?.id,
      expected: info.id,
    });
  }
  return info.name ? { ...k, name: info.name } : k;
}

/** A new key: the secret file's text and the public key's text. */
export async function generateKey(
  type: KeyType,
  name: string,
): Promise<{ secret: string; public: string; id: string }> {
  if (type === 'ed25519') {
    const { randomBytes } = await import('node:crypto');
    const seed = randomBytes(32);
    const key = ed25519FromSeed(seed);
    return {
      secret: `${Buffer.concat([seed, Buffer.from(key.public, 'base64')]).toString('base64')}\n`,
      public: `${key.public}\n`,
      id: key.id,
    };
  }
  const openpgp = await loadOpenPgp();
  // v4, EdDSA over ed25519 ("legacy" in RFC 9580 terms): what gpg 2.2 and the gpgme inside
  // Debian 12's ostree verify. RFC 9580's new Ed25519 (v6) is not understood by gpg 2.2.
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'ed25519Legacy',
    userIDs: [{ name }],
    format: 'armored',
  });
  const key = await openpgp.readPrivateKey({ armoredKey: privateKey });
  return { secret: privateKey, public: publicKey, id: gpgId(key.getFingerprint()) };
}
