// Completes the setup wizard, logs out, logs in and screenshots the
// dashboard, in Debian's Chromium with JavaScript turned off (the pages must
// not need it); with BACKUP_DIR, also sets up backups into that folder, runs
// one and finds its snapshot listed. Playwright gives Chromium a fresh
// profile each run. Usage: node wizard.mjs BASE_URL OUTPUT_DIR PASSWORD [BACKUP_DIR]
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [base, out, password, backupDir] = process.argv.slice(2);
if (!base || !out || !password) {
  console.error('usage: node wizard.mjs BASE_URL OUTPUT_DIR PASSWORD');
  process.exit(2);
}
mkdirSync(out, { recursive: true });

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  const context = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);

  await page.goto(base + '/');
  expect(new URL(page.url()).pathname === '/setup', `a fresh device must open the wizard, got ${page.url()}`);
  await page.screenshot({ path: join(out, 'setup.png'), fullPage: true });

  // A mistake first: the page must say which field and keep the name.
  await page.fill('#device_name', 'browser-test');
  await page.fill('#password', password);
  await page.fill('#password_confirm', password + 'x');
  await page.selectOption('#timezone', 'Europe/Berlin');
  await page.click('button[type=submit]');
  const mismatch = await page.textContent('#password_confirm-error');
  expect(mismatch && mismatch.includes('differ'), `mismatch message missing, got ${mismatch}`);
  expect(await page.inputValue('#device_name') === 'browser-test', 'the name must be kept after an error');

  await page.fill('#password', password);
  await page.fill('#password_confirm', password);
  await page.click('button[type=submit]');
  expect(new URL(page.url()).pathname === '/apps', `setup must land on the dashboard, got ${page.url()}`);
  expect((await page.textContent('h1')).trim() === 'Apps', 'the dashboard opens on Apps');

  // The catalog: icons load, search narrows it, an app's page offers Install.
  const cards = await page.locator('ul.catalog li.app-card').count();
  expect(cards >= 18, `the catalog grid shows every app, got ${cards}`);
  const iconLoaded = await page.locator('img.app-icon').first().evaluate((img) => img.complete && img.naturalWidth > 0);
  expect(iconLoaded, 'app icons load');
  await page.screenshot({ path: join(out, 'apps.png'), fullPage: true });
  await page.fill('#q', 'jelly');
  await page.click('form.search button[type=submit]');
  const found = await page.locator('ul.catalog li.app-card a.app-title').allTextContents();
  expect(found.length === 1 && found[0] === 'Jellyfin', `search finds Jellyfin only, got ${found}`);
  await page.click('ul.catalog >> text=Jellyfin');
  expect(new URL(page.url()).pathname === '/apps/jellyfin', `the card opens the app's page, got ${page.url()}`);
  expect(await page.locator('button:has-text("Install Jellyfin")').count() === 1, 'the app page offers Install');

  await page.click('nav.sections >> text=System');
  const facts = await page.textContent('dl.facts');
  expect(facts.includes('browser-test.local'), 'System shows the device name');
  expect(facts.includes('Europe/Berlin'), 'System shows the time zone');

  // The Domain page: a bad domain is refused with the reason, a good one
  // shows the DNS record to create and the apps' public switches.
  await page.click('nav.sections >> text=Domain');
  await page.fill('form.domain input[name=domain]', 'home.local');
  await page.click('form.domain button[type=submit]');
  const refusal = (await page.textContent('main .form-error')) || '';
  expect(refusal.includes('domain:') && refusal.includes('.local'), `a .local domain is refused by name, got ${refusal}`);
  await page.fill('form.domain input[name=domain]', 'Example.ORG');
  await page.click('form.domain button[type=submit]');
  expect(((await page.textContent('main .notice')) || '').includes('Saved'), 'the domain is saved');
  const records = (await page.textContent('table.records')) || '';
  expect(records.includes('*.example.org'), `the wildcard record to create is shown, got ${records}`);
  expect(await page.locator('form.vpn button:has-text("Turn on")').count() === 1, 'remote access can be turned on');
  await page.screenshot({ path: join(out, 'domain.png'), fullPage: true });

  if (backupDir) {
    await page.click('nav.sections >> text=Backups');
    await page.check('input[name=kind][value=folder]');
    await page.fill('input[name=folder]', backupDir);
    await page.click('button[value=configure]');
    const key = ((await page.textContent('.recovery-key code')) || '').trim();
    expect(/^[0-9a-f]{4}(-[0-9a-f]{4}){7}$/.test(key), `a recovery key is shown once, got ${key}`);
    await page.click('button[value=run]');
    // The page reloads itself while the backup runs; look until it is done.
    let done = false;
    for (let i = 0; i < 60 && !done; i++) {
      await page.goto(base + '/backups');
      done = (await page.locator('table.runs td:text-is("done")').count()) > 0;
      if (!done) await page.waitForTimeout(1000);
    }
    expect(done, `the backup finishes: ${await page.textContent('main')}`);
    const snapshots = await page.locator('ul.snapshots li').count();
    expect(snapshots === 1, `the state's snapshot is listed, got ${snapshots}`);
    expect(!(await page.content()).includes(key), 'the recovery key is not shown again');
    await page.screenshot({ path: join(out, 'backups.png'), fullPage: true });
  }

  await page.click('text=Log out');
  expect(new URL(page.url()).pathname === '/login', `logout must lead to login, got ${page.url()}`);
  await page.goto(base + '/system');
  expect(new URL(page.url()).pathname === '/login', 'after logout the dashboard needs a login again');

  await page.fill('#password', 'not the password');
  await page.click('button[type=submit]');
  expect((await page.textContent('#password-error')).includes('Wrong password'), 'wrong password is reported');

  await page.fill('#password', password);
  await page.click('button[type=submit]');
  expect(new URL(page.url()).pathname === '/apps', `login must land on the dashboard, got ${page.url()}`);
  await page.click('nav.sections >> text=System');
  await page.screenshot({ path: join(out, 'dashboard.png'), fullPage: true });
  console.log(`browser test passed; screenshots in ${out}`);
} finally {
  await browser.close();
}
