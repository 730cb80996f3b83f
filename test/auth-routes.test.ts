/**
 * Every write route, enumerated from the OpenAPI document and checked against the routes the app
 * really registers, tried with no token, a wrong secret, garbage, a revoked token and a token of the
 * wrong scope: all refused (401/403, JSON), the repository byte for byte unchanged, and the secret in
 * no answer and no log line. The same request with the right token then succeeds, so each refusal
 * was about the token and nothing else.
 */
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../server/app.js';
import { listen } from '../server/listen.js';
import { streamLogger } from '../server/logger.js';
import { OPENAPI } from '../server/openapi.js';
import { parseToken } from '../src/auth/token-string.js';
import {
  type Checksum,
  contentChecksum,
  encodeCommit,
  encodeCommitMeta,
  encodeDirTree,
  type FileMeta,
  filezHeader,
  objectPath,
  sha256,
} from '../src/objects/index.js';
import { KIND, PackWriter } from '../src/pack/index.js';
import { sysrootAsync } from './helpers/cli.js';
import {
  HOSTILE_REF,
  type HostileFixture,
  hostileFixture,
  makeSmallTree,
} from './helpers/hostile-fixture.js';
import { tempDir } from './helpers/repo.js';

let f: HostileFixture;
afterAll(() => {
  f?.tokenStore.close();
  f?.repo.close();
});

/** `METHOD /path` of every operation that has no anonymous alternative in its security. */
function writeRoutesOfOpenApi(): string[] {
  const out: string[] = [];
  for (const [path, ops] of Object.entries(OPENAPI.paths)) {
    for (const [method, op] of Object.entries(ops as Record<string, unknown>)) {
      if (!['get', 'put', 'post', 'delete', 'patch'].includes(method)) continue;
      const security = (op as { security?: unknown[] }).security ?? OPENAPI.security;
      const anonymous = security.some((s) => Object.keys(s as object).length === 0);
      if (!anonymous) out.push(`${method.toUpperCase()} /api/v1${path}`);
    }
  }
  return out.sort();
}

/** `METHOD /path` of every non-GET route the app registers, in the OpenAPI document's spelling. */
function mutatingRoutesOfApp(app: ReturnType<typeof createApp>): string[] {
  return [
    ...new Set(
      app.routes
        .filter((r) => !['GET', 'HEAD', 'ALL', 'OPTIONS'].includes(r.method))
        .map((r) => `${r.method} ${r.path.replace(/:(\w+)(\{[^}]*\})?/g, '{$1}')}`),
    ),
  ].sort();
}

function filez(content: string): { checksum: Checksum; bytes: Buffer } {
  const meta: FileMeta = { uid: 0, gid: 0, mode: 0o100644, symlinkTarget: '', xattrs: [] };
  const payload = Buffer.from(content);
  return {
    checksum: contentChecksum(meta, payload),
    bytes: Buffer.concat([filezHeader(meta, payload.length), deflateRawSync(payload)]),
  };
}

async function pack(records: Array<[number, Checksum, Buffer]>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const w = new PackWriter(async (c) => void chunks.push(c), { threads: false });
  for (const [kind, sha, bytes] of records) await w.add(kind as 1, sha, bytes);
  await w.finish();
  return Buffer.concat(chunks);
}

interface Attempt {
  route: string;
  path: string;
  method: string;
  body: () => Buffer;
  /** The token that may do it (the request succeeds with it), and ones of the wrong scope. */
  right: string;
  wrongScope: string[];
}

