// TLS as the resolve answer asks for it: the mapping of libpq's sslmode and
// sslrootcert to pg's `ssl` option, real connections with it to the dev
// clusters (one TLS-only with a private CA, one without TLS), and the
// example service end to end on tenant databases of the TLS-only server.

import assert from "node:assert/strict";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { PeerCertificate } from "node:tls";
import pg from "pg";

import { TenantPlane, type Connection } from "../src/tenant-plane.ts";
import { clientConfig, sslOption } from "../src/tls.ts";
import {
  newOrgId,
  REPO_ROOT,
  requireEnv,
  sessionToken,
  startService,
  TenantPlaneServer,
  withAdmin,
  type Service,
} from "./harness.ts";

const tlsUrl = process.env.TENANT_PLANE_TEST_TLS_DATABASE_URL ?? "";
const needsTls = tlsUrl
  ? false
  : "TENANT_PLANE_TEST_TLS_DATABASE_URL is not set (scripts/test-node sets it from scripts/dev-db --tls)";

/** A connection as a resolve answer gives one, to the TLS server as its admin. */
function tlsConnection(overrides: Partial<Connection>): Connection {
  const u = new URL(tlsUrl);
  return {
    host: u.hostname,
    port: Number(u.port),
    database: "postgres",
    role: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    sslmode: "verify-full",
    sslrootcert: u.searchParams.get("sslrootcert") ?? "",
    ...overrides,
  };
}

/** Connects as `connection` says and asks the server whether the session is encrypted. */
async function encrypted(connection: Connection): Promise<boolean> {
  const client = new pg.Client(await clientConfig(connection));
  await client.connect();
  try {
    const { rows } = await client.query<{ ssl: boolean }>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    return rows[0]!.ssl;
  } finally {
    await client.end();
  }
}

describe("sslOption maps libpq's sslmode and sslrootcert to pg's ssl option", () => {
  // Any file will do: its bytes are handed to TLS as the CAs.
  const caFile = path.join(REPO_ROOT, "crates/testkit/fixtures/rsa-a.pub.pem");
  const ca = readFileSync(caFile);
  const someCert = {} as PeerCertificate;

  it("disable is plaintext", () => {
    assert.equal(sslOption("disable"), false);
    assert.equal(sslOption("disable", caFile), false);
  });

  it("prefer and require without a root certificate encrypt and verify nothing", () => {
    assert.deepEqual(sslOption("prefer"), { rejectUnauthorized: false });
    assert.deepEqual(sslOption("prefer", caFile), { rejectUnauthorized: false });
    assert.deepEqual(sslOption("require"), { rejectUnauthorized: false });
  });

  it("require with a root certificate verifies the chain but not the host name, as libpq does", () => {
    const option = sslOption("require", caFile);
    assert.ok(option);
    assert.equal(option.rejectUnauthorized, true);
    assert.deepEqual(option.ca, ca);
    assert.equal(option.checkServerIdentity?.("elsewhere.example", someCert), undefined);
  });

  it("verify-ca verifies the chain against sslrootcert and skips the host name check", () => {
    const option = sslOption("verify-ca", caFile);
    assert.ok(option);
    assert.equal(option.rejectUnauthorized, true);
    assert.deepEqual(option.ca, ca);
    assert.equal(option.checkServerIdentity?.("elsewhere.example", someCert), undefined);
  });

  it("verify-full verifies the chain and leaves Node's host name check in place", () => {
    assert.deepEqual(sslOption("verify-full", caFile), { rejectUnauthorized: true, ca });
  });

  it("sslrootcert=system trusts Node's own CAs", () => {
    assert.deepEqual(sslOption("verify-full", "system"), { rejectUnauthorized: true });
  });

  it("refuses a verifying mode without a root certificate, an unknown mode, and a missing CA file", () => {
    assert.throws(() => sslOption("verify-full"), /needs an sslrootcert/);
    assert.throws(() => sslOption("verify-ca", null), /needs an sslrootcert/);
    assert.throws(() => sslOption("allow"), /unknown sslmode/);
    assert.throws(() => sslOption("verify-full", "/nonexistent/ca.crt"), { code: "ENOENT" });
  });
});

