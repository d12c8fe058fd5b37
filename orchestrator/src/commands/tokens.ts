// `edgepack tokens create --data-dir DIR`: an enrollment token made on the orchestrator's machine,
// without the API. With the CA in DIR/tls it is `enr_…#sha256:…`: handed to a device out of
// band, it authenticates the device's very first connection.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { EdgepackError, errorMessage } from '@edgepack/protocol';
import { openDatabase } from '../db/database.js';
import { Store } from '../db/store.js';
import { createEnrollmentToken } from '../enrollment-tokens.js';
import { TLS_DIR, fingerprintOf, pemBlocks } from '../tls-material.js';

export const TOKENS_HELP = `usage: edgepack tokens create --data-dir DIR [--ttl-sec N] [--ca-cert FILE] [--json]

  Makes a single-use enrollment token in DIR's database (the orchestrator may be running) and
  prints it: enr_…#sha256:<fingerprint of the CA certificate>. Give it to the agent with --enroll;
  it refuses to send the token to a server whose certificate chain lacks that CA.

  --data-dir DIR   the orchestrator's data dir                 (env EDGEPACK_DATA_DIR, default ./data)
  --ttl-sec N      lifetime in seconds, 60 to 2592000          (default 86400)
  --ca-cert FILE   the CA devices pin, if not DIR/tls/ca-cert.pem (with --tls-cert: its CA)
  --json           print {"token","expiresAt","caFingerprint"} instead of the token alone`;

class UsageError extends Error {}

export async function run(argv: string[]): Promise<number> {
  try {
    const { positionals, values } = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: { 'data-dir': { type: 'string' }, 'ttl-sec': { type: 'string' }, 'ca-cert': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
    if (values.help) { console.log(TOKENS_HELP); return 0; }
    if (positionals[0] !== 'create' || positionals.length !== 1) throw new UsageError(positionals[0] ? `unknown tokens command '${positionals.join(' ')}'` : 'a command is required: create');
    const dataDir = resolve(values['data-dir'] ?? process.env.EDGEPACK_DATA_DIR ?? './data');
    const ttlSec = Number(values['ttl-sec'] ?? 86_400);
    if (!Number.isInteger(ttlSec) || ttlSec < 60 || ttlSec > 30 * 86_400) throw new UsageError(`--ttl-sec must be a whole number from 60 to 2592000, got ${JSON.stringify(values['ttl-sec'])}`);
    const dbFile = join(dataDir, 'edgepack.db');
    // Never make a database where no orchestrator ever ran: the token would enroll into nothing.
    if (!existsSync(dbFile)) throw new EdgepackError('CONFIG_INVALID', `${dataDir} holds no orchestrator database; start 'edgepack serve --data-dir ${dataDir}' once first`);
    const caFile = values['ca-cert'] ? resolve(values['ca-cert']) : join(dataDir, TLS_DIR, 'ca-cert.pem');
    let caPem: string | undefined;
    try {
      caPem = pemBlocks(await readFile(caFile, 'utf8'))[0];
    } catch (err) {
      throw new EdgepackError('CONFIG_INVALID', `cannot read the CA certificate ${caFile} (${errorMessage(err)}); pass --ca-cert FILE with the CA devices pin`);
    }
    if (!caPem) throw new EdgepackError('CONFIG_INVALID', `${caFile} holds no PEM certificate`);
    const db = openDatabase(dbFile);
    try {
      const t = createEnrollmentToken(new Store(db), new Date(), ttlSec, fingerprintOf(caPem));
      console.log(values.json ? JSON.stringify(t) : t.token);
    } finally {
      db.close();
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError || /^ERR_PARSE_ARGS/.test(String((err as { code?: unknown }).code))) {
      console.error(`edgepack tokens: ${(err as Error).message}\n\n${TOKENS_HELP}`);
      return 2;
    }
    throw err;
  }
}
