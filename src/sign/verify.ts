/**
 * Is a commit (or a summary) authentic? Its signatures (signatures.ts) are checked against the keys
 * the verifier trusts, never against keys the server offers. One valid signature by a trusted key
 * that is not revoked is enough, as in ostree; anything less is E_SIGNATURE, with the evidence:
 * the ref and commit, the keys tried, the revoked keys that signed, and why.
 */
import { RegistryError } from '../errors.js';
import { type Checksum, objectId, sha256 } from '../objects/index.js';
import type { VerifyKey } from './keys.js';
import { checkSignatures, readSignatures, type SignatureCheck, signatureCount } from './signatures.js';

export interface TrustedKeys {
  trusted: readonly VerifyKey[];
  revoked: readonly VerifyKey[];
}

export type SignatureFailure = 'unsigned' | 'untrusted' | 'revoked';

function refuse(
  why: SignatureFailure,
  what: string,
  details: Record<string, unknown>,
  keys: TrustedKeys,
  check?: SignatureCheck,
): RegistryError {
  const text: Record<SignatureFailure, string> = {
    unsigned: `${what} is not signed`,
    untrusted: `${what} has no valid signature by a trusted key`,
    revoked: `${what} is signed only by revoked keys`,
  };
  return new RegistryError(
    'E_SIGNATURE',
    text[why],
    {
      reason: why,
      ...details,
      trusted: keys.trusted.map((k) => k.id),
      ...(check?.revoked.length ? { revokedSigners: check.revoked } : {}),
      signatures: check?.total ?? 0,
    },
    why === 'revoked'
      ? 'the key that signed it was revoked; ask the publisher for a release signed with a current key'
      : 'nothing was checked out; check the keys you trust (--verify-key, `sysroot remote add --verify-key`) against docs/signing.md',
  );
}

/**
 * Verify `commitBytes` (which must hash to `commit`) against the signatures in `commitmeta`.
 * Returns the check (who signed); throws E_SIGNATURE if no trusted, unrevoked key signed it.
 */
export async function verifyCommit(
  commit: Checksum,
  commitBytes: Buffer,
  commitmeta: Buffer | undefined,
  keys: TrustedKeys,
  context: { ref?: string | null; url?: string } = {},
): Promise<SignatureCheck> {
  const found = sha256(commitBytes);
  if (found !== commit) {
    throw new RegistryError('E_CORRUPT_OBJECT', `commit ${commit}: its bytes hash to ${found}`, {
      object: objectId(commit, 'commit'),
      expected: commit,
      found,
    });
  }
  const details = {
    commit,
    ...(context.ref ? { ref: context.ref } : {}),
    ...(context.url ? { url: context.url } : {}),
  };
  const what = `commit ${commit}${context.ref ? ` (${context.ref})` : ''}`;
  const sigs = readSignatures(commitmeta, objectId(commit, 'commitmeta'));
  if (signatureCount(sigs) === 0) throw refuse('unsigned', what, details, keys);
  const check = await checkSignatures(commitBytes, sigs, keys.trusted, keys.revoked);
  if (check.valid.length > 0) return check;
  throw refuse(check.revoked.length > 0 ? 'revoked' : 'untrusted', what, details, keys, check);
}

/** Verify a summary against its summary.sig, as `gpg-verify-summary` / `sign-verify-summary` do. */
export async function verifySummary(
  summary: Buffer,
  summarySig: Buffer | undefined,
  keys: TrustedKeys,
): Promise<SignatureCheck> {
  const sigs = readSignatures(summarySig, 'summary.sig');
  if (signatureCount(sigs) === 0) throw refuse('unsigned', 'the summary', {}, keys);
  const check = await checkSignatures(summary, sigs, keys.trusted, keys.revoked);
  if (check.valid.length > 0) return check;
  throw refuse(check.revoked.length > 0 ? 'revoked' : 'untrusted', 'the summary', {}, keys, check);
}
