/**
 * ed25519 signatures exactly as OSTree stores them, against the ground truth in
 * fixtures/ostree-vectors (made by ostree 2022.7 built with libsodium; Debian's ostree has no
 * ed25519, so the vectors are the only peer for this). The test key is derived here, as the vectors
 * were: seed = sha256("ostree-vectors-ed25519-seed").
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isRegistryError } from '../src/errors.js';
import { Variant } from '../src/gvariant/index.js';
import { decodeCommitMeta, encodeCommitMeta } from '../src/objects/index.js';
import {
  ed25519FromSeed,
  ed25519VerifyKey,
  generateKey,
  parseSigningKey,
  parseVerifyKeys,
} from '../src/sign/keys.js';
import { encodeSignatures, mergeSignatures, readSignatures, signAll } from '../src/sign/signatures.js';
import { verifyCommit, verifySummary } from '../src/sign/verify.js';
import { unpackFixture, vectors } from './helpers/vectors.js';

const ed = vectors.ed25519 as {
  public_key_b64: string;
  seed_b64: string;
  commit_signed: string;
  commitmeta_bytes_hex: string;
  commit_signatures_hex: string[];
};
const seed = createHash('sha256').update('ostree-vectors-ed25519-seed').digest();
const c2 = vectors.commits.c2;
const c2Bytes = Buffer.from(c2.bytes_hex, 'hex');
const summary = Buffer.from(vectors.summary.bytes_hex, 'hex');
const summarySig = Buffer.from(vectors.summary.sig_bytes_hex, 'hex');
const repoDir = unpackFixture('repo.tar');

function objectFile(checksum: string, ext: string): Buffer {
  return readFileSync(join(repoDir, 'objects', checksum.slice(0, 2), `${checksum.slice(2)}.${ext}`));
}

describe('ed25519 as ostree signs', () => {
  const key = ed25519FromSeed(seed, 'vectors');
  const trusted = [ed25519VerifyKey(Buffer.from(ed.public_key_b64, 'base64'))];

  it('derives the vectors key from the seed, and reads it in libsodium secret-key form', async () => {
    expect(seed.toString('base64')).toBe(ed.seed_b64);
    expect(key.public).toBe(ed.public_key_b64);
    expect(key.id).toBe(`ed25519:${ed.public_key_b64}`);
    const secretFile = Buffer.concat([seed, Buffer.from(ed.public_key_b64, 'base64')]).toString('base64');
    expect((await parseSigningKey(`${secretFile}\n`, 'secret')).id).toBe(key.id);
  });

  it("signs C2's .commit bytes exactly as ostree did, and builds the same .commitmeta bytes", async () => {
    expect(c2.checksum).toBe(ed.commit_signed);
    const sig = await key.sign(c2Bytes);
    expect(sig.toString('hex')).toBe(ed.commit_signatures_hex[0]);
    const meta = encodeSignatures(await signAll([key], c2Bytes));
    expect(meta.toString('hex')).toBe(ed.commitmeta_bytes_hex);
    // ...and the file in the vectors repository is those bytes.
    expect(objectFile(c2.checksum, 'commitmeta').toString('hex')).toBe(ed.commitmeta_bytes_hex);
  });

  it("makes the vectors' summary.sig byte for byte, and verifies it", async () => {
    expect(encodeSignatures(await signAll([key], summary)).equals(summarySig)).toBe(true);
    expect(readFileSync(join(repoDir, 'summary.sig')).equals(summarySig)).toBe(true);
    expect((await verifySummary(summary, summarySig, { trusted, revoked: [] })).valid).toEqual([key.id]);
  });

  it("accepts the vectors repository's signed commit, and refuses it tampered, unsigned or by another key", async () => {
    const bytes = objectFile(c2.checksum, 'commit');
    const meta = objectFile(c2.checksum, 'commitmeta');
    const ok = await verifyCommit(c2.checksum, bytes, meta, { trusted, revoked: [] });
    expect(ok.valid).toEqual([key.id]);

    // One bit of the signature flipped: same shape, no longer valid.
    const flipped = Buffer.from(meta);
    flipped[30]! ^= 1;
    await expect(verifyCommit(c2.checksum, bytes, flipped, { trusted, revoked: [] })).rejects.toSatisfy(
      (e) => isRegistryError(e, 'E_SIGNATURE') && e.details.reason === 'untrusted',
    );
    // The commit changed: it no longer hashes to its name.
    const tampered = Buffer.from(bytes);
    tampered[tampered.length - 40]! ^= 1;
    await expect(verifyCommit(c2.checksum, tampered, meta, { trusted, revoked: [] })).rejects.toSatisfy((e) =>
      isRegistryError(e, 'E_CORRUPT_OBJECT'),
    );
    // C1 has no .commitmeta.
    const c1 = vectors.commits.c1;
    await expect(
      verifyCommit(c1.checksum, objectFile(c1.checksum, 'commit'), undefined, { trusted, revoked: [] }),
    ).rejects.toSatisfy((e) => isRegistryError(e, 'E_SIGNATURE') && e.details.reason === 'unsigned');
    // Another key is not trusted; the vectors key revoked is refused as revoked.
    const other = await parseVerifyKeys((await generateKey('ed25519', 'other')).public, 'other');
    await expect(verifyCommit(c2.checksum, bytes, meta, { trusted: other, revoked: [] })).rejects.toSatisfy(
      (e) => isRegistryError(e, 'E_SIGNATURE') && e.details.reason === 'untrusted',
    );
    await expect(verifyCommit(c2.checksum, bytes, meta, { trusted, revoked: trusted })).rejects.toSatisfy(
      (e) => isRegistryError(e, 'E_SIGNATURE') && e.details.reason === 'revoked',
    );
  });

  it('merges signatures of several keys into one commitmeta, keeping other keys and not repeating one', async () => {
    const second = ed25519FromSeed(createHash('sha256').update('second').digest());
    const pusher = encodeCommitMeta([['sysroot.note', new Variant('s', 'from the release job')]]);
    const base = mergeSignatures(decodeCommitMeta(pusher), await signAll([key], c2Bytes));
    const merged = mergeSignatures(base, await signAll([key, second], c2Bytes));
    const sigs = readSignatures(encodeCommitMeta(merged), 'merged');
    expect(sigs.ed25519.map((s) => s.toString('hex'))).toEqual([
      ed.commit_signatures_hex[0],
      (await second.sign(c2Bytes)).toString('hex'),
    ]);
    expect(merged[0]![0]).toBe('sysroot.note');
  });

  it('refuses malformed signatures and key files with stable codes', async () => {
    const short = encodeCommitMeta([['ostree.sign.ed25519', new Variant('aay', [Buffer.alloc(63)])]]);
    expect(() => readSignatures(short, 'x')).toThrow(/63 bytes/);
    await expect(parseSigningKey(ed.public_key_b64, 'pub')).rejects.toSatisfy((e) =>
      isRegistryError(e, 'E_USAGE'),
    );
    const wrongHalf = Buffer.concat([seed, Buffer.alloc(32)]).toString('base64');
    await expect(parseSigningKey(wrongHalf, 'bad')).rejects.toThrow(/does not match its seed/);
  });
});

describe('OpenPGP (GPG) signatures, as ostree.gpgsigs', () => {
  it('signs and verifies a commit with a generated v4 EdDSA key; another key is refused', async () => {
    const g = await generateKey('gpg', 'sysroot test');
    const key = await parseSigningKey(g.secret, 'gpg');
    expect(key.id).toBe(g.id);
    expect(key.id).toMatch(/^gpg:[0-9A-F]{40}$/);
    const trusted = await parseVerifyKeys(g.public, 'pub');
    const meta = encodeSignatures(await signAll([key], c2Bytes));
    expect(decodeCommitMeta(meta)[0]![0]).toBe('ostree.gpgsigs');
    expect((await verifyCommit(c2.checksum, c2Bytes, meta, { trusted, revoked: [] })).valid).toEqual([
      key.id,
    ]);
    const other = await parseVerifyKeys((await generateKey('gpg', 'other')).public, 'other');
    await expect(verifyCommit(c2.checksum, c2Bytes, meta, { trusted: other, revoked: [] })).rejects.toSatisfy(
      (e) => isRegistryError(e, 'E_SIGNATURE'),
    );
  });
});
