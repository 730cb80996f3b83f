import { chmod, writeFile } from 'node:fs/promises';
import { errnoCode, RegistryError } from '../../src/errors.js';
import { generateKey, type KeyType } from '../../src/sign/keys.js';
import { json, note, out } from '../output.js';

/** `sysroot key generate`: a new secret key file (mode 0600, never over an existing file) and FILE.pub. */
export async function run(opts: {
  type: string;
  name: string;
  output: string;
  json?: boolean;
}): Promise<number> {
  if (opts.type !== 'ed25519' && opts.type !== 'gpg') {
    throw new RegistryError('E_USAGE', `--type ${opts.type}: expected ed25519 or gpg`, { found: opts.type });
  }
  const k = await generateKey(opts.type as KeyType, opts.name);
  const pubFile = `${opts.output}.pub`;
  for (const [path, text, mode] of [
    [opts.output, k.secret, 0o600],
    [pubFile, k.public, 0o644],
  ] as const) {
    try {
      // 'wx': a key file is never overwritten (losing a release key is not undoable).
      await writeFile(path, text, { flag: 'wx', mode });
      await chmod(path, mode);
    } catch (e) {
      throw new RegistryError(
        errnoCode(e) === 'EEXIST' ? 'E_EXISTS' : 'E_IO',
        `cannot write ${path}: ${(e as Error).message}`,
        { path },
        errnoCode(e) === 'EEXIST' ? 'choose another -o FILE; keys are never overwritten' : undefined,
      );
    }
  }
  note(`${opts.type} key ${opts.name}: ${k.id}`);
  note(`secret key: ${opts.output} (keep it off the repository; give its path to the signer)`);
  note(`public key: ${pubFile}`);
  if (opts.json)
    json({
      id: k.id,
      type: opts.type,
      name: opts.name,
      secretFile: opts.output,
      publicFile: pubFile,
      public: k.public,
    });
  else out(k.public.trimEnd());
  return 0;
}
