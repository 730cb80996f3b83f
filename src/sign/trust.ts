/**
 * Which keys a verifier trusts: the ones it was given (`--verify-key`, a remote's keys), or, only
 * when it was given none, the keys a repository publishes (trust on first use: docs/signing.md).
 * Revocations are always honoured, wherever they come from: a revocation can only make a
 * verification fail, never pass.
 */
import { loadVerifyKeys, type VerifyKey } from './keys.js';
import type { TrustedKeys } from './verify.js';

export async function loadKeySpecs(specs: readonly string[]): Promise<VerifyKey[]> {
  const out: VerifyKey[] = [];
  for (const s of specs) out.push(...(await loadVerifyKeys(s)));
  return out;
}

/** Trusted keys minus the revoked ones (by key or by id); the revoked keys kept to report them. */
export function applyRevocations(
  trusted: readonly VerifyKey[],
  revokedKeys: readonly VerifyKey[],
  revokedIds: Iterable<string> = [],
): TrustedKeys {
  const ids = new Set([...revokedKeys.map((k) => k.id), ...revokedIds]);
  const revoked = [...revokedKeys];
  for (const k of trusted) if (ids.has(k.id) && !revoked.some((r) => r.id === k.id)) revoked.push(k);
  return { trusted: trusted.filter((k) => !ids.has(k.id)), revoked };
}
