// The example service end to end: a real tenant-plane (serve, and worker)
// on the dev PostgreSQL, organizations created by signed Clerk webhooks,
// session tokens signed with the RSA test keys.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  newOrgId,
  requireEnv,
  sessionToken,
  startService,
  TenantPlaneServer,
  withAdmin,
  type Service,
} from "./harness.ts";
import type { Tenant } from "../src/tenant-plane.ts";

const adminUrl = requireEnv(
  "TENANT_PLANE_TEST_DATABASE_URL",
  "run scripts/test-node, or: export TENANT_PLANE_TEST_DATABASE_URL=$(scripts/dev-db | tail -1)",
);

/** What tenant-plane itself answers to POST /internal/v1/resolve. */
async function resolveDirectly(tp: TenantPlaneServer, token: string) {
  const response = await fetch(`${tp.url}/internal/v1/resolve`, {
    method: "POST",
    headers: { authorization: `Bearer ${tp.serviceToken}`, "content-type": "application/json" },
    body: JSON.stringify({ token }),
  });
  return { status: response.status, body: await response.json() };
}

/** The rows of `sql` in the tenant's database, read as the admin. */
function inTenantDb<T>(tenant: Tenant, sql: string): Promise<T[]> {
  return withAdmin(adminUrl, async (c) => (await c.query(sql)).rows as T[], tenant.db_name!);
}

