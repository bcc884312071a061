// The dashboard's fleet panel in Debian's headless Chromium: opens the page
// of one instance of a two-instance fleet, enters the admin token, and waits
// until the panel lists both instances, connected, last seen at a local date
// and time, with the route's weights and the canary controller. Run by tests/dashboard.rs.
//
// env: SLUICEGATE_ADMIN_URL    the admin listener of one instance
//      SLUICEGATE_ADMIN_TOKEN  its admin token
//      SLUICEGATE_INSTANCES    the instance names expected, comma-separated
//      SCREENSHOT              where to save a PNG of the page
// Exits 0 on success, 1 with a message on stderr otherwise.

import { chromium } from 'playwright-core';

import { CHROMIUM, env, run, watchProblems } from './lib.mjs';

async function main() {
  const url = env('SLUICEGATE_ADMIN_URL').replace(/\/+$/, '') + '/';
  const token = env('SLUICEGATE_ADMIN_TOKEN');
  const expected = env('SLUICEGATE_INSTANCES').split(',');
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems = watchProblems(page);
    page.setDefaultTimeout(20_000);
    await page.goto(url);
    await page.locator('#token-input').fill(token);
    await page.locator('#token-save').click();
    await page.locator('#fleet').waitFor({ state: 'visible' });
    for (const name of expected) {
      const row = page.locator(`#fleet-rows tr[data-instance="${name}"]`).first();
      await row.waitFor({ state: 'visible' });
      const text = await row.textContent();
      if (!/connected/.test(text) || !/web/.test(text) || !/blue 90 · green 10/.test(text)) {
        throw new Error(`the fleet row of ${name} reads "${text}"`);
      }
      const seen = await row.locator('td.time').textContent();
      if (/\d{4}-\d\d-\d\dT/.test(seen) || !seen.includes(String(new Date().getFullYear()))) {
        throw new Error(`the fleet row of ${name} shows last seen "${seen}", not a local date and time`);
      }
    }
    await page.waitForFunction(
      () => [...document.querySelectorAll('#fleet-rows td')].some((td) => td.textContent === 'controller'),
    );
    const link = await page.locator('#fleet-link').textContent();
    if (!/following etcd/.test(link)) throw new Error(`the panel says "${link}"`);
    await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });
    if (problems.length) throw new Error(problems.join('\n'));
  } finally {
    await browser.close();
  }
}

run('fleet.mjs', main);
