/**
 * Detached signatures as OSTree stores them (../shared/ostree/FORMAT.md §5), in
 * `objects/XX/<commit>.commitmeta` over the exact `.commit` bytes, and in `summary.sig` over the
 * exact `summary` bytes. Both are an `a{sv}`:
 *
 *   'ostree.sign.ed25519'  <aay>   64-byte RFC 8032 signatures (ostree's signapi, libsodium)
 *   'ostree.gpgsigs'       <aay>   binary OpenPGP detached signatures (what gpgme verifies)
 *
 * Several keys sign by adding elements to these arrays. Other keys of a commitmeta are kept as
 * they are. A verifier accepts the object if one signature verifies with a trusted key that is not
 * revoked, as ostree does.
 */
import { RegistryError } from '../errors.js';
import { Variant } from '../gvariant/index.js';
import { decodeCommitMeta, encodeCommitMeta, type Metadata } from '../objects/index.js';
import type { KeyType, SigningKey, VerifyKey } from './keys.js';

export const ED25519_SIGS = 'ostree.sign.ed25519';
export const GPG_SIGS = 'ostree.gpgsigs';

const SIG_KEYS: Record<KeyType, string> = { ed25519: ED25519_SIGS, gpg: GPG_SIGS };

/** Binary OpenPGP signatures are a few hundred bytes (RSA-4096: ~540); 16 KiB is ample. */
const MAX_GPG_SIG = 16 * 1024;

export interface Signatures {
  ed25519: Buffer[];
  gpg: Buffer[];
}

export function noSignatures(): Signatures {
  return { ed25519: [], gpg: [] };
}

export function signatureCount(s: Signatures): number {
  return s.ed25519.length + s.gpg.length;
}

/** Sign `data` with every key. */
export async function signAll(keys: readonly SigningKey[], data: Uint8Array): Promise<Signatures> {
  const out = noSignatures();
  for (const k of keys) out[k.type].push(await k.sign(data));
  return out;
}

function sigArray(meta: Metadata, key: string, id: string): Buffer[] {
  const v = meta.find(([k]) => k === key)?.[1];
  if (!v) return [];
  if (v.type !== 'aay' || !Array.isArray(v.value)) {
    throw new RegistryError('E_SIGNATURE', `${id}: ${key} is a ${v.type}, not aay`, { object: id });
  }
  return (v.value as Uint8Array[]).map((b) => Buffer.from(b));
}

/**
 * The signatures in a commitmeta or summary.sig, checked for shape (64-byte ed25519 signatures,
 * bounded OpenPGP ones); E_SIGNATURE names the object if they are malformed.
 */
export function readSignatures(bytes: Uint8Array | undefined, id: string): Signatures {
  if (!bytes || bytes.length === 0) return noSignatures();
  const meta = decodeCommitMeta(bytes, id);
  return signaturesOf(meta, id);
}

export function signaturesOf(meta: Metadata, id: string): Signatures {
  const ed25519 = sigArray(meta, ED25519_SIGS, id);
  const gpg = sigArray(meta, GPG_SIGS, id);
  const bad = ed25519.find((s) => s.length !== 64);
  if (bad) {
    throw new RegistryError('E_SIGNATURE', `${id}: an ed25519 signature of ${bad.length} bytes (not 64)`, {
      object: id,
      found: `${bad.length} bytes`,
      expected: '64 bytes',
    });
  }
  const badGpg = gpg.find((s) => s.length === 0 || s.length > MAX_GPG_SIG);
  if (badGpg) {
    throw new RegistryError('E_SIGNATURE', `${id}: an OpenPGP signature of ${badGpg.length} bytes`, {
      object: id,
      found: `${badGpg.length} bytes`,
    });
  }
  return { ed25519, gpg };
}

/**
 * `base` (a commitmeta's other keys and signatures, if any) with `add`'s signatures appended;
 * a signature already there is not repeated (ed25519 is deterministic: the pusher and the server
 * signing with one key make the same bytes).
 */
export function mergeSignatures(base: Metadata | undefined, add: Signatures): Metadata {
  const meta: Metadata = [...(base ?? [])];
  for (const type of ['ed25519', 'gpg'] as const) {
    const key = SIG_KEYS[type];
    const i = meta.findIndex(([k]) => k === key);
    const have: Buffer[] = i >= 0 ? (meta[i]![1].value as Uint8Array[]).map((b) => Buffer.from(b)) : [];
    const merged: Buffer[] = [...have];
    for (const s of add[type]) if (!merged.some((m) => m.equals(s))) merged.push(s);
    if (merged.length === 0) continue;
    const v = new Variant('aay', merged);
    if (i >= 0) meta[i] = [key, v];
    else meta.push([key, v]);
  }
  return meta;
}

export function encodeSignatures(s: Signatures): Buffer {
  return encodeCommitMeta(mergeSignatures(undefined, s));
}

export interface SignatureCheck {
  /** Ids of trusted, unrevoked keys with a valid signature. */
  valid: string[];
  /** Ids of revoked keys whose signature is valid: not accepted. */
  revoked: string[];
  /** Signatures no trusted key verifies (another key's, or damaged). */
  unknown: number;
  total: number;
}

/**
 * Check every signature in `sigs` over `data` against the trusted `keys` and the `revoked` ones: a
 * signature by a revoked key counts as revoked even when that key is also listed as trusted.
 */
export async function checkSignatures(
  data: Uint8Array,
  sigs: Signatures,
  keys: readonly VerifyKey[],
  revoked: readonly VerifyKey[] = [],
): Promise<SignatureCheck> {
  const r: SignatureCheck = { valid: [], revoked: [], unknown: 0, total: signatureCount(sigs) };
  const revokedIds = new Set(revoked.map((k) => k.id));
  for (const type of ['ed25519', 'gpg'] as const) {
    const candidates = [...revoked, ...keys.filter((k) => !revokedIds.has(k.id))].filter(
      (k) => k.type === type,
    );
    for (const sig of sigs[type]) {
      let by: VerifyKey | undefined;
      for (const k of candidates) {
        if (await k.verify(data, sig)) {
          by = k;
          break;
        }
      }
      if (!by) r.unknown++;
      else if (revokedIds.has(by.id)) {
        if (!r.revoked.includes(by.id)) r.revoked.push(by.id);
      } else if (!r.valid.includes(by.id)) r.valid.push(by.id);
    }
  }
  return r;
}