describe("the example service against a real tenant-plane and PostgreSQL", () => {
  let tp: TenantPlaneServer;
  let service: Service;
  const acme = newOrgId();
  const globex = newOrgId();
  const initech = newOrgId();
  let acmeTenant: Tenant;
  let globexTenant: Tenant;
  let whileProvisioning: { status: number; retryAfter: string | null; body: unknown };

  before(async () => {
    // The reconciler starts only once the organizations exist, so the
    // service meets a tenant whose database is not there yet.
    tp = await TenantPlaneServer.start({ adminUrl, worker: false });
    service = await startService(tp);
    await tp.createOrganization(acme, "Acme Corp");
    await tp.createOrganization(globex, "Globex");
    await tp.createOrganization(initech, "Initech");
    const r = await service.call("GET", "/projects", { token: sessionToken(acme) });
    whileProvisioning = { status: r.status, retryAfter: r.headers.get("retry-after"), body: await r.json() };
    tp.startWorker();
    acmeTenant = await tp.waitFor(acme, "active");
    globexTenant = await tp.waitFor(globex, "active");
    await tp.waitFor(initech, "active");
  });

  after(async () => {
    await service?.close();
    await tp?.stop();
  });

  it("passes tenant-plane's 503 with Retry-After through while the tenant is provisioning", () => {
    assert.equal(whileProvisioning.status, 503);
    assert.match(whileProvisioning.retryAfter ?? "", /^[1-9][0-9]*$/);
    assert.equal((whileProvisioning.body as { error: string }).error, "tenant_provisioning");
    assert.equal(typeof (whileProvisioning.body as { message: string }).message, "string");
  });

  it("POST /projects stores a project in the organization's own database, GET /projects lists it", async () => {
    const token = sessionToken(acme);
    const created = await service.call("POST", "/projects", { token, body: { key: "ROCKET", name: "Rocket launch" } });
    assert.equal(created.status, 201);
    const { project } = (await created.json()) as { project: { id: string; key: string; name: string } };
    assert.equal(project.key, "ROCKET");
    assert.equal(project.name, "Rocket launch");

    const listed = await service.call("GET", "/projects", { token });
    assert.equal(listed.status, 200);
    const { projects } = (await listed.json()) as { projects: { id: string; key: string }[] };
    assert.deepEqual(
      projects.map((p) => [p.id, p.key]),
      [[project.id, "ROCKET"]],
    );

    // The row is in Acme's tenant database, read there directly.
    assert.match(acmeTenant.db_name!, /^tp_test_n[0-9a-f]{6}_[0-9a-f]{32}$/);
    const rows = await inTenantDb<{ key: string; name: string }>(acmeTenant, "SELECT key, name FROM projects");
    assert.deepEqual(rows, [{ key: "ROCKET", name: "Rocket launch" }]);
  });

  it("connects to the tenant database as the tenant's own role", async () => {
    const sessions = await withAdmin(
      adminUrl,
      async (c) =>
        (
          await c.query(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
            [acmeTenant.db_name],
          )
        ).rows,
    );
    // The pool keeps its connections open for a while after the last query.
    assert.deepEqual(sessions, [{ usename: acmeTenant.db_role }]);
  });

  it("another organization's tenant does not see the project", async () => {
    const token = sessionToken(globex);
    const listed = await service.call("GET", "/projects", { token });
    assert.equal(listed.status, 200);
    assert.deepEqual(await listed.json(), { projects: [] });
    assert.notEqual(globexTenant.db_name, acmeTenant.db_name);
    assert.deepEqual(await inTenantDb(globexTenant, "SELECT key FROM projects"), []);
    // Keys are unique per tenant database only: Globex may take Acme's.
    const created = await service.call("POST", "/projects", { token, body: { key: "ROCKET", name: "Globex's own" } });
    assert.equal(created.status, 201);
    assert.deepEqual(await inTenantDb(acmeTenant, "SELECT name FROM projects"), [{ name: "Rocket launch" }]);
  });

  it("takes the session token from the __session cookie", async () => {
    const listed = await service.call("GET", "/projects", {
      headers: { cookie: `theme=dark; __session=${sessionToken(acme)}; lang=en` },
    });
    assert.equal(listed.status, 200);
    const { projects } = (await listed.json()) as { projects: { key: string }[] };
    assert.deepEqual(
      projects.map((p) => p.key),
      ["ROCKET"],
    );
  });

  it("refuses keys that do not match ^[A-Z][A-Z0-9]{1,9}$ with 400, storing nothing", async () => {
    const token = sessionToken(acme);
    for (const key of ["rocket", "R", "1ROCKET", "ROCKETSHIPS", "RO-CKET", 42]) {
      const r = await service.call("POST", "/projects", { token, body: { key, name: "Bad key" } });
      assert.equal(r.status, 400, `key ${key}`);
      assert.equal(((await r.json()) as { error: string }).error, "invalid_project");
    }
    assert.deepEqual(await inTenantDb(acmeTenant, "SELECT key FROM projects"), [{ key: "ROCKET" }]);
  });

  it("answers 409 for a key the tenant already has", async () => {
    const r = await service.call("POST", "/projects", {
      token: sessionToken(acme),
      body: { key: "ROCKET", name: "Again" },
    });
    assert.equal(r.status, 409);
    assert.equal(((await r.json()) as { error: string }).error, "project_key_taken");
  });

  it("answers 401 with {error, message} when the request has no session token", async () => {
    const noSession: Record<string, string>[] = [
      {},
      // Another scheme is no session, and the cookie is not consulted then.
      { authorization: "Basic dXNlcjpwdw==", cookie: `__session=${sessionToken(acme)}` },
    ];
    for (const headers of noSession) {
      const r = await service.call("GET", "/projects", { headers });
      assert.equal(r.status, 401);
      const body = (await r.json()) as { error: string; message: string };
      assert.equal(body.error, "token_missing");
      assert.match(body.message, /session token/);
    }
  });

  it("passes tenant-plane's 401 through for a token signed by another key", async () => {
    const token = sessionToken(acme, "rsa-b");
    const r = await service.call("GET", "/projects", { token });
    const direct = await resolveDirectly(tp, token);
    assert.equal(r.status, 401);
    assert.equal(direct.status, 401);
    assert.deepEqual(await r.json(), direct.body);
    assert.equal(direct.body.error, "token_signature");
  });

  it("registers an organization first seen in a token: 503 while it is provisioned, then served", async () => {
    // resolver.register_unknown_orgs (on by default): no webhook for this
    // organization, yet its first request registers it and the worker
    // provisions it.
    // A service of its own, so the shared one's pool count stays its own.
    const own = await startService(tp);
    try {
      const org = newOrgId();
      const token = sessionToken(org);
      const first = await own.call("GET", "/projects", { token });
      assert.equal(first.status, 503);
      assert.equal(((await first.json()) as { error: string }).error, "tenant_provisioning");
      await tp.waitFor(org, "active");
      const served = await own.call("GET", "/projects", { token });
      assert.equal(served.status, 200);
    } finally {
      await own.close();
    }
  });

  it("passes tenant-plane's 403 through for a suspended tenant", async () => {
    const tenant = await tp.tenant(initech);
    assert.equal((await tp.internal("POST", `/tenants/${tenant.id}/suspend`)).status, 200);
    await tp.waitFor(initech, "suspended");
    const token = sessionToken(initech);
    const r = await service.call("GET", "/projects", { token });
    const direct = await resolveDirectly(tp, token);
    assert.equal(r.status, 403);
    assert.deepEqual(await r.json(), direct.body);
    assert.equal(direct.body.error, "tenant_suspended");
  });

  it("answers 502, not tenant-plane's 401, when tenant-plane refuses the service's own token", async () => {
    const misconfigured = await startService(tp, {}, "not-the-service-token");
    try {
      const r = await misconfigured.call("GET", "/projects", { token: sessionToken(acme) });
      assert.equal(r.status, 502);
      assert.equal(((await r.json()) as { error: string }).error, "tenant_plane_unavailable");
    } finally {
      await misconfigured.close();
    }
  });

  it("keeps one pool per tenant, no more tenants' pools than its bound", async () => {
    const bounded = await startService(tp, { maxTenants: 1 });
    try {
      for (const [org, keys] of [
        [acme, ["ROCKET"]],
        [globex, ["ROCKET"]],
        [acme, ["ROCKET"]],
      ] as const) {
        const r = await bounded.call("GET", "/projects", { token: sessionToken(org) });
        assert.equal(r.status, 200);
        assert.deepEqual(
          ((await r.json()) as { projects: { key: string }[] }).projects.map((p) => p.key),
          keys,
        );
        assert.equal(bounded.pools.size, 1);
      }
      // The long-lived service above holds one pool for each tenant it served.
      assert.equal(service.pools.size, 2);
    } finally {
      await bounded.close();
    }
  });
});
