// A client for tenant-plane's internal API: only POST /internal/v1/resolve,
// which turns a Clerk session token into the tenant it belongs to and how to
// reach that tenant's own database. The types mirror crates/api/src/lib.rs.

/** Every error answer of tenant-plane (and of this service). */
export interface ErrorBody {
  /** Stable, machine-readable: `token_expired`, `tenant_unknown`, ... */
  error: string;
  message: string;
}

/** How to reach the tenant's database as the tenant's own role. */
export interface Connection {
  host: string;
  port: number;
  database: string;
  role: string;
  /** Null unless tenant-plane runs with `internal.expose_passwords = true`. */
  password: string | null;
  /** libpq's sslmode: disable, prefer, require, verify-ca or verify-full. */
  sslmode: string;
  /** A CA file path (on tenant-plane's machine) or `system`; absent if none. */
  sslrootcert?: string;
}

/** A tenant as tenant-plane's registry holds it (timestamps are RFC 3339). */
export interface Tenant {
  id: string;
  clerk_org_id: string;
  slug: string | null;
  name: string;
  /** pending, provisioning, active, suspending, suspended, deleting, deleted, failed */
  status: string;
  desired_state: string;
  plan: string;
  db_host: string | null;
  db_name: string | null;
  db_role: string | null;
  template_version: number | null;
  attempts: number;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  deleted_at: string | null;
  purge_after: string | null;
}

/** The verified claims of the session. */
export interface SessionClaims {
  user_id: string;
  session_id: string | null;
  org_id: string;
  org_role: string | null;
  org_slug: string | null;
  org_permissions: string[];
}

export interface ResolveAnswer {
  tenant: Tenant;
  claims: SessionClaims;
  connection: Connection;
}

/** A refusal to hand on to the caller as it is: status, body, Retry-After. */
export interface Refusal {
  status: number;
  body: ErrorBody;
  retryAfter?: string;
}

export type ResolveResult = { ok: true; answer: ResolveAnswer } | ({ ok: false } & Refusal);

export interface TenantPlaneOptions {
  /** e.g. `http://tenant-plane.internal:8080`. */
  baseUrl: string;
  /** One of tenant-plane's `internal.tokens`. */
  serviceToken: string;
  /** How long to wait for an answer; default 5 s. */
  timeoutMs?: number;
}

export function isErrorBody(value: unknown): value is ErrorBody {
  const v = value as Partial<ErrorBody> | null;
  return typeof v?.error === "string" && typeof v.message === "string";
}

function badGateway(message: string): ResolveResult {
  return { ok: false, status: 502, body: { error: "tenant_plane_unavailable", message } };
}

export class TenantPlane {
  readonly #url: string;
  readonly #serviceToken: string;
  readonly #timeoutMs: number;

  constructor(options: TenantPlaneOptions) {
    this.#url = `${options.baseUrl.replace(/\/+$/, "")}/internal/v1/resolve`;
    this.#serviceToken = options.serviceToken;
    this.#timeoutMs = options.timeoutMs ?? 5000;
  }

  /** Resolves a session token; never throws. */
  async resolve(sessionToken: string): Promise<ResolveResult> {
    let response: Response;
    let body: unknown;
    try {
      response = await fetch(this.#url, {
        method: "POST",
        headers: {
          authorization: `Bearer ${this.#serviceToken}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({ token: sessionToken }),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      body = await response.json();
    } catch (e) {
      // fetch says "fetch failed" and keeps the reason (ECONNREFUSED, ...)
      // in `cause`; neither names the token.
      const { message, cause } = e as Error & { cause?: { code?: string } };
      return badGateway(`tenant-plane did not answer: ${cause?.code ?? message}`);
    }
    if (response.ok) {
      return { ok: true, answer: body as ResolveAnswer };
    }
    if (!isErrorBody(body)) {
      return badGateway(`tenant-plane answered ${response.status} without an error body`);
    }
    // tenant-plane says 401 `unauthorized` when it refuses *our* service
    // token (bad session tokens get `token_*` codes). Passed on as a 401 it
    // would sign the user out for a fault of this service's configuration.
    if (response.status === 401 && body.error === "unauthorized") {
      return badGateway("tenant-plane refused this service's token (check TENANT_PLANE_SERVICE_TOKEN)");
    }
    const retryAfter = response.headers.get("retry-after") ?? undefined;
    return { ok: false, status: response.status, body, ...(retryAfter ? { retryAfter } : {}) };
  }
}
