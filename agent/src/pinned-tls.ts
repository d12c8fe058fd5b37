import { X509Certificate } from 'node:crypto';
import { request as httpRequest, type Agent as HttpAgent, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';
import { isIP } from 'node:net';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { normaliseFingerprint } from '@edgepack/protocol';

/**
 * The agent's HTTPS edge. Before enrollment it has only a fingerprint (from the token) or
 * nothing; afterwards it has the orchestrator's CA certificate and trusts nothing else:
 *
 * 1. `presentedChain` does a TLS handshake and nothing more (no byte of application data, so no
 *    token), and returns the certificates the server presented.
 * 2. The one whose SHA-256 is the pinned fingerprint is the CA: a certificate is self-identifying
 *    by its hash, so no chain logic of our own is needed to trust it.
 * 3. `requestText` then talks to the server with that CA as its only trust anchor and Node's
 *    (OpenSSL's) normal checks: chain, dates, host name. The token goes only over this connection.
 */

/** `sha256:<hex>` of a certificate, PEM or DER. */
export function certificateFingerprint(cert: string | Buffer): string {
  return normaliseFingerprint(new X509Certificate(cert).fingerprint256);
}

export function derToPem(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** SNI names a host, never an address (RFC 6066 §3). */
function servername(host: string): string | undefined {
  const h = host.replace(/^\[|\]$/g, '');
  return isIP(h) ? undefined : h;
}

function hostOf(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, '');
}

/** The certificates the server at `url` presents, leaf first, as DER. Throws on a failed handshake or a timeout. */
export function presentedChain(url: URL, timeoutMs = 10_000): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const host = hostOf(url);
    const sni = servername(host);
    // Not verified here, on purpose: verifying needs the CA, which is what this looks for.
    const socket = tlsConnect({ host, port: Number(url.port || 443), rejectUnauthorized: false, ...(sni ? { servername: sni } : {}) });
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const chain: Buffer[] = [];
      let cert: PeerCertificate | undefined = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (cert && cert.raw && !seen.has(cert.fingerprint256)) {
        seen.add(cert.fingerprint256);
        chain.push(cert.raw);
        cert = (cert as { issuerCertificate?: PeerCertificate }).issuerCertificate;
      }
      socket.end();
      resolve(chain);
    });
    socket.once('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

export interface TextAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

/**
 * One HTTP(S) request. Over https, `ca` replaces every trust anchor (Node's bundled roots
 * included); the server must chain to it and name the host. No connection is pooled unless an
 * `agent` is given (one made with the same `ca`), so no socket made under one trust decision is
 * reused under another.
 */
export function requestText(url: URL, o: {
  method: string; headers?: Record<string, string>; body?: string; ca?: string | string[]; timeoutMs?: number; maxBytes?: number; agent?: HttpAgent | HttpsAgent;
}): Promise<TextAnswer> {
  const timeoutMs = o.timeoutMs ?? 30_000;
  const maxBytes = o.maxBytes ?? 1 << 20;
  return new Promise((resolve, reject) => {
    const https = url.protocol === 'https:';
    const sni = servername(hostOf(url));
    const opts = {
      method: o.method, agent: o.agent ?? (false as const), timeout: timeoutMs,
      headers: { ...(o.body !== undefined ? { 'content-length': String(Buffer.byteLength(o.body)) } : {}), ...o.headers },
      ...(https ? { ca: o.ca, rejectUnauthorized: true, ...(sni ? { servername: sni } : {}) } : {}),
    };
    const req = (https ? httpsRequest : httpRequest)(url, opts, (res) => {
      const parts: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > maxBytes) req.destroy(new Error(`answer is over ${maxBytes} bytes`));
        else parts.push(d);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(parts).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(o.body);
  });
}
