// What the tests against a real cluster share: the cluster tests/integration/test_js_client.py
// started (its URL, HS256 secret and run directory come in the environment), tokens
// signed with that secret, and clients closed after each test.
import { createHmac, randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import { after } from "node:test";

import { MeshClient } from "../meshstream.js";

export const URL_ = process.env.MESHSTREAM_TEST_URL;
const SECRET = process.env.MESHSTREAM_TEST_JWT_SECRET;
/** Why a test needs the cluster and skips without it (run through pytest). */
export const NEEDS_CLUSTER = URL_ ? false : "no cluster: run tests/integration/test_js_client.py";

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");

/** An HS256 JWT for `sub`, expiring `ttl` seconds from now (null: no exp). */
export function token(sub, ttl = 600) {
  const claims = { sub, iat: Math.floor(Date.now() / 1000) };
  if (ttl !== null) claims.exp = Math.floor(Date.now() / 1000) + ttl;
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${head}.${createHmac("sha256", SECRET).update(head).digest("base64url")}`;
}

export const uid = (prefix) => `${prefix}-${randomBytes(4).toString("hex")}`;

const made = [];
after(() => made.forEach((c) => c.close()));

/** A connected client (closed after the file's tests). */
export async function client(user = uid("user"), options = {}) {
  const c = new MeshClient(URL_, { token: token(user), backoffMin: 100, backoffMax: 1000, ...options });
  made.push(c);
  await c.connect();
  return c;
}

/** The next frame `c` receives that passes `pred`. */
export function next(c, pred) {
  return c.once("message", pred);
}

/** `meshstream restart-gateways` on the cluster: every gateway restarts, one at a time. */
export function restartGateways() {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.env.MESHSTREAM_TEST_PYTHON,
      ["-m", "services.cli", "restart-gateways", "--run-dir", process.env.MESHSTREAM_TEST_RUN_DIR,
        "--timeout", "60"], { cwd: process.env.MESHSTREAM_TEST_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    proc.stdout.on("data", (d) => { out += d; });
    proc.stderr.on("data", (d) => { out += d; });
    proc.on("error", reject);
    proc.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`restart-gateways: ${code}\n${out}`))));
  });
}
