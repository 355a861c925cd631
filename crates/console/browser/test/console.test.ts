// The operator console in a real headless Chromium against a real
// `tenant-plane serve` and PostgreSQL: logging in and out, live updates,
// an action with its confirmation and CSRF token, a dead letter replayed,
// hostile names shown as text, the pages with JavaScript off, and a
// screenshot of every page at 1280 px and at phone width.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";

import { ConsoleServer, launchBrowser, newContext, newOrgId, PHONE, screenshot } from "./harness.ts";

const adminUrl = process.env.TENANT_PLANE_TEST_DATABASE_URL;
if (!adminUrl) {
  throw new Error("TENANT_PLANE_TEST_DATABASE_URL is not set; run scripts/test-console");
}

let tp: ConsoleServer;
let browser: Browser;
const problems: string[] = [];

before(async () => {
  [tp, browser] = await Promise.all([ConsoleServer.start(adminUrl), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await tp?.stop();
});

async function logIn(context: BrowserContext): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`${tp.url}/console/login`);
  await page.getByLabel("Operator token").fill(tp.consoleToken);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(`${tp.url}/console/tenants`);
  return page;
}

/** Fails on secrets in the page or on problems its context reported. */
async function assertClean(page: Page): Promise<void> {
  const html = await page.content();
  for (const secret of tp.secrets) {
    assert.ok(!html.includes(secret), `a secret is on ${page.url()}`);
  }
  assert.deepEqual(problems, [], `problems on ${page.url()}`);
}

/** Waits for the tenant status shown in `selector` to be `status`, without navigating. */
async function waitForStatus(page: Page, selector: string, status: string): Promise<void> {
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel!)?.textContent?.trim() === want,
    [selector, status],
    { timeout: 60_000 },
  );
}

