// A throwaway nginx serving a directory on 127.0.0.1, for `ostree pull` in the transfer benchmark.
//
// One process (`daemon off; master_process off;`), everything it writes (pid, logs, temp paths)
// under PREFIX, stopped by its pid. The access log has one line per request,
// `MSEC METHOD URI STATUS BODY_BYTES REQUEST_TIME`, so requests and bytes can be counted.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { track } from './common.mjs';

/** A port that was free a moment ago (nginx cannot be told to pick one itself). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/** Wait for a child to exit, with SIGKILL after `graceMs`. */
export async function stopChild(child, signal = 'SIGTERM', graceMs = 15_000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

function config(prefix, root, port) {
  const p = (name) => join(prefix, name);
  return `daemon off;
master_process off;
worker_processes 1;
pid ${p('nginx.pid')};
error_log ${p('error.log')} warn;
events { worker_connections 1024; }
http {
  log_format bench '$msec $request_method $uri $status $body_bytes_sent $request_time';
  access_log ${p('access.log')} bench;
  client_body_temp_path ${p('tmp/body')};
  proxy_temp_path ${p('tmp/proxy')};
  fastcgi_temp_path ${p('tmp/fastcgi')};
  uwsgi_temp_path ${p('tmp/uwsgi')};
  scgi_temp_path ${p('tmp/scgi')};
  types { }
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:${port};
    root ${root};
    location / { }
  }
}
`;
}

/**
 * Start nginx serving `root` at http://127.0.0.1:PORT/; its config, pid, logs and temp files live
 * in `prefix`. Returns { url, port, pid, accessLog, errorLog, stop() }.
 */
export async function startNginx(prefix, root) {
  mkdirSync(join(prefix, 'tmp'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  const errorLog = join(prefix, 'error.log');
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    writeFileSync(conf, config(prefix, root, port));
    const child = track(
      spawn('nginx', ['-c', conf, '-p', prefix, '-e', errorLog], { stdio: ['ignore', 'ignore', 'pipe'] }),
    );
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    for (let i = 0; i < 100 && child.exitCode === null; i++) {
      if (await canConnect(port)) {
        return {
          url: `http://127.0.0.1:${port}/`,
          port,
          pid: child.pid,
          accessLog: join(prefix, 'access.log'),
          errorLog,
          stop: () => stopChild(child, 'SIGTERM'),
        };
      }
      await sleep(50);
    }
    await stopChild(child, 'SIGKILL');
    // Someone may have taken the port between freePort() and nginx's bind: try another one.
    if (attempt >= 3) throw new Error(`nginx did not start on 127.0.0.1:${port}:\n${stderr}`);
  }
}
