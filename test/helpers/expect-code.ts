import { isRegistryError, type RegistryError } from '../../src/errors.js';

/** Await `p` and return the RegistryError it rejects with, if its code is `code`; fail otherwise. */
export async function rejects(p: Promise<unknown>, code: string): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    if (isRegistryError(e) && e.code === code) return e;
    throw e;
  }
  throw new Error(`expected ${code}`);
}
