// Runs the example service:
//
//   TENANT_PLANE_URL=http://127.0.0.1:8080 TENANT_PLANE_SERVICE_TOKEN=... npm start
//
// Settings (environment): TENANT_PLANE_URL (default http://127.0.0.1:8080),
// TENANT_PLANE_SERVICE_TOKEN (required: one of tenant-plane's
// internal.tokens), HOST (default 127.0.0.1), PORT (default 3000),
// MAX_TENANT_POOLS (default 100), POOL_PER_TENANT (default 5).

import { createApp } from "./app.ts";
import { TenantPools } from "./pools.ts";
import { TenantPlane } from "./tenant-plane.ts";

function log(event: string, fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), event, ...fields }));
}

function intFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  const value = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer`);
  }
  return value;
}

const serviceToken = process.env.TENANT_PLANE_SERVICE_TOKEN;
if (!serviceToken) {
  console.error("TENANT_PLANE_SERVICE_TOKEN is not set (one of tenant-plane's internal.tokens)");
  process.exit(1);
}
const tenantPlane = new TenantPlane({
  baseUrl: process.env.TENANT_PLANE_URL ?? "http://127.0.0.1:8080",
  serviceToken,
});
const pools = new TenantPools({
  maxTenants: intFromEnv("MAX_TENANT_POOLS", 100),
  perTenant: intFromEnv("POOL_PER_TENANT", 5),
  log,
});
const server = createApp({ tenantPlane, pools, log });
const host = process.env.HOST ?? "127.0.0.1";
const port = intFromEnv("PORT", 3000);
server.listen(port, host, () => log("listening", { address: `http://${host}:${port}` }));

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log("stopping", { signal });
    server.close();
    server.closeIdleConnections();
    void pools.close();
  });
}
