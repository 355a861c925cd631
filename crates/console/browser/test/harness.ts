// What the browser tests stand on: a fresh control database, `tenant-plane
// serve` as a child process with a console token, a webhook secret and the
// worker on, organizations created as Clerk creates them (Svix-signed
// webhooks), and Debian's Chromium driven by playwright-core. No mocks.

import { spawn, type ChildProcess } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { once } from "node:events";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, "../../../..");
const BIN = process.env.TENANT_PLANE_BIN ?? path.join(REPO_ROOT, "target/debug/tenant-plane");
/** Where each page's screenshots go (gitignored: target/ is). */
export const SCREENSHOTS = process.env.CONSOLE_SCREENSHOTS ?? path.join(REPO_ROOT, "target/console-screenshots");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export const randomHex = (bytes: number) => randomBytes(bytes).toString("hex");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function adminConfig(url: string, database?: string): pg.ClientConfig {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: database ?? decodeURIComponent(u.pathname.slice(1)),
  };
}

export async function withAdmin<T>(url: string, fn: (c: pg.Client) => Promise<T>, database?: string): Promise<T> {
  const client = new pg.Client(adminConfig(url, database));
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, "close");
  return port;
}

/** Svix's signature header: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")). */
function svixSignature(secret: string, id: string, timestamp: number, body: string): string {
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
    data: {
      object: "organization",
      id: orgId,
      name,
      slug: null,
      image_url: "https://img.clerk.com/xxxxxx",
      has_image: false,
      members_count: 1,
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

export const newOrgId = () => `org_${randomHex(16)}`;

/** A running tenant-plane with its console on; `stop()` ends it and drops everything it made. */
export class ConsoleServer {
  readonly url: string;
  readonly consoleToken = `console-${randomHex(16)}`;
  readonly webhookSecret = `whsec_${randomBytes(24).toString("base64")}`;
  readonly cryptoKey = randomBytes(32).toString("base64");
  readonly prefix = `tp_test_c${randomHex(3)}_`;
  readonly controlDb = `tp_test_console_${randomHex(8)}`;
  readonly adminUrl: string;
  readonly #env: NodeJS.ProcessEnv;
  readonly #children: ChildProcess[] = [];
  #output = "";
  #stopped = false;

  private constructor(adminUrl: string, port: number) {
    this.adminUrl = adminUrl;
    this.url = `http://127.0.0.1:${port}`;
    const controlUrl = new URL(adminUrl);
    controlUrl.pathname = `/${this.controlDb}`;
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TENANT_PLANE__")));
    this.#env = {
      ...inherited,
      TENANT_PLANE__DATABASE__URL: controlUrl.toString(),
      TENANT_PLANE__HTTP__BIND: `127.0.0.1:${port}`,
      TENANT_PLANE__CLERK__WEBHOOK_SECRET: this.webhookSecret,
      TENANT_PLANE__CRYPTO__KEY: this.cryptoKey,
      TENANT_PLANE__CONSOLE__TOKENS: this.consoleToken,
      TENANT_PLANE__TENANTS__PREFIX: this.prefix,
      TENANT_PLANE__TENANTS__RETENTION: "0s",
      TENANT_PLANE__WORKER__ENABLED: "true",
      TENANT_PLANE__WORKER__POLL_INTERVAL: "200ms",
      TENANT_PLANE__LOG__FORMAT: "json",
    };
  }

  static async start(adminUrl: string): Promise<ConsoleServer> {
    if (!existsSync(BIN)) {
      throw new Error(`no tenant-plane binary at ${BIN}: set TENANT_PLANE_BIN, or run scripts/test-console (it builds one)`);
    }
    const tp = new ConsoleServer(adminUrl, await freePort());
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

  /** Everything the server wrote (JSON logs). */
  get output(): string {
    return this.#output;
  }

  /** Secrets no page may show. */
  get secrets(): string[] {
    return [this.consoleToken, this.webhookSecret, this.webhookSecret.replace(/^whsec_/, ""), this.cryptoKey];
  }

  #spawn(command: string): ChildProcess {
    const child = spawn(BIN, [command], { env: this.#env, stdio: ["ignore", "pipe", "pipe"] });
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

  /** POSTs a Svix-signed `organization.created`, as Clerk would. */
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

  /** Runs `fn` on the control database. */
  control<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    return withAdmin(this.adminUrl, fn, this.controlDb);
  }

  async stop(): Promise<void> {
    if (this.#stopped) {
      return;
    }
    this.#stopped = true;
    await Promise.all(this.#children.map(stopChild));
    await withAdmin(this.adminUrl, async (c) => {
      const dbs = await c.query<{ datname: string; datistemplate: boolean }>(
        "SELECT datname, datistemplate FROM pg_database WHERE starts_with(datname, $1) OR datname = $2",
        [this.prefix, this.controlDb],
      );
      for (const { datname, datistemplate } of dbs.rows) {
        const name = pg.escapeIdentifier(datname);
        if (datistemplate) {
          await c.query(`ALTER DATABASE ${name} IS_TEMPLATE false`);
        }
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      }
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

/** Debian's Chromium, headless; playwright-core downloads no browser. */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking"],
  });
}

export const DESKTOP = { width: 1280, height: 900 };
export const PHONE = { width: 390, height: 844 };

/**
 * A fresh context (no cookies) whose pages fail the test on any dialog (an
 * injected alert), page error or Content-Security-Policy violation.
 */
export async function newContext(
  browser: Browser,
  problems: string[],
  options: { javaScriptEnabled?: boolean; viewport?: { width: number; height: number } } = {},
): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: DESKTOP, ...options });
  context.on("page", (page) => watch(page, problems));
  return context;
}

function watch(page: Page, problems: string[]): void {
  page.on("dialog", (d) => {
    problems.push(`a ${d.type()} dialog opened: ${d.message()}`);
    void d.dismiss();
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of (401|403|404|409|429)/.test(m.text())) {
      problems.push(`console error: ${m.text()}`);
    }
  });
}

/** Screenshots of `page` at desktop and phone widths, as test artefacts. */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const size = page.viewportSize() ?? DESKTOP;
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}-1280.png`), fullPage: true });
  await page.setViewportSize(PHONE);
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}-phone.png`), fullPage: true });
  await page.setViewportSize(size);
}