describe('auth on every write route', () => {
  let attempts: Attempt[];
  let v3: Checksum;

  beforeAll(async () => {
    f = await hostileFixture();
    const t = f.tokens;
    // v3 on top of the head: its objects are stored (as a push's pack would), the ref is not moved.
    const head = f.commits[1]!;
    const c = await f.repo.readCommit(head);
    v3 = await f.repo.objects.putMetadata(
      'commit',
      encodeCommit({
        ...c,
        metadata: [],
        related: [],
        parent: head,
        subject: 'v3',
        body: '',
        timestamp: 1704067300,
      }),
    );
    const file = filez('uploaded by the right token only');
    const tree = encodeDirTree({ files: [{ name: 'new.txt', checksum: file.checksum }], dirs: [] });
    attempts = [
      {
        route: 'PUT /api/v1/objects/{name}',
        path: `/api/v1/objects/${file.checksum}.file`,
        method: 'PUT',
        body: () => file.bytes,
        right: t.pusher,
        wrongScope: [t.puller],
      },
      {
        route: 'POST /api/v1/packs',
        path: '/api/v1/packs',
        method: 'POST',
        body: () => Buffer.alloc(0),
        right: t.pusher,
        wrongScope: [t.puller],
      },
      {
        route: 'PUT /api/v1/refs/{ref}',
        path: `/api/v1/refs/${HOSTILE_REF}`,
        method: 'PUT',
        body: () => Buffer.from(JSON.stringify({ from: head, to: v3 })),
        right: t.pusher,
        wrongScope: [t.puller, t.strayPusher],
      },
      {
        route: 'POST /api/v1/reset/{ref}',
        path: `/api/v1/reset/${HOSTILE_REF}`,
        method: 'POST',
        body: () => Buffer.from(JSON.stringify({ to: f.commits[0], reason: 'roll back' })),
        right: t.admin,
        wrongScope: [t.puller, t.pusher, t.strayPusher],
      },
    ];
    // The pack holds a new dirtree (the file above is uploaded by the PUT, which runs first).
    const treePack = await pack([[KIND.dirtree, sha256(tree), tree]]);
    attempts[1]!.body = () => treePack;
  });

  it('the write routes of the OpenAPI document are exactly the mutating routes the app registers', () => {
    const app = createApp({ repo: f.repo, tokens: f.tokenStore, anonymousPull: true });
    const documented = writeRoutesOfOpenApi();
    expect(documented).toEqual([
      'POST /api/v1/packs',
      'POST /api/v1/reset/{ref}',
      'PUT /api/v1/objects/{name}',
      'PUT /api/v1/refs/{ref}',
    ]);
    // POST /objects/missing is a read (anonymous when pulls are), so the app has one more.
    expect(mutatingRoutesOfApp(app)).toEqual([...documented, 'POST /api/v1/objects/missing'].sort());
    expect(attempts.map((a) => a.route).sort()).toEqual(documented);
  });

  it('refuses each without a token, with a wrong, garbage or revoked token, or the wrong scope; nothing changes', async () => {
    for (const anonymousPull of [true, false]) {
      const log: string[] = [];
      const app = createApp({
        repo: f.repo,
        tokens: f.tokenStore,
        anonymousPull,
        logger: streamLogger((l) => log.push(l)),
      });
      const before = f.snapshot();
      const secrets: string[] = [];
      for (const a of attempts) {
        const cases: Array<[string, string | undefined, number, string]> = [
          ['no token', undefined, 401, 'E_UNAUTHORIZED'],
          ['wrong secret', f.tokens.wrongSecret, 401, 'E_UNAUTHORIZED'],
          ['garbage', 'hunter2', 401, 'E_UNAUTHORIZED'],
          ['revoked', f.tokens.revoked, 401, 'E_UNAUTHORIZED'],
          ...a.wrongScope.map((t): [string, string, number, string] => [
            'wrong scope',
            t,
            403,
            'E_FORBIDDEN',
          ]),
        ];
        for (const [what, token, status, code] of cases) {
          for (const scheme of ['Bearer', 'Basic'] as const) {
            if (token === undefined && scheme === 'Basic') continue;
            const authorization =
              token === undefined
                ? undefined
                : scheme === 'Bearer'
                  ? `Bearer ${token}`
                  : `Basic ${Buffer.from(`ostree:${token}`).toString('base64')}`;
            const res = await app.request(a.path, {
              method: a.method,
              headers: authorization ? { authorization } : {},
              body: new Uint8Array(a.body()),
            });
            const label = `${a.route}, ${what} (${scheme}, anonymousPull ${anonymousPull})`;
            expect(res.status, label).toBe(status);
            const text = await res.text();
            expect(JSON.parse(text).error.code, label).toBe(code);
            if (token) {
              const secret = parseToken(token)?.secret ?? token;
              secrets.push(secret);
              expect(text, label).not.toContain(secret);
            }
          }
        }
      }
      expect(f.snapshot()).toEqual(before);
      expect(await f.repo.readRef(HOSTILE_REF)).toBe(f.commits[1]);
      const logged = log.join('\n');
      for (const s of secrets) expect(logged).not.toContain(s);
    }
  });

  it('lets each through with the right token (so the refusals were about the token alone)', async () => {
    const app = createApp({ repo: f.repo, tokens: f.tokenStore, anonymousPull: true });
    const statuses: number[] = [];
    for (const a of attempts) {
      const res = await app.request(a.path, {
        method: a.method,
        headers: { authorization: `Bearer ${a.right}` },
        body: new Uint8Array(a.body()),
      });
      statuses.push(res.status);
      expect(res.status, `${a.route}: ${await res.clone().text()}`).toBeLessThan(300);
    }
    expect(statuses).toEqual([201, 200, 200, 200]);
    // The reset went back to v1, after the push to v3.
    expect((await f.repo.log(HOSTILE_REF)).map((r) => [r.action, r.to])).toEqual([
      ['reset', f.commits[0]],
      ['push', v3],
      ['commit', f.commits[1]],
      ['commit', f.commits[0]],
    ]);
  });

  it("refuses detached metadata (.commitmeta) without its commit from anyone but admin: it would ride along with another ref's commits", async () => {
    const app = createApp({ repo: f.repo, tokens: f.tokenStore, anonymousPull: true });
    const target = f.commits[0]!;
    const cm = encodeCommitMeta([]);
    const key = objectPath(target, 'commitmeta');
    for (const token of [f.tokens.strayPusher, f.tokens.pusher]) {
      const put = await app.request(`/api/v1/objects/${target}.commitmeta`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}` },
        body: new Uint8Array(cm),
      });
      expect(put.status).toBe(403);
      expect((await put.json()).error.code).toBe('E_FORBIDDEN');
      const viaPack = await app.request('/api/v1/packs', {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        body: new Uint8Array(await pack([[KIND.commitmeta, target, cm]])),
      });
      expect(viaPack.status).toBe(403);
      expect(JSON.stringify(await viaPack.json())).toContain(`${target}.commitmeta`);
      expect(await f.repo.blobs.stat(key)).toBeUndefined();
    }
    // Admin passes the scope check, but detached metadata is only ever written with a new commit.
    const admin = await app.request(`/api/v1/objects/${target}.commitmeta`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${f.tokens.admin}` },
      body: new Uint8Array(cm),
    });
    expect(admin.status).toBe(409);
    expect((await admin.json()).error.code).toBe('E_EXISTS');
    expect(await f.repo.blobs.stat(key)).toBeUndefined();
  });
});

