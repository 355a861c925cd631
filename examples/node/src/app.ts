// The service: GET and POST /projects, each on the caller's tenant database.
// Who the caller is and which database is theirs is tenant-plane's answer to
// the request's Clerk session token; this code never decides it itself.

import http from "node:http";
import type pg from "pg";

import type { TenantPools } from "./pools.ts";
import { sessionToken } from "./session.ts";
import type { ErrorBody, TenantPlane } from "./tenant-plane.ts";

export interface AppOptions {
  tenantPlane: TenantPlane;
  pools: TenantPools;
  /** One JSON object per line; given no tokens or passwords. */
  log?: (event: string, fields: Record<string, unknown>) => void;
}

/** A project as the API shows it; `id` is a bigint, so a string. */
export interface Project {
  id: string;
  key: string;
  name: string;
  created_at: string;
}

/** The tenant template's own rule (templates/tenant/V1__initial_schema.sql). */
export const PROJECT_KEY = /^[A-Z][A-Z0-9]{1,9}$/;
const MAX_BODY_BYTES = 16 * 1024;
const COLUMNS = "id, key, name, created_at";

/** An answer other than 200, in tenant-plane's `{error, message}` shape. */
class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string>;

  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

export function createApp({ tenantPlane, pools, log = () => {} }: AppOptions): http.Server {
  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const { pathname } = new URL(req.url ?? "/", "http://localhost");
    if (pathname !== "/projects") {
      throw new HttpError(404, "not_found", "no such route");
    }
    if (req.method !== "GET" && req.method !== "POST") {
      throw new HttpError(405, "method_not_allowed", "use GET or POST", { allow: "GET, POST" });
    }

    const token = sessionToken(req.headers);
    if (token === undefined) {
      throw new HttpError(
        401,
        "token_missing",
        "missing session token: send `Authorization: Bearer <token>` or the __session cookie",
      );
    }
    const resolved = await tenantPlane.resolve(token);
    if (!resolved.ok) {
      // tenant-plane's verdict, as it gave it: 401 for a bad token, 403 no
      // organization or suspended, 404 no tenant, 409 failed, 410 deleted,
      // 503 with Retry-After while the database is being provisioned.
      const { status, body, retryAfter } = resolved;
      return send(res, status, body, retryAfter ? { "retry-after": retryAfter } : {});
    }
    const { tenant, claims, connection } = resolved.answer;

    let pool: pg.Pool;
    try {
      pool = await pools.get(tenant.id, connection);
    } catch (e) {
      // e.g. an sslrootcert file this machine does not have.
      log("tenant_pool_failed", { tenant_id: tenant.id, error: (e as Error).message });
      throw new HttpError(503, "tenant_database_unavailable", "the tenant's database cannot be reached", {
        "retry-after": "1",
      });
    }

    if (req.method === "GET") {
      const { rows } = await query<Project>(
        pool,
        tenant.id,
        `SELECT ${COLUMNS} FROM projects WHERE archived_at IS NULL ORDER BY id`,
      );
      return send(res, 200, { projects: rows });
    }

    const { key, name } = parseProject(await readJson(req));
    try {
      const { rows } = await query<Project>(
        pool,
        tenant.id,
        `INSERT INTO projects (key, name) VALUES ($1, $2) RETURNING ${COLUMNS}`,
        [key, name],
      );
      log("project_created", { tenant_id: tenant.id, user_id: claims.user_id, key });
      return send(res, 201, { project: rows[0] });
    } catch (e) {
      if ((e as { code?: string }).code === "23505") {
        throw new HttpError(409, "project_key_taken", `a project with key ${key} exists`);
      }
      throw e;
    }
  }

  // A database that refuses connections is the tenant's database being
  // unavailable, not a bug here: 503, so clients retry.
  async function query<R extends pg.QueryResultRow>(
    pool: pg.Pool,
    tenantId: string,
    text: string,
    values: unknown[] = [],
  ) {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (e) {
      log("tenant_connect_failed", { tenant_id: tenantId, error: (e as Error).message });
      throw new HttpError(503, "tenant_database_unavailable", "the tenant's database cannot be reached", {
        "retry-after": "1",
      });
    }
    try {
      return await client.query<R>(text, values);
    } finally {
      client.release();
    }
  }

  return http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (e instanceof HttpError) {
        return send(res, e.status, { error: e.code, message: e.message }, e.headers);
      }
      log("internal_error", { method: req.method, error: (e as Error).message });
      send(res, 500, { error: "internal", message: "internal error" });
    });
  });
}

function parseProject(body: unknown): { key: string; name: string } {
  const { key, name } = (body ?? {}) as { key?: unknown; name?: unknown };
  if (typeof key !== "string" || !PROJECT_KEY.test(key)) {
    throw new HttpError(400, "invalid_project", "key must match ^[A-Z][A-Z0-9]{1,9}$");
  }
  if (typeof name !== "string" || name.trim() === "" || name.length > 200) {
    throw new HttpError(400, "invalid_project", "name must be a non-empty string of at most 200 characters");
  }
  return { key, name: name.trim() };
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new HttpError(413, "payload_too_large", `the body is larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new HttpError(400, "bad_request", "the body is not JSON");
  }
}

function send(
  res: http.ServerResponse,
  status: number,
  body: ErrorBody | object,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}
