// Where a Clerk session token comes from: the bearer token of
// `Authorization` (API calls, cross-origin fetches), else Clerk's `__session`
// cookie (same-origin requests from the browser). The same rule as
// tenant-plane's own extractors (crates/resolver/src/session.rs).

import type { IncomingHttpHeaders } from "node:http";

export const SESSION_COOKIE = "__session";

export function sessionToken(headers: IncomingHttpHeaders): string | undefined {
  const authorization = headers.authorization;
  if (authorization !== undefined) {
    // Another scheme (Basic ...) is not a session; the cookie is not
    // consulted then, so one request never carries two identities.
    const [scheme, ...rest] = authorization.split(" ");
    const token = rest.join(" ").trim();
    return scheme?.toLowerCase() === "bearer" && token !== "" ? token : undefined;
  }
  for (const pair of (headers.cookie ?? "").split(";")) {
    const eq = pair.indexOf("=");
    if (eq > 0 && pair.slice(0, eq).trim() === SESSION_COOKIE) {
      return pair.slice(eq + 1).trim() || undefined;
    }
  }
  return undefined;
}