describe('secrets stay out of CLI output', () => {
  it('a wrong, revoked or badly scoped token is named by its error, never printed', async () => {
    const g = await hostileFixture();
    const log: string[] = [];
    const app = createApp({
      repo: g.repo,
      tokens: g.tokenStore,
      anonymousPull: false,
      logger: streamLogger((l) => log.push(l)),
    });
    const server = await listen(app, '127.0.0.1', 0);
    const env = {
      SYSROOT_CACHE_DIR: tempDir('sysroot-auth-cache-'),
      SYSROOT_CONFIG_DIR: tempDir('sysroot-auth-cfg-'),
    };
    try {
      const src = makeSmallTree('9');
      const runs = [
        {
          token: g.tokens.wrongSecret,
          args: ['pull', '--url', server.url, HOSTILE_REF, join(tempDir(), 'd')],
        },
        {
          token: g.tokens.revoked,
          args: ['pull', '--url', server.url, HOSTILE_REF, join(tempDir(), 'd'), '--json'],
        },
        { token: g.tokens.revoked, args: ['log', '--url', server.url, HOSTILE_REF] },
        { token: g.tokens.wrongSecret, args: ['push', '--url', server.url, '--ref', HOSTILE_REF, src] },
        {
          token: g.tokens.strayPusher,
          args: ['push', '--url', server.url, '--ref', HOSTILE_REF, src, '--json'],
        },
        { token: g.tokens.puller, args: ['push', '--url', server.url, '--ref', HOSTILE_REF, src] },
      ];
      for (const { token, args } of runs) {
        // `log --url` reads the token from the environment only.
        for (const via of args[0] === 'log' ? (['env'] as const) : (['env', 'flag'] as const)) {
          const r =
            via === 'env'
              ? await sysrootAsync(args, { ...env, SYSROOT_TOKEN: token })
              : await sysrootAsync([...args, '--token', token], { ...env, SYSROOT_TOKEN: '' });
          const label = `${args[0]} ${args.at(-1)} (${via})`;
          expect(r.status, `${label}: ${r.stderr}`).toBe(7);
          expect(r.stderr, label).toMatch(/E_UNAUTHORIZED|E_FORBIDDEN|not valid|needs|scope/);
          const secret = parseToken(token)!.secret;
          expect(r.stdout + r.stderr, label).not.toContain(secret);
        }
      }
      // A token in a URL is refused without echoing it.
      const inUrl = await sysrootAsync(
        ['remote', 'add', 'r', `http://ostree:${g.tokens.puller}@127.0.0.1:1/`],
        env,
      );
      expect(inUrl.status).toBe(2);
      expect(inUrl.stdout + inUrl.stderr).not.toContain(parseToken(g.tokens.puller)!.secret);
      const logged = log.join('\n');
      for (const t of Object.values(g.tokens)) expect(logged).not.toContain(parseToken(t)?.secret ?? t);
      expect(await g.repo.readRef(HOSTILE_REF)).toBe(g.commits[1]);
    } finally {
      await server.close(100);
      g.tokenStore.close();
      g.repo.close();
    }
  });
});
