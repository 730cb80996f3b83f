#!/usr/bin/env node
// `npm start`: serve the repository in ./data on http://127.0.0.1:8080 with the built CLI
// (dist/ is compiled by `npm ci`'s prepare script), creating the repository on first start.
// SYSROOT_REPO and SYSROOT_LISTEN override the directory and the address.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const repoDir = resolve(process.env.SYSROOT_REPO || join(root, 'data'));
const address = process.env.SYSROOT_LISTEN || '127.0.0.1:8080';

const built = join(root, 'dist', 'src', 'repo', 'repository.js');
if (!existsSync(built)) {
  process.stderr.write('start: dist/ is missing; run `npm ci` (or `npm run build`) first\n');
  process.exit(1);
}

if (!existsSync(join(repoDir, 'config'))) {
  const { Repository } = await import(built);
  const repo = await Repository.init(repoDir);
  repo.close();
  process.stderr.write(`start: created an empty repository in ${repoDir}\n`);
}

const child = spawn(
  process.execPath,
  [join(root, 'bin', 'sysroot.js'), 'serve', '--repo', repoDir, '--listen', address],
  { stdio: 'inherit' },
);
// The server closes cleanly on either signal; pass them on and exit with its status.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
