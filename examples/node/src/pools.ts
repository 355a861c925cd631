// One pg.Pool per tenant, keyed by tenant id, with a bound on how many
// tenants have a pool at once (least recently used goes first), so that the
// connections this service holds stay under `maxTenants * perTenant` however
// many organizations call it.

import { createHash } from "node:crypto";
import pg from "pg";

import type { Connection } from "./tenant-plane.ts";
import { clientConfig } from "./tls.ts";

export interface PoolOptions {
  /** Most tenants with a pool at once (default 100). */
  maxTenants?: number;
  /** Connections per tenant (default 5; a tenant's plan allows 20). */
  perTenant?: number;
  /** Idle connections are closed after this long (default 30 s). */
  idleTimeoutMs?: number;
  /** How long to wait for a new connection (default 5 s). */
  connectTimeoutMs?: number;
  /** Where pool errors go; never given passwords. */
  log?: (event: string, fields: Record<string, unknown>) => void;
}

interface Entry {
  /** A hash of the connection parameters the pool was made with. */
  fingerprint: string;
  pool: Promise<pg.Pool>;
}

export class TenantPools {
  readonly #pools = new Map<string, Entry>();
  readonly #maxTenants: number;
  readonly #perTenant: number;
  readonly #idleTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #log: NonNullable<PoolOptions["log"]>;

  constructor(options: PoolOptions = {}) {
    this.#maxTenants = options.maxTenants ?? 100;
    this.#perTenant = options.perTenant ?? 5;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
    this.#log = options.log ?? (() => {});
  }

  /** How many tenants have a pool now. */
  get size(): number {
    return this.#pools.size;
  }

  /**
   * The pool of `tenantId` for the parameters tenant-plane just answered.
   * Different parameters (a rotated password, a tenant moved to another
   * host) replace the old pool.
   */
  async get(tenantId: string, connection: Connection): Promise<pg.Pool> {
    const fingerprint = fingerprintOf(connection);
    const entry = this.#pools.get(tenantId);
    // Delete and re-insert: a Map iterates in insertion order, so its first
    // key is the least recently used tenant.
    this.#pools.delete(tenantId);
    if (entry?.fingerprint === fingerprint) {
      this.#pools.set(tenantId, entry);
      return entry.pool;
    }
    if (entry) {
      void this.#end(tenantId, entry, "connection parameters changed");
    }
    // The promise is stored at once, so concurrent first requests of a
    // tenant share one pool.
    const created: Entry = { fingerprint, pool: this.#create(tenantId, connection) };
    this.#pools.set(tenantId, created);
    created.pool.catch(() => {
      if (this.#pools.get(tenantId) === created) {
        this.#pools.delete(tenantId);
      }
    });
    while (this.#pools.size > this.#maxTenants) {
      const [oldest, old] = this.#pools.entries().next().value as [string, Entry];
      this.#pools.delete(oldest);
      void this.#end(oldest, old, "evicted");
    }
    return created.pool;
  }

  /** Closes every pool (at shutdown). */
  async close(): Promise<void> {
    const entries = [...this.#pools];
    this.#pools.clear();
    await Promise.all(entries.map(([id, entry]) => this.#end(id, entry, "shutdown")));
  }

  async #create(tenantId: string, connection: Connection): Promise<pg.Pool> {
    const pool = new pg.Pool({
      ...(await clientConfig(connection)),
      max: this.#perTenant,
      idleTimeoutMillis: this.#idleTimeoutMs,
      connectionTimeoutMillis: this.#connectTimeoutMs,
    });
    // An idle connection that breaks (the server restarted, the tenant was
    // suspended) is reported here; without a listener it would crash the
    // process.
    pool.on("error", (e) => this.#log("tenant_pool_error", { tenant_id: tenantId, error: e.message }));
    return pool;
  }

  async #end(tenantId: string, entry: Entry, reason: string): Promise<void> {
    try {
      // Connections checked out finish their queries first.
      await (await entry.pool).end();
      this.#log("tenant_pool_closed", { tenant_id: tenantId, reason });
    } catch {
      // A pool that was never made has nothing to close.
    }
  }
}

/** Hashed, so the map holds no second copy of the password. */
function fingerprintOf(c: Connection): string {
  const parts = [c.host, c.port, c.database, c.role, c.password, c.sslmode, c.sslrootcert];
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex");
}
