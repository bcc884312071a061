// Drives the sluicegate dashboard in Debian's headless Chromium, as a person
// would: opens the page, enters the admin token, moves green to 50 % with the
// slider, applies, and waits until the page shows 50. Run by tests/dashboard.rs.
//
// env: SLUICEGATE_ADMIN_URL  the admin listener, e.g. http://127.0.0.1:9901
//      SLUICEGATE_ADMIN_TOKEN the admin token
//      SCREENSHOT             where to save a PNG of the page (a narrow-screen
//                             one goes next to it, `-narrow` added to the name)
// Exits 0 on success, 1 with a message on stderr otherwise.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';

import { CHROMIUM, Fatal, env, log, run, waitFor, watchProblems } from './lib.mjs';

const ROUTE = 'web';
const STABLE = 'blue';
const NEW = 'green';
const TOKEN_KEY = 'sluicegate.admin-token';

function narrowPath(path) {
  return path.endsWith('.png') ? path.slice(0, -4) + '-narrow.png' : path + '-narrow.png';
}

async function main() {
  const url = env('SLUICEGATE_ADMIN_URL').replace(/\/+$/, '') + '/';
  const token = env('SLUICEGATE_ADMIN_TOKEN');
  const screenshot = env('SCREENSHOT');
  mkdirSync(dirname(screenshot), { recursive: true });

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems = watchProblems(page);

    log(`opening ${url}`);
    const response = await page.goto(url);
    if (!response || response.status() !== 200) {
      throw new Error(`GET ${url} answered ${response ? response.status() : 'nothing'}`);
    }
    const csp = response.headers()['content-security-policy'] || '';
    if (!csp.includes("script-src 'self'") || !csp.includes("default-src 'none'")) {
      throw new Error(`the page came without the strict CSP, got: ${csp || '(none)'}`);
    }

    const card = page.locator(`[data-route="${ROUTE}"]`);
    const weightText = (backend) =>
      card.locator(`[data-backend="${backend}"] .weight-value.desired`).textContent();

    log('entering the admin token');
    await page.locator('#token-input').fill(token);
    await page.locator('#token-save').click();
    await waitFor('the page to say the token is set', async () =>
      (await page.locator('#token-state').isVisible()) &&
      (await page.locator('#token-state').textContent()) === 'token set',
    );
    if ((await page.content()).includes(token)) throw new Error('the token shows up in the page');
    const stored = await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY);
    if (stored !== token) throw new Error('the token was not kept in sessionStorage');

    await waitFor(`route ${ROUTE} on the page`, () => card.isVisible());
    await waitFor(`${NEW}'s weight on the page`, async () => /%/.test(await weightText(NEW)));
    log(`before: ${STABLE} ${await weightText(STABLE)}, ${NEW} ${await weightText(NEW)}`);

    log(`moving the slider to ${NEW} 50 %`);
    await card.locator('input[type="range"]').fill('50');
    const input = (backend) => card.locator(`input[type="number"][data-backend="${backend}"]`);
    for (const backend of [STABLE, NEW]) {
      const value = await input(backend).inputValue();
      if (Number(value) !== 50) {
        throw new Error(`after the slider moved, the ${backend} input shows ${value}, not 50`);
      }
    }
    await card.locator('button.apply').click();

    await waitFor(`the page to show ${NEW} at 50 %`, async () => {
      const note = card.locator('.note');
      if ((await note.isVisible()) && (await note.getAttribute('class')).includes('error')) {
        throw new Fatal(`the dashboard shows an error: ${await note.textContent()}`);
      }
      return (await weightText(NEW)) === '50 %' && (await weightText(STABLE)) === '50 %';
    });
    const note = (await card.locator('.note').textContent()) || '';
    if (!/set weights/.test(note)) throw new Error(`no confirmation after Apply, note: "${note}"`);
    log(`after: ${STABLE} ${await weightText(STABLE)}, ${NEW} ${await weightText(NEW)} (${note})`);

    // A poll or two more, so the screenshot shows the settled page.
    await page.waitForTimeout(2500);
    if ((await weightText(NEW)) !== '50 %') throw new Error('the page went back from 50 %');
    await page.screenshot({ path: screenshot, fullPage: true });
    log(`screenshot: ${screenshot}`);

    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(300);
    const overflow = await page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    await page.screenshot({ path: narrowPath(screenshot), fullPage: true });
    log(`narrow screenshot: ${narrowPath(screenshot)}`);
    if (overflow > 1) throw new Error(`on a 390 px wide screen the page is ${overflow} px too wide`);

    if (problems.length) throw new Error(problems.join('\n'));
  } finally {
    await browser.close();
  }
}

run('dashboard.mjs', main);
