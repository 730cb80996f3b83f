/**
 * Progress for push and pull on stderr: objects done/total, bytes moved, rate and ETA. Drawn only
 * when stderr is a terminal; in CI logs and pipes it stays silent (a redrawn bar there is noise).
 */
import { createRequire } from 'node:module';
import type cliProgressModule from 'cli-progress';
import { formatBytes } from '../format.js';

type CliProgress = typeof cliProgressModule;
let cliProgress: CliProgress | undefined;

/**
 * cli-progress, required when the first bar is drawn: loading it (16 modules) cost ~5 ms of every
 * command's start-up, and in CI logs and pipes, where builders pull, no bar is ever drawn.
 */
function bars(): CliProgress {
  cliProgress ??= createRequire(import.meta.url)('cli-progress') as CliProgress;
  return cliProgress;
}

export interface Progress {
  /**
   * Start a phase ("fetch", "upload"), replacing the previous bar. A negative total means "unknown"
   * (an import does not know how many files it will find): a counter is shown instead of a bar.
   */
  phase(label: string, total: number, unit?: string): void;
  /** More work was discovered (pull finds objects while walking the trees). */
  addTotal(n: number): void;
  /** `objects` finished and `bytes` moved since the last call. */
  advance(objects: number, bytes: number): void;
  stop(): void;
}

export const silentProgress: Progress = {
  phase() {},
  addTotal() {},
  advance() {},
  stop() {},
};

class BarProgress implements Progress {
  private bar: InstanceType<CliProgress['SingleBar']> | undefined;
  private total = 0;
  private value = 0;
  private bytes = 0;
  private started = 0;

  phase(label: string, total: number, unit = 'objects'): void {
    this.bar?.stop();
    const known = total >= 0;
    this.total = Math.max(total, 0);
    this.value = 0;
    this.bytes = 0;
    this.started = Date.now();
    const { SingleBar, Presets } = bars();
    this.bar = new SingleBar(
      {
        stream: process.stderr,
        format: known
          ? `${label.padEnd(7)} [{bar}] {value}/{total} ${unit} | {moved} | {rate} | ETA {eta_formatted}`
          : `${label.padEnd(7)} {value} ${unit} | {moved} | {rate}`,
        barsize: 24,
        hideCursor: true,
        // 5 redraws a second is smooth enough and costs nothing next to the transfer itself.
        fps: 5,
        etaBuffer: 50,
      },
      Presets.shades_classic,
    );
    this.bar.start(this.total, 0, { moved: formatBytes(0), rate: '-' });
  }

  addTotal(n: number): void {
    this.total += n;
    this.bar?.setTotal(this.total);
  }

  advance(objects: number, bytes: number): void {
    this.value += objects;
    this.bytes += bytes;
    const secs = (Date.now() - this.started) / 1000;
    this.bar?.update(this.value, {
      moved: formatBytes(this.bytes),
      rate: secs > 0 ? `${formatBytes(this.bytes / secs)}/s` : '-',
    });
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}

/** A bar on stderr if it is a terminal (or `enabled` says so), else nothing. */
export function createProgress(enabled: boolean = process.stderr.isTTY === true): Progress {
  return enabled ? new BarProgress() : silentProgress;
}
