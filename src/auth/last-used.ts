/**
 * When each token was last used, in a node-local SQLite file (sysroot/tokens.sqlite, beside the
 * index). It is a convenience for `sysroot token list`, not part of the repository's truth: each
 * server node records only its own requests, and losing the file loses nothing that matters.
 *
 * A pull by a stock ostree client is ~6,000 requests in 2 s; writing at most once a minute per
 * token keeps that to one row write instead of thousands.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

const WRITE_INTERVAL_MS = 60_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS token_use (
  id TEXT PRIMARY KEY,
  last_used INTEGER NOT NULL
) WITHOUT ROWID;
`;

interface Opened {
  db: Database.Database;
  put: Database.Statement<[string, number]>;
  get: Database.Statement<[string], { last_used: number }>;
}

export class LastUsedDb {
  private opened: Opened | undefined;
  private readonly written = new Map<string, number>();

  constructor(
    readonly file: string,
    private readonly now: () => number = Date.now,
  ) {}

  private open(create: boolean): Opened | undefined {
    if (this.opened) return this.opened;
    if (!create && !existsSync(this.file)) return undefined;
    mkdirSync(dirname(this.file), { recursive: true });
    const db = new Database(this.file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    // The server and a `sysroot token list` may touch the file at once.
    db.pragma('busy_timeout = 5000');
    db.exec(SCHEMA);
    this.opened = {
      db,
      put: db.prepare(
        'INSERT INTO token_use (id, last_used) VALUES (?, ?) ' +
          'ON CONFLICT (id) DO UPDATE SET last_used = max(last_used, excluded.last_used)',
      ),
      get: db.prepare('SELECT last_used FROM token_use WHERE id = ?'),
    };
    return this.opened;
  }

  /** Record a use; skipped if this process wrote the same token less than a minute ago. */
  touch(id: string): void {
    const now = this.now();
    const last = this.written.get(id);
    if (last !== undefined && now - last < WRITE_INTERVAL_MS) return;
    this.written.set(id, now);
    this.open(true)!.put.run(id, now);
  }

  /** Open (or create) the file now rather than on the first token used: a server calls this before it listens. */
  warm(): void {
    this.open(true);
  }

  /** Milliseconds since the epoch, or undefined if never used (on this node). */
  get(id: string): number | undefined {
    return this.open(false)?.get.get(id)?.last_used;
  }

  close(): void {
    this.opened?.db.close();
    this.opened = undefined;
  }
}
