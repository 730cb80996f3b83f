/**
 * A small HTTP proxy between an S3 client and a real RADOS Gateway that, request by request, answers
 * 503 SlowDown or 500, resets the connection mid-request or mid-response, or forwards the request and
 * then loses the answer (test/s3-faults.test.ts for the adapter, test/resource-faults.test.ts for a
 * whole server on a bucket). It is a test peer in front of the real thing, not a stand-in for it.
 */
import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * pass: forward. slowdown / error500: answer that status without forwarding (nothing applied).
 * reset-request: tear the connection down before forwarding (nothing applied).
 * reset-response: forward, send half of the first body chunk, then reset (a read cut mid-body); an
 *   answer without a body (HEAD, a 404) is reset once its headers are sent.
 * lose-response: forward (the request IS applied), then reset instead of answering.
 */
export type Fault = 'pass' | 'slowdown' | 'error500' | 'reset-request' | 'reset-response' | 'lose-response';

export interface Seen {
  method: string;
  path: string;
  range: string | undefined;
  conditional: boolean;
  fault: Fault;
  /** RGW's status when the request was forwarded. */
  status?: number;
}

export interface FaultProxy {
  endpoint: string;
  seen: Seen[];
  policy: (req: IncomingMessage, n: number) => Fault;
  close(): Promise<void>;
}

const errorXml = (code: string, message: string) =>
  `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message>` +
  '<RequestId>fault-proxy</RequestId></Error>';

export async function startFaultProxy(target: URL): Promise<FaultProxy> {
  const proxy: FaultProxy = { endpoint: '', seen: [], policy: () => 'pass', close: async () => {} };
  let n = 0;
  const server: Server = createServer((req, res) => {
    const fault = proxy.policy(req, n++);
    const seen: Seen = {
      method: req.method ?? '',
      path: req.url ?? '',
      range: req.headers.range,
      conditional: req.headers['if-match'] !== undefined || req.headers['if-none-match'] !== undefined,
      fault,
    };
    proxy.seen.push(seen);
    if (fault === 'slowdown' || fault === 'error500') {
      // Read the body first, as a server does, so the client is not cut off while it sends it.
      req.resume();
      req.on('end', () => {
        const [status, code] = fault === 'slowdown' ? [503, 'SlowDown'] : [500, 'InternalError'];
        res.writeHead(status, { 'content-type': 'application/xml' });
        res.end(errorXml(code, 'injected by the test proxy'));
      });
      return;
    }
    if (fault === 'reset-request') {
      // Mid-request: the headers (and maybe part of the body) arrived, the connection dies.
      req.socket.resetAndDestroy();
      return;
    }
    const headers = { ...req.headers };
    // The proxy answers 100-continue itself; RGW gets the body straight away.
    delete headers.expect;
    const up = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
      (answer) => {
        seen.status = answer.statusCode;
        if (fault === 'lose-response') {
          answer.resume();
          req.socket.resetAndDestroy();
          return;
        }
        res.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
        if (fault === 'reset-response') {
          answer.once('data', (chunk: Buffer) => {
            answer.destroy();
            res.write(chunk.subarray(0, chunk.length >> 1), () => req.socket.resetAndDestroy());
          });
          // No body to cut (HEAD, 204, an empty 404): waiting for one would hang the client.
          answer.once('end', () => {
            if (!answer.destroyed) res.flushHeaders();
            setImmediate(() => req.socket.resetAndDestroy());
          });
          answer.resume();
          return;
        }
        answer.pipe(res);
      },
    );
    up.on('error', () => req.socket.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}
