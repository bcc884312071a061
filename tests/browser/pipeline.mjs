// The dashboard parts a deploy pipeline leans on, in Debian's headless
// Chromium: the `#route=NAME` link that `ctl canary start --wait` prints
// highlights and scrolls to that route's canary panel; a wrong token is
// shown as rejected at once and not kept; times are local with a date
// (history, step started); the graphs have time labels; the history's
// `canary` source pill sits and looks like the others. Run by tests/dashboard.rs.
//
// env: SLUICEGATE_ADMIN_URL   the admin listener, e.g. http://127.0.0.1:9901
//      SLUICEGATE_ADMIN_TOKEN the admin token
//      SLUICEGATE_ROUTE       the route with a running canary (not the first one)
//      SCREENSHOT             where to save a PNG of the page
// Exits 0 on success, 1 with a message on stderr otherwise.

import { chromium } from 'playwright-core';

import { CHROMIUM, env, log, run, waitFor, watchProblems } from './lib.mjs';

const TOKEN_KEY = 'sluicegate.admin-token';

async function main() {
  const base = env('SLUICEGATE_ADMIN_URL').replace(/\/+$/, '');
  const token = env('SLUICEGATE_ADMIN_TOKEN');
  const route = env('SLUICEGATE_ROUTE');
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    // Short enough that the second route's canary panel is below the fold.
    const page = await browser.newPage({ viewport: { width: 1280, height: 600 } });
    const problems = watchProblems(page);
    const url = `${base}/#route=${encodeURIComponent(route)}`;
    log(`opening ${url}`);
    await page.goto(url);

    const card = page.locator(`[data-route="${route}"]`);
    await waitFor(`route ${route} highlighted`, async () =>
      /\bfocused\b/.test((await card.getAttribute('class')) || ''),
    );
    const others = await page.locator('article.route.focused').count();
    if (others !== 1) throw new Error(`${others} routes are highlighted, not 1`);
    const panel = await waitFor('the canary panel scrolled into view', () =>
      card.locator('.canary').evaluate((node) => {
        const box = node.getBoundingClientRect();
        const visible = box.top >= 0 && box.top < window.innerHeight;
        return visible && window.scrollY > 0 ? { top: box.top, scrollY: window.scrollY } : null;
      }),
    );
    log(`canary panel at ${Math.round(panel.top)} px after scrolling ${Math.round(panel.scrollY)} px`);

    log('a wrong token is rejected at once');
    await page.locator('#token-input').fill('not-the-token');
    await page.locator('#token-save').click();
    await waitFor('the page to say the token is rejected', async () =>
      (await page.locator('#token-state').isVisible()) &&
      /rejected/.test(await page.locator('#token-state').textContent()),
    );
    const kept = await page.evaluate((key) => sessionStorage.getItem(key), TOKEN_KEY);
    if (kept !== null) throw new Error(`a rejected token was kept: ${kept}`);
    if (!(await page.locator('#token-forget').isHidden())) throw new Error('Forget is offered for a rejected token');

    log('the right token is taken');
    await page.locator('#token-input').fill(token);
    await page.locator('#token-save').click();
    await waitFor('the page to say the token is set', async () =>
      (await page.locator('#token-state').isVisible()) &&
      (await page.locator('#token-state').textContent()) === 'token set',
    );

    log('history times are local, with a date');
    await waitFor('a canary revision in the history', () =>
      page.locator('#history-rows .pill.source', { hasText: 'canary' }).count(),
    );
    const times = await page.locator('#history-rows td.time').evaluateAll((cells) =>
      cells.map((td) => ({ text: td.textContent, iso: td.title })),
    );
    for (const { text, iso } of times) {
      const date = new Date(iso);
      if (Number.isNaN(date.getTime())) throw new Error(`history time without its RFC 3339 title: ${iso}`);
      if (text === iso || /\d{4}-\d\d-\d\dT/.test(text)) throw new Error(`a raw RFC 3339 time in the history: ${text}`);
      if (!text.includes(String(date.getFullYear())) || !text.includes(String(date.getDate()))) {
        throw new Error(`history time "${text}" has no date (from ${iso})`);
      }
    }
    log(`history times: ${times.map((t) => t.text).join(' | ')}`);

    log('the canary source pill looks and sits like the others');
    const pills = await page.locator('#history-rows .pill.source').evaluateAll((nodes) =>
      nodes.map((pill) => {
        const style = getComputedStyle(pill);
        const cell = pill.closest('td').getBoundingClientRect();
        return {
          source: pill.textContent,
          offset: Math.round(pill.getBoundingClientRect().top - cell.top),
          height: Math.round(pill.getBoundingClientRect().height),
          box: ['display', 'margin-top', 'padding-top', 'padding-bottom', 'border-top-width', 'font-size']
            .map((name) => `${name}: ${style.getPropertyValue(name)}`)
            .join('; '),
        };
      }),
    );
    const canaryPill = pills.find((p) => p.source === 'canary');
    const filePill = pills.find((p) => p.source === 'file');
    if (!canaryPill || !filePill) throw new Error(`no canary or file pill: ${JSON.stringify(pills)}`);
    for (const key of ['offset', 'height', 'box']) {
      if (canaryPill[key] !== filePill[key]) {
        throw new Error(`the canary pill's ${key} is ${canaryPill[key]}, the file pill's ${filePill[key]}`);
      }
    }

    log('the graphs have time labels');
    const ticks = await card.locator('.time-axis .tick').allTextContents();
    if (ticks.length < 3 || !ticks.every((t) => /\d{1,2}\D\d\d/.test(t))) {
      throw new Error(`no time labels under the graphs: ${JSON.stringify(ticks)}`);
    }
    log(`time labels: ${ticks.slice(0, 3).join(' · ')}`);

    log('the canary panel: state pill, local step start, no Approve while running');
    const pill = card.locator('.canary-pill');
    await waitFor('the canary state pill', async () => (await pill.textContent()) === 'running');
    const started = await card.locator('[data-key="step_started"] dd').textContent();
    if (/\d{4}-\d\d-\d\dT/.test(started) || !started.includes(String(new Date().getFullYear()))) {
      throw new Error(`step started is not a local date and time: ${started}`);
    }
    if (!(await card.locator('button.canary-approve').isHidden())) throw new Error('Approve shown while running');
    await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });

    if (problems.length) throw new Error(problems.join('\n'));
  } finally {
    await browser.close();
  }
}

run('pipeline.mjs', main);
