// What the tests need to stand up the real thing: a fresh control database,
// `tenant-plane serve` (and `worker`) as child processes, organizations
// created the way Clerk creates them (Svix-signed webhooks) and Clerk
// session tokens signed with the repository's RSA test keys. No mocks.

import { spawn, type ChildProcess } from "node:child_process";
import { createHmac, randomBytes, sign } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { once } from "node:events";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";

import { createApp } from "../src/app.ts";
import { TenantPools, type PoolOptions } from "../src/pools.ts";
import { TenantPlane, type Tenant } from "../src/tenant-plane.ts";
import { sslOption } from "../src/tls.ts";

const EXAMPLE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_ROOT = path.resolve(EXAMPLE_DIR, "../..");
const FIXTURES = path.join(REPO_ROOT, "crates/testkit/fixtures");
const BIN = path.resolve(EXAMPLE_DIR, process.env.TENANT_PLANE_BIN ?? "../../target/debug/tenant-plane");

/** What crates/testkit/src/jwt.rs calls ISSUER and AZP. */
export const ISSUER = "https://clerk.tenant-plane.test";
export const AZP = "https://app.tenant-plane.test";

export const randomHex = (bytes: number) => randomBytes(bytes).toString("hex");

export function requireEnv(name: string, how: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set; ${how}`);
  }
  return value;
}

/** pg settings for an admin URL, its `sslmode`/`sslrootcert` mapped as the example maps them. */
export function adminConfig(url: string, database?: string): pg.ClientConfig {
  const u = new URL(url);
  // scripts/dev-db's plain URL names no sslmode and its server has no TLS.
  const ssl = sslOption(u.searchParams.get("sslmode") ?? "disable", u.searchParams.get("sslrootcert"));
  return {
    host: u.hostname,
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: database ?? decodeURIComponent(u.pathname.slice(1)),
    ssl,
  };
}

/** Runs `fn` with an admin connection to `database` (default: the URL's). */
export async function withAdmin<T>(url: string, fn: (c: pg.Client) => Promise<T>, database?: string): Promise<T> {
  const client = new pg.Client(adminConfig(url, database));
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, "close");
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const b64url = (data: string | Buffer) => Buffer.from(data).toString("base64url");

/**
 * A Clerk v2 session token (the claims of testkit's `Session::v2`) for
 * `orgId`, RS256-signed by the fixture key `key` (`rsa-a` is the one
 * tenant-plane trusts), valid now.
 */
export function sessionToken(orgId: string, key: "rsa-a" | "rsa-b" = "rsa-a"): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: "RS256", typ: "JWT", kid: key === "rsa-a" ? "test-key-a" : "test-key-b" };
  const claims = {
    azp: AZP,
    exp: now + 60,
    fea: "o:projects",
    fva: [0, -1],
    iat: now - 10,
    iss: ISSUER,
    nbf: now - 20,
    o: { id: orgId, rol: "admin", slg: "acme", per: "read,manage", fpm: "3" },
    sid: `sess_${randomHex(12)}`,
    sts: "active",
    sub: `user_${randomHex(12)}`,
    v: 2,
  };
  const message = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const privateKey = readFileSync(path.join(FIXTURES, `${key}.key.pem`));
  return `${message}.${sign("sha256", Buffer.from(message), privateKey).toString("base64url")}`;
}

/** Svix's signature header: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")). */
export function svixSignature(secret: string, id: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  return `v1,${createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64")}`;
}

/** An `organization.created` event as Clerk sends it (crates/webhooks/src/samples.rs). */
export function organizationCreated(orgId: string, name: string): object {
  const now = Date.now();
  return {
    object: "event",
    type: "organization.created",
    instance_id: "ins_2g7np7Hrk0SN6kj5EDMLDaKNL0S",
    timestamp: now,
    event_attributes: { http_request: { client_ip: "127.0.0.1", user_agent: "tenant-plane-example-node" } },
    data: {
      object: "organization",
      id: orgId,
      name,
      slug: name.toLowerCase().replace(/[^a-z0-9]+/g, "-"),
      image_url: "https://img.clerk.com/xxxxxx",
      has_image: false,
      members_count: 1,
      missing_member_with_elevated_permissions: false,
      pending_invitations_count: 0,
      max_allowed_memberships: 5,
      admin_delete_enabled: true,
      public_metadata: {},
      private_metadata: {},
      created_by: `user_${randomHex(12)}`,
      created_at: now,
      updated_at: now,
    },
  };
}

/** A fresh organization id (hex is within Clerk's base62 alphabet). */
export const newOrgId = () => `org_${randomHex(16)}`;

export interface TenantPlaneOptions {
  /** Admin URL of the PostgreSQL server to put everything on. */
  adminUrl: string;
  /** Run the reconciler inside `serve` (default); else see `startWorker`. */
  worker?: boolean;
}

/**
 * A running tenant-plane on a control database of its own, with tenants
 * under a prefix of their own; `stop()` ends it and drops all of it.
 */
export class TenantPlaneServer {
  readonly url: string;
  readonly serviceToken = randomHex(24);
  readonly webhookSecret = `whsec_${randomBytes(24).toString("base64")}`;
  readonly prefix = `tp_test_n${randomHex(3)}_`;
  readonly controlDb = `tp_test_node_${randomHex(8)}`;
  readonly #adminUrl: string;
  readonly #env: NodeJS.ProcessEnv;
  readonly #children: ChildProcess[] = [];
  #output = "";
  #stopped = false;

  private constructor(adminUrl: string, port: number, worker: boolean) {
    this.#adminUrl = adminUrl;
    this.url = `http://127.0.0.1:${port}`;
    const controlUrl = new URL(adminUrl);
    controlUrl.pathname = `/${this.controlDb}`;
    // The parent's own TENANT_PLANE__* settings (scripts/test exports
    // database.url) must not leak into this server.
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TENANT_PLANE__")));
    this.#env = {
      ...inherited,
      TENANT_PLANE__DATABASE__URL: controlUrl.toString(),
      TENANT_PLANE__HTTP__BIND: `127.0.0.1:${port}`,
      TENANT_PLANE__CLERK__WEBHOOK_SECRET: this.webhookSecret,
      TENANT_PLANE__CRYPTO__KEY: randomBytes(32).toString("base64"),
      TENANT_PLANE__INTERNAL__TOKENS: this.serviceToken,
      // The example connects with the tenant's password: it must be in the answer.
      TENANT_PLANE__INTERNAL__EXPOSE_PASSWORDS: "true",
      TENANT_PLANE__CLERK__ISSUER: ISSUER,
      TENANT_PLANE__CLERK__JWT_PUBLIC_KEY: readFileSync(path.join(FIXTURES, "rsa-a.pub.pem"), "utf8"),
      TENANT_PLANE__CLERK__AUTHORIZED_PARTIES: AZP,
      TENANT_PLANE__TENANTS__PREFIX: this.prefix,
      TENANT_PLANE__TENANTS__RETENTION: "0s",
      TENANT_PLANE__WORKER__ENABLED: String(worker),
      TENANT_PLANE__WORKER__POLL_INTERVAL: "200ms",
      TENANT_PLANE__LOG__FORMAT: "json",
    };
  }

  /** Creates the control database, migrates it and starts `serve`. */
  static async start({ adminUrl, worker = true }: TenantPlaneOptions): Promise<TenantPlaneServer> {
    if (!existsSync(BIN)) {
      throw new Error(`no tenant-plane binary at ${BIN}: set TENANT_PLANE_BIN, or run scripts/test-node (it builds one)`);
    }
    const tp = new TenantPlaneServer(adminUrl, await freePort(), worker);
    await withAdmin(adminUrl, (c) => c.query(`CREATE DATABASE ${pg.escapeIdentifier(tp.controlDb)}`));
    try {
      await tp.#run("migrate");
      tp.#spawn("serve");
      await tp.#waitReady();
    } catch (e) {
      await tp.stop();
      throw e;
    }
    return tp;
  }

  /** Starts `tenant-plane worker`: the reconciler on its own. */
  startWorker(): void {
    this.#spawn("worker");
  }

  /** Everything the processes wrote (JSON logs; tenant-plane logs no secrets). */
  get output(): string {
    return this.#output;
  }

  #spawn(command: string): ChildProcess {
    const child = spawn(BIN, [command], { env: this.#env, stdio: ["ignore", "pipe", "pipe"] });
    // Should the test process die without stop() (an interrupted run), its
    // servers die with it; scripts/test drops the tp_test_* leftovers.
    const orphaned = () => child.kill("SIGKILL");
    process.once("exit", orphaned);
    child.once("close", () => process.off("exit", orphaned));
    const collect = (chunk: Buffer) => {
      this.#output += chunk.toString();
      if (process.env.TEST_LOG === "1") {
        process.stderr.write(chunk);
      }
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    child.on("error", (e) => (this.#output += `\n${BIN} ${command}: ${e.message}\n`));
    this.#children.push(child);
    return child;
  }

  async #run(command: string): Promise<void> {
    const child = this.#spawn(command);
    const [code] = (await once(child, "close")) as [number | null];
    if (code !== 0) {
      throw new Error(`tenant-plane ${command} exited ${code}:\n${this.#output.slice(-4000)}`);
    }
  }

  async #waitReady(): Promise<void> {
    const deadline = Date.now() + 30_000;
    const serve = this.#children.at(-1)!;
    while (Date.now() < deadline) {
      if (serve.exitCode !== null) {
        throw new Error(`tenant-plane serve exited ${serve.exitCode}:\n${this.#output.slice(-4000)}`);
      }
      const ready = await fetch(`${this.url}/readyz`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ready) {
        return;
      }
      await sleep(100);
    }
    throw new Error(`tenant-plane serve was not ready within 30 s:\n${this.#output.slice(-4000)}`);
  }

  /** A call to the internal API with the service token. */
  async internal(method: string, route: string): Promise<Response> {
    return fetch(`${this.url}/internal/v1${route}`, {
      method,
      headers: { authorization: `Bearer ${this.serviceToken}` },
    });
  }

  /** POSTs a Svix-signed `organization.created` for `orgId`, as Clerk would. */
  async createOrganization(orgId: string, name: string): Promise<void> {
    const body = JSON.stringify(organizationCreated(orgId, name));
    const id = `msg_${randomHex(12)}`;
    const timestamp = Math.floor(Date.now() / 1000);
    const response = await fetch(`${this.url}/webhooks/clerk`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "svix-id": id,
        "svix-timestamp": String(timestamp),
        "svix-signature": svixSignature(this.webhookSecret, id, timestamp, body),
      },
      body,
    });
    if (response.status !== 200) {
      throw new Error(`webhook answered ${response.status}: ${await response.text()}`);
    }
  }

  async tenant(orgId: string): Promise<Tenant> {
    const response = await this.internal("GET", `/tenants/by-org/${orgId}`);
    if (response.status !== 200) {
      throw new Error(`by-org answered ${response.status}: ${await response.text()}`);
    }
    return (await response.json()) as Tenant;
  }

  /** Polls the tenant of `orgId` until its status is `status` (60 s at most). */
  async waitFor(orgId: string, status: string): Promise<Tenant> {
    const deadline = Date.now() + 60_000;
    let tenant: Tenant | undefined;
    while (Date.now() < deadline) {
      tenant = await this.tenant(orgId);
      if (tenant.status === status) {
        return tenant;
      }
      if (tenant.status === "failed") {
        throw new Error(`tenant of ${orgId} failed: ${tenant.last_error}`);
      }
      await sleep(200);
    }
    throw new Error(
      `tenant of ${orgId} is ${tenant?.status}, not ${status}, after 60 s:\n${this.#output.slice(-4000)}`,
    );
  }

  /** SIGTERM to every process, then drops the control database and every tenant database and role. */
  async stop(): Promise<void> {
    if (this.#stopped) {
      return;
    }
    this.#stopped = true;
    await Promise.all(this.#children.map(stopChild));
    await withAdmin(this.#adminUrl, async (c) => {
      const dbs = await c.query<{ datname: string; datistemplate: boolean }>(
        "SELECT datname, datistemplate FROM pg_database WHERE starts_with(datname, $1) OR datname = $2",
        [this.prefix, this.controlDb],
      );
      for (const { datname, datistemplate } of dbs.rows) {
        const name = pg.escapeIdentifier(datname);
        if (datistemplate) {
          // <prefix>template: a template database cannot be dropped.
          await c.query(`ALTER DATABASE ${name} IS_TEMPLATE false`);
        }
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      }
      // With their databases gone, the login and owner roles own nothing.
      const roles = await c.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)", [
        this.prefix,
      ]);
      for (const { rolname } of roles.rows) {
        await c.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(rolname)}`);
      }
    });
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const closed = once(child, "close");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await closed;
  clearTimeout(timer);
}

/** The example service, in this process, on a free port. */
export interface Service {
  url: string;
  pools: TenantPools;
  /** A request with the session token as a bearer token, or as it is given. */
  call(
    method: string,
    route: string,
    init?: { token?: string; headers?: Record<string, string>; body?: unknown },
  ): Promise<Response>;
  close(): Promise<void>;
}

export async function startService(
  tp: TenantPlaneServer,
  poolOptions: PoolOptions = {},
  serviceToken = tp.serviceToken,
): Promise<Service> {
  const pools = new TenantPools({ perTenant: 2, ...poolOptions });
  const server = createApp({ tenantPlane: new TenantPlane({ baseUrl: tp.url, serviceToken }), pools });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    url,
    pools,
    call: (method, route, { token, headers = {}, body } = {}) =>
      fetch(`${url}${route}`, {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
          ...headers,
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      }),
    close: async () => {
      server.close();
      server.closeAllConnections();
      await pools.close();
    },
  };
}
