// What the browser scripts share: where Chromium is, their environment,
// polling with a deadline, watching the page for errors and CSP refusals,
// and the exit protocol tests/dashboard.rs reads (0 ok, 1 with a message).

export const CHROMIUM = '/usr/bin/chromium';
const OVERALL_LIMIT_MS = 90_000;
const STEP_LIMIT_MS = 15_000;

let name = 'browser';

export function env(variable) {
  const value = process.env[variable];
  if (!value) throw new Error(`environment variable ${variable} is not set`);
  return value;
}

export function log(message) {
  process.stdout.write(`${name}: ${message}\n`);
}

/** An error that ends a wait at once instead of being retried. */
export class Fatal extends Error {}

/** Polls `check` (async, returns a truthy value when done) until `limit`. */
export async function waitFor(what, check, limit = STEP_LIMIT_MS) {
  const deadline = Date.now() + limit;
  let last;
  for (;;) {
    try {
      const result = await check();
      if (result) return result;
    } catch (e) {
      if (e instanceof Fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Page errors and refused inline code or style, collected as they happen. */
export function watchProblems(page) {
  const problems = [];
  page.setDefaultTimeout(STEP_LIMIT_MS);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    if (/Content Security Policy|Refused to/i.test(text)) problems.push(`CSP: ${text}`);
  });
  return problems;
}

/** Runs `main` within the overall limit; exits 0, or 1 with the error on stderr. */
export function run(script, main) {
  name = script;
  const limit = setTimeout(() => {
    process.stderr.write(`${script}: FAILED: gave up after ${OVERALL_LIMIT_MS / 1000} s\n`);
    process.exit(1);
  }, OVERALL_LIMIT_MS);
  main().then(
    () => {
      clearTimeout(limit);
      log('ok');
      process.exit(0);
    },
    (e) => {
      process.stderr.write(`${script}: FAILED: ${e && e.stack ? e.stack : e}\n`);
      process.exit(1);
    },
  );
}