describe("operator console", () => {
  test("logs in with the operator token, refuses a wrong one, and logs out", async () => {
    const context = await newContext(browser, problems);
    const page = await context.newPage();
    const redirected = await page.goto(`${tp.url}/console/tenants`);
    assert.equal(new URL(page.url()).pathname, "/console/login", "pages need a session");
    assert.equal(redirected?.status(), 200);
    await screenshot(page, "login");

    await page.getByLabel("Operator token").fill("not-the-operator-token");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("alert").filter({ hasText: "not accepted" }).waitFor();
    assert.equal(new URL(page.url()).pathname, "/console/login");
    assert.equal((await context.cookies()).length, 0, "no session for a wrong token");

    await page.getByLabel("Operator token").fill(tp.consoleToken);
    await page.getByLabel("Operator token").press("Enter");
    await page.waitForURL(`${tp.url}/console/tenants`);
    const [cookie] = await context.cookies();
    assert.equal(cookie?.httpOnly, true);
    assert.equal(cookie?.sameSite, "Strict");
    assert.ok((cookie?.expires ?? -1) > Date.now() / 1000, "the session expires");

    // The keyboard reaches the skip link first, then the navigation.
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Skip to content");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Tenants");

    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(`${tp.url}/console/login`);
    await page.goto(`${tp.url}/console/hosts`);
    assert.equal(new URL(page.url()).pathname, "/console/login", "logged out");
    await assertClean(page);
    await context.close();
  });

  test("a tenant created by a signed webhook appears and turns active without a reload", async () => {
    const context = await newContext(browser, problems);
    const page = await logIn(context);
    await page.locator("#live-state", { hasText: "Live updates on" }).waitFor();
    // A reload would lose this.
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
    const org = newOrgId();
    await tp.createOrganization(org, "Live Arrival Ltd");
    const row = page.locator("#tenants tbody tr", { hasText: org });
    await row.waitFor({ timeout: 30_000 });
    assert.equal(await row.locator("td.name").textContent(), "Live Arrival Ltd");
    const id = await row.getAttribute("data-tenant-id");
    await waitForStatus(page, `tr[data-tenant-id="${id}"] [data-field="status"]`, "active");
    assert.equal(await page.evaluate(() => (window as unknown as { marker?: number }).marker), 42, "no reload");
    assert.ok(Number(await page.locator('[data-count="active"]').textContent()) >= 1, "the counts follow");
    await screenshot(page, "tenants");
    await assertClean(page);
    await context.close();
  });

  test("suspends a tenant through its page, after confirmation; a forged POST is refused", async () => {
    const org = newOrgId();
    await tp.createOrganization(org, "Suspend Through The Page");
    const context = await newContext(browser, problems);
    const page = await logIn(context);
    await page.getByLabel("Search").fill(org);
    await page.getByRole("button", { name: "Filter" }).click();
    await page.getByRole("link", { name: org }).click();
    await waitForStatus(page, "#tenant-status", "active");
    const tenantUrl = page.url();
    await page.reload();
    await page.locator(".timeline li").first().waitFor();
    await screenshot(page, "tenant");

    // A POST without the CSRF token, with the session cookie.
    const forged = await page.request.post(`${tenantUrl}/suspend`, { form: { nothing: "here" }, maxRedirects: 0 });
    assert.equal(forged.status(), 403);
    assert.equal(await page.locator("#tenant-desired").textContent(), "active");

    await page.getByRole("link", { name: "suspend…" }).click();
    await page.getByRole("heading", { name: "Suspend this tenant?" }).waitFor();
    await screenshot(page, "confirm");
    await page.getByRole("button", { name: "Suspend" }).click();
    await page.getByRole("status").filter({ hasText: "Suspend requested" }).waitFor();
    assert.equal(await page.locator("#tenant-desired").textContent(), "suspended");
    await waitForStatus(page, "#tenant-status", "suspended");
    const actor = await tp.control((c) =>
      c.query<{ actor: string }>(
        "SELECT e.actor FROM tenant_events e JOIN tenant_registry t ON t.id = e.tenant_id WHERE t.clerk_org_id = $1 AND e.kind = 'suspend'",
        [org],
      ),
    );
    assert.deepEqual(
      actor.rows.map((r) => r.actor),
      ["console"],
    );
    await assertClean(page);
    await context.close();
  });

  test("shows a dead letter's payload and replays it", async () => {
    const org = newOrgId();
    const svixId = `msg_dead_${org.slice(4, 16)}`;
    const { organizationCreated } = await import("./harness.ts");
    await tp.control((c) =>
      c.query(
        `INSERT INTO webhook_events (svix_id, event_type, object_id, payload, outcome, error)
         VALUES ($1, 'organization.created', $2, $3, 'dead', 'dead-lettered by an older parser')`,
        [svixId, org, JSON.stringify(organizationCreated(org, "Returned From The Dead"))],
      ),
    );
    const context = await newContext(browser, problems);
    const page = await logIn(context);
    await page.getByRole("link", { name: "Webhooks" }).click();
    await page.getByRole("link", { name: "dead", exact: true }).click();
    await page.waitForURL(/outcome=dead/);
    await screenshot(page, "webhooks");
    await page.getByRole("link", { name: svixId }).click();
    await page.locator("pre.payload", { hasText: "Returned From The Dead" }).waitFor();
    assert.equal(await page.locator("#outcome").textContent(), "dead");
    await screenshot(page, "webhook");
    await page.getByRole("button", { name: "Replay this delivery" }).click();
    await page.locator("#replayed", { hasText: "Replayed: applied." }).waitFor();
    assert.equal(await page.locator("#outcome").textContent(), "applied");
    await page.getByRole("link", { name: "Tenants" }).click();
    await page.locator("#tenants tbody tr", { hasText: org }).waitFor();
    await assertClean(page);
    await context.close();
  });

  test("shows a hostile organization name as text and runs no script", async () => {
    const hostile = "<img src=x onerror=alert(1)>";
    const context = await newContext(browser, problems);
    const page = await logIn(context);
    await page.locator("#live-state", { hasText: "Live updates on" }).waitFor();
    const org = newOrgId();
    // Arriving live (the script's rows) and then rendered by the server.
    await tp.createOrganization(org, hostile);
    const row = page.locator("#tenants tbody tr", { hasText: org });
    await row.waitFor({ timeout: 30_000 });
    assert.equal(await row.locator("td.name").textContent(), hostile);
    assert.equal(await page.locator("#tenants img").count(), 0);
    await page.reload();
    assert.equal(await row.locator("td.name").textContent(), hostile);
    assert.equal(await page.locator("main img").count(), 0);
    await row.getByRole("link").click();
    assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), hostile);
    assert.equal(await page.locator("main img").count(), 0);
    // 200 bytes of right-to-left text with an override: isolated, wrapped,
    // and the page still fits a phone.
    const long = ("\u202e" + "שלום עולם ").repeat(20).slice(0, 100);
    assert.ok(Buffer.byteLength(long) >= 190 && Buffer.byteLength(long) <= 200);
    const longOrg = newOrgId();
    await tp.createOrganization(longOrg, long);
    await page.goto(`${tp.url}/console/tenants?q=${longOrg}`);
    await page.getByRole("link", { name: longOrg }).click();
    assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), long);
    assert.equal(await page.locator("h1 bdi").count(), 1, "the name is isolated from its surroundings");
    await page.setViewportSize(PHONE);
    const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    assert.equal(wide, false, "a long name wraps");
    await screenshot(page, "tenant-long-rtl-name");
    // An injected inline script would be refused by the CSP as well.
    const csp = (await page.request.get(page.url())).headers()["content-security-policy"] ?? "";
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    await assertClean(page);
    await context.close();
  });

  test("hosts, doctor and provisioning render, and host drain works", async () => {
    const context = await newContext(browser, problems);
    const page = await logIn(context);
    await page.getByRole("link", { name: "Hosts" }).click();
    const host = page.locator('tr[data-host="default"]');
    await host.waitFor();
    assert.equal(await host.locator(".badge").textContent(), "accepting");
    assert.equal(await host.getByRole("img").count(), 1, "a capacity bar");
    await screenshot(page, "hosts");
    await host.getByRole("button", { name: "drain default" }).click();
    assert.equal(await page.locator('tr[data-host="default"] .badge').textContent(), "draining");
    await page.getByRole("button", { name: "undrain default" }).click();
    assert.equal(await page.locator('tr[data-host="default"] .badge').textContent(), "accepting");

    await page.getByRole("link", { name: "Doctor" }).click();
    await page.getByRole("button", { name: "Run the doctor" }).click();
    await page.getByRole("heading", { name: /^Findings at/ }).waitFor();
    await screenshot(page, "doctor");

    await page.getByRole("link", { name: "Provisioning" }).click();
    await page.locator("svg.chart").first().waitFor();
    assert.equal(await page.locator("svg.chart").count(), 2);
    assert.ok((await page.locator("svg.chart circle").count()) >= 2, "p50 and p99 of the tenants made so far");
    await screenshot(page, "provisioning");
    await assertClean(page);
    await context.close();
  });

  test("works with JavaScript off, and fits a phone-sized screen", async () => {
    const context = await newContext(browser, problems, { javaScriptEnabled: false, viewport: PHONE });
    const page = await logIn(context);
    await page.locator("#tenants").waitFor();
    assert.equal(await page.locator("#live-state").isHidden(), true, "no live updates without the script");
    const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    assert.equal(wide, false, "the page does not scroll sideways (tables scroll in their own box)");
    await page.getByRole("link", { name: "Webhooks" }).click();
    await page.locator("#deliveries").waitFor();
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(`${tp.url}/console/login`);
    await assertClean(page);
    await context.close();
  });
});
