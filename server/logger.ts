/**
 * What the server says about itself. The app receives a Logger (tests pass one that records lines);
 * `sysroot serve` passes the stderr logger. Every line goes through redactTokens on the way out, so a
 * token pasted into a URL, or quoted in a message, never reaches a log.
 */
import { redactTokens } from '../src/auth/token-string.js';

export interface Logger {
  info(line: string): void;
  warn(line: string): void;
  /** `cause` may be any thrown value; the logger prints its stack, the client never sees it. */
  error(line: string, cause?: unknown): void;
}

export const silentLogger: Logger = {
  info() {},
  warn() {},
  error() {},
};

function describe(cause: unknown): string {
  if (cause instanceof Error) return cause.stack ?? `${cause.name}: ${cause.message}`;
  return String(cause);
}

export function streamLogger(write: (line: string) => void): Logger {
  const emit = (level: string, line: string) =>
    write(redactTokens(`${new Date().toISOString()} ${level} ${line}`));
  return {
    info: (line) => emit('info', line),
    warn: (line) => emit('warn', line),
    error: (line, cause) => emit('error', cause === undefined ? line : `${line}\n${describe(cause)}`),
  };
}

export function stderrLogger(): Logger {
  return streamLogger((line) => process.stderr.write(`${line}\n`));
}