describe("connections to PostgreSQL with TLS only", { skip: needsTls }, () => {
  it("require, verify-ca and verify-full connect encrypted", async () => {
    for (const sslmode of ["require", "verify-ca", "verify-full"]) {
      assert.equal(await encrypted(tlsConnection({ sslmode })), true, sslmode);
    }
    assert.equal(await encrypted(tlsConnection({ sslmode: "require", sslrootcert: undefined })), true);
  });

  it("verify-full also accepts the host name localhost, which the certificate names", async () => {
    assert.equal(await encrypted(tlsConnection({ host: "localhost" })), true);
  });

  it("prefer connects encrypted to a server that has TLS", async () => {
    assert.equal(await encrypted(tlsConnection({ sslmode: "prefer", sslrootcert: undefined })), true);
  });

  it("disable connects in plaintext, which this server refuses", async () => {
    await assert.rejects(encrypted(tlsConnection({ sslmode: "disable" })), (e: pg.DatabaseError) => {
      assert.equal(e.code, "28000");
      assert.match(e.message, /no encryption/);
      return true;
    });
  });

  it("sslrootcert=system does not trust the server's private CA", async () => {
    await assert.rejects(encrypted(tlsConnection({ sslrootcert: "system" })), (e: NodeJS.ErrnoException) => {
      // OpenSSL's words for "no trusted CA signed this chain".
      const untrusted = [
        "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
        "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
        "SELF_SIGNED_CERT_IN_CHAIN",
      ];
      assert.ok(untrusted.includes(e.code ?? ""), e.code);
      return true;
    });
  });

  it("verify-ca accepts an address the certificate does not name; verify-full refuses it", async () => {
    // The certificate names localhost and 127.0.0.1; a forwarder on
    // 127.0.0.2 reaches the same server under an address it does not name.
    const target = tlsConnection({});
    const forwarder = net.createServer((socket) => {
      const upstream = net.connect(target.port, target.host);
      socket.pipe(upstream).pipe(socket);
      socket.on("error", () => upstream.destroy());
      upstream.on("error", () => socket.destroy());
    });
    forwarder.listen(0, "127.0.0.2");
    await once(forwarder, "listening");
    const { port } = forwarder.address() as net.AddressInfo;
    try {
      assert.equal(await encrypted(tlsConnection({ host: "127.0.0.2", port, sslmode: "verify-ca" })), true);
      await assert.rejects(encrypted(tlsConnection({ host: "127.0.0.2", port, sslmode: "verify-full" })), {
        code: "ERR_TLS_CERT_ALTNAME_INVALID",
      });
    } finally {
      forwarder.close();
    }
  });
});

describe("connections to PostgreSQL without TLS", () => {
  it("prefer falls back to plaintext, as libpq does", async () => {
    const u = new URL(requireEnv("TENANT_PLANE_TEST_DATABASE_URL", "run scripts/test-node"));
    const plain: Connection = {
      host: u.hostname,
      port: Number(u.port),
      database: "postgres",
      role: decodeURIComponent(u.username),
      password: decodeURIComponent(u.password),
      sslmode: "prefer",
    };
    assert.equal(await encrypted(plain), false);
    await assert.rejects(encrypted({ ...plain, sslmode: "require" }), /does not support SSL/);
  });
});

describe("the example service with tenant databases on a TLS-only server", { skip: needsTls }, () => {
  let tp: TenantPlaneServer;
  let service: Service;
  const org = newOrgId();

  before(async () => {
    tp = await TenantPlaneServer.start({ adminUrl: tlsUrl });
    await tp.createOrganization(org, "Umbrella");
    await tp.waitFor(org, "active");
    service = await startService(tp);
  });

  after(async () => {
    await service?.close();
    await tp?.stop();
  });

  it("gets verify-full with the server's CA from resolve, and reads and writes the tenant database encrypted", async () => {
    const token = sessionToken(org);
    const resolved = await new TenantPlane({ baseUrl: tp.url, serviceToken: tp.serviceToken }).resolve(token);
    assert.ok(resolved.ok);
    const { tenant, connection } = resolved.answer;
    assert.equal(connection.sslmode, "verify-full");
    assert.equal(connection.sslrootcert, new URL(tlsUrl).searchParams.get("sslrootcert"));

    const created = await service.call("POST", "/projects", { token, body: { key: "UMB", name: "Umbrella" } });
    assert.equal(created.status, 201);
    const listed = await service.call("GET", "/projects", { token });
    const { projects } = (await listed.json()) as { projects: { key: string }[] };
    assert.deepEqual(
      projects.map((p) => p.key),
      ["UMB"],
    );

    const sessions = await withAdmin(
      tlsUrl,
      async (c) =>
        (
          await c.query(
            `SELECT DISTINCT a.usename, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = $1 AND a.backend_type = 'client backend'`,
            [tenant.db_name],
          )
        ).rows,
    );
    assert.deepEqual(sessions, [{ usename: tenant.db_role, ssl: true }]);
  });
});
