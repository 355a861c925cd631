// libpq's TLS parameters, as tenant-plane's resolve answer gives them
// (`connection.sslmode`, `connection.sslrootcert`), turned into node-postgres
// options, so this service connects to a tenant database as tenant-plane
// itself does.

import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import pg from "pg";

import type { Connection } from "./tenant-plane.ts";

/** pg's `ssl` option: `false` is plaintext. */
export type SslOption = false | ConnectionOptions;

/** What node-postgres answers when a server without TLS gets an SSLRequest. */
const NO_TLS_ON_SERVER = "The server does not support SSL connections";

/**
 * pg's `ssl` option for libpq's `sslmode` and `sslrootcert`:
 * - `disable`: plaintext;
 * - `prefer` and `require`: encrypted, nothing verified (for `prefer` see
 *   {@link clientConfig}, which falls back to plaintext as libpq does);
 *   `require` with a root certificate verifies the chain, as libpq does
 *   (tenant-plane answers `verify-ca` for it anyway);
 * - `verify-ca`: the chain, against `sslrootcert`, not the host name;
 * - `verify-full`: the chain and the host name;
 * - `sslrootcert=system`: Node's trusted CAs (tenant-plane allows it with
 *   `verify-full` only).
 */
export function sslOption(sslmode: string, sslrootcert?: string | null): SslOption {
  switch (sslmode) {
    case "disable":
      return false;
    case "prefer":
      return { rejectUnauthorized: false };
    case "require":
      return sslrootcert ? verifying("verify-ca", sslrootcert) : { rejectUnauthorized: false };
    case "verify-ca":
    case "verify-full":
      if (!sslrootcert) {
        throw new Error(`sslmode=${sslmode} needs an sslrootcert to verify against`);
      }
      return verifying(sslmode, sslrootcert);
    default:
      throw new Error(`unknown sslmode ${JSON.stringify(sslmode)}`);
  }
}

function verifying(sslmode: "verify-ca" | "verify-full", sslrootcert: string): ConnectionOptions {
  const options: ConnectionOptions = { rejectUnauthorized: true };
  if (sslrootcert !== "system") {
    // A path on tenant-plane's machine: this service needs the same file
    // there (mount the same CA bundle). A missing file is an error, never
    // a silent downgrade.
    options.ca = readFileSync(sslrootcert);
  }
  if (sslmode === "verify-ca") {
    // The chain is still checked (rejectUnauthorized); only the host name
    // check is skipped, as libpq's verify-ca does.
    options.checkServerIdentity = () => undefined;
  }
  return options;
}

/**
 * The pg settings for one tenant connection. With `prefer`, one probe
 * connection finds out whether the server speaks TLS; if it does not, the
 * pool connects in plaintext, as libpq would.
 */
export async function clientConfig(connection: Connection): Promise<pg.ClientConfig> {
  const config: pg.ClientConfig = {
    host: connection.host,
    port: connection.port,
    database: connection.database,
    user: connection.role,
    // Without a password pg looks in PGPASSFILE / ~/.pgpass.
    ...(connection.password != null ? { password: connection.password } : {}),
  };
  let ssl = sslOption(connection.sslmode, connection.sslrootcert);
  if (connection.sslmode === "prefer") {
    ssl = await preferred(config);
  }
  // SCRAM channel binding (SCRAM-SHA-256-PLUS) whenever the connection is
  // encrypted, as tenant-plane does: it ties the login to this TLS session.
  return { ...config, ssl, enableChannelBinding: ssl !== false };
}

async function preferred(config: pg.ClientConfig): Promise<SslOption> {
  const encrypted: SslOption = { rejectUnauthorized: false };
  const probe = new pg.Client({ ...config, ssl: encrypted, enableChannelBinding: true });
  try {
    await probe.connect();
  } catch (e) {
    if ((e as Error).message === NO_TLS_ON_SERVER) {
      return false;
    }
    throw e;
  }
  await probe.end();
  return encrypted;
}
