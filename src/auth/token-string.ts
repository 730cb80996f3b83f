/**
 * The token a person copies: `srt_<id>_<secret>`.
 *
 *   id      8 lower-case hex characters, public: it names the record (sysroot/tokens/<id>.json), so a
 *           lookup is one read instead of hashing against every token;
 *   secret  32 random bytes, base64url (43 characters); only its sha256 is ever stored.
 *
 * The `srt_` prefix makes a leaked token easy to find and redact (logs, secret scanners).
 */
import { createHash, randomBytes } from 'node:crypto';

export const TOKEN_PREFIX = 'srt_';

const TOKEN = /^srt_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$/;
const ID = /^[0-9a-f]{8}$/;

/** Anything that looks like a token inside a longer text (a URL, a log line). */
export const TOKEN_IN_TEXT = /srt_[0-9A-Za-z_-]+/g;

export function isTokenId(s: string): boolean {
  return ID.test(s);
}

export function newTokenId(): string {
  return randomBytes(4).toString('hex');
}

export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function formatToken(id: string, secret: string): string {
  return `${TOKEN_PREFIX}${id}_${secret}`;
}

export function parseToken(token: string): { id: string; secret: string } | undefined {
  const m = TOKEN.exec(token);
  return m ? { id: m[1]!, secret: m[2]! } : undefined;
}

/** The stored form of a secret: sha256, hex. A 256-bit random secret needs no salt or slow hash. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Replace every token-looking string, so a token pasted into a URL never reaches a log. */
export function redactTokens(text: string): string {
  return text.replace(TOKEN_IN_TEXT, 'srt_REDACTED');
}
