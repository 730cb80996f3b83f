/**
 * JSON request bodies: read with a size cap, parsed, and validated with a zod schema. Every failure
 * is a 400 E_USAGE that says which field is wrong.
 */
import type { Context } from 'hono';
import type { z } from 'zod';
import { RegistryError } from '../src/errors.js';
import { type BodyPace, requestBody } from './body-stream.js';

export async function readJson<S extends z.ZodType>(
  c: Context,
  schema: S,
  limits: { maxJsonBytes: number; bodyPace: BodyPace },
): Promise<z.output<S>> {
  const limit = limits.maxJsonBytes;
  const declared = Number(c.req.header('content-length'));
  const tooLarge = () =>
    new RegistryError('E_LIMIT', `the request body is larger than ${limit} bytes`, {
      expected: `<= ${limit} bytes`,
    });
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of requestBody(c, limits.bodyPace)) {
    n += chunk.length;
    if (n > limit) throw tooLarge();
    chunks.push(chunk);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw new RegistryError('E_USAGE', `the request body is not JSON: ${(e as Error).message}`);
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    const issues = r.error.issues.slice(0, 10).map((i) => ({ path: i.path.join('.'), message: i.message }));
    const first = issues[0];
    throw new RegistryError(
      'E_USAGE',
      `invalid request body: ${first ? `${first.path || '(body)'}: ${first.message}` : 'rejected'}`,
      { issues },
    );
  }
  return r.data;
}
