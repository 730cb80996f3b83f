/**
 * Where a repository lives, from one string: a directory path (or file:// URL) → FsBlobStore;
 * `s3://BUCKET/PREFIX` → S3BlobStore, its client configured from the standard AWS environment and
 * config files (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE…).
 */
import { fileURLToPath } from 'node:url';
import { RegistryError } from '../errors.js';
import type { BlobStore } from './blob-store.js';
import { FsBlobStore } from './fs-blob-store.js';
import { normalizePrefix, S3BlobStore } from './s3-blob-store.js';

export type RepoLocation = { kind: 'fs'; path: string } | { kind: 's3'; bucket: string; prefix: string };

/** S3 bucket names: 3-63 characters of a-z 0-9 . - , starting and ending with a letter or digit. */
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * `s3://bucket` or `s3://bucket/some/prefix` (prefix returned as '' or 'some/prefix/'), `file:///dir`,
 * or a plain path. Other URL schemes are refused: an http:// registry is reached with push/pull, not
 * opened as a store.
 */
export function parseRepoUrl(location: string): RepoLocation {
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(location)?.[1]?.toLowerCase();
  if (scheme === undefined) return { kind: 'fs', path: location };
  if (scheme === 'file') return { kind: 'fs', path: fileURLToPath(location) };
  if (scheme !== 's3') {
    throw new RegistryError(
      'E_USAGE',
      `unsupported repository location ${location}`,
      { found: location },
      'give a directory or s3://BUCKET/PREFIX',
    );
  }
  const rest = location.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const prefix = slash < 0 ? '' : rest.slice(slash + 1);
  if (!BUCKET.test(bucket)) {
    throw new RegistryError(
      'E_USAGE',
      `bad S3 bucket name "${bucket}" in ${location}`,
      { found: location },
      'bucket names are 3-63 characters of a-z 0-9 . -',
    );
  }
  // Keys are repository paths joined to the prefix: empty, '.' or '..' segments would make keys that a
  // static web server over the bucket could not serve as the same path.
  if (
    /[?#]/.test(prefix) ||
    prefix.split('/').some((seg, i, all) => (seg === '' && i < all.length - 1) || seg === '.' || seg === '..')
  ) {
    throw new RegistryError('E_USAGE', `bad S3 key prefix "${prefix}" in ${location}`, { found: location });
  }
  return { kind: 's3', bucket, prefix: normalizePrefix(prefix) };
}

/** The BlobStore for a location string (see parseRepoUrl). */
export function openBlobStore(location: string): BlobStore {
  const where = parseRepoUrl(location);
  return where.kind === 'fs'
    ? new FsBlobStore(where.path)
    : new S3BlobStore({ bucket: where.bucket, prefix: where.prefix });
}
