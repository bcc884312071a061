// A canary waiting at an approval step (SPEC §7), in Debian's headless
// Chromium: the panel says "awaiting approval" and offers Approve; a click
// lets the canary go on, and the gate called before the next step shows
// its result. Run by tests/dashboard.rs.
//
// env: SLUICEGATE_ADMIN_URL   the admin listener
//      SLUICEGATE_ADMIN_TOKEN the admin token
//      SLUICEGATE_ROUTE       the route whose canary waits for an approval
// Exits 0 on success, 1 with a message on stderr otherwise.

import { chromium } from 'playwright-core';

import { CHROMIUM, Fatal, env, log, run, waitFor, watchProblems } from './lib.mjs';

const CANARY_LIMIT_MS = 45_000;

async function main() {
  const base = env('SLUICEGATE_ADMIN_URL').replace(/\/+$/, '');
  const token = env('SLUICEGATE_ADMIN_TOKEN');
  const route = env('SLUICEGATE_ROUTE');
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems = watchProblems(page);
    await page.goto(`${base}/#route=${encodeURIComponent(route)}`);
    await page.locator('#token-input').fill(token);
    await page.locator('#token-save').click();

    const card = page.locator(`[data-route="${route}"]`);
    const pill = card.locator('.canary-pill');
    const approve = card.locator('button.canary-approve');
    log('waiting for the canary to wait for an approval');
    await waitFor(
      'the panel to say "awaiting approval"',
      async () => (await pill.textContent()) === 'awaiting approval',
      CANARY_LIMIT_MS,
    );
    if (!(await approve.isVisible())) throw new Error('no Approve button while awaiting approval');

    log('approving');
    await approve.click();
    await waitFor(
      'the canary to go on and succeed',
      async () => {
        const note = card.locator('.note');
        if ((await note.isVisible()) && /error/.test((await note.getAttribute('class')) || '')) {
          throw new Fatal(`the dashboard shows an error: ${await note.textContent()}`);
        }
        return (await pill.textContent()) === 'succeeded';
      },
      CANARY_LIMIT_MS,
    );
    if (!(await approve.isHidden())) throw new Error('Approve still shown after the approval');

    log('the gate result is shown');
    const gate = card.locator('.canary-gates .gate').first();
    await waitFor('a gate result in the panel', () => gate.isVisible());
    const text = await gate.textContent();
    if (!/gate passed/.test(text) || !/step 2/.test(text) || /\d{4}-\d\d-\d\dT/.test(text)) {
      throw new Error(`the gate result reads "${text}"`);
    }
    log(`gate: ${text}`);
    if (problems.length) throw new Error(problems.join('\n'));
  } finally {
    await browser.close();
  }
}

run('approve.mjs', main);
