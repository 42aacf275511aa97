// Drives code-server (a real VS Code in the browser) in headless Chromium with puppeteer-core: opens
// examples/fib.py, puts the cursor at the end of the empty line in the `for` loop, types "# " (the tiny model's
// code does not parse and the server drops it; in a comment its text is kept), waits until VS Code draws the
// inline suggestion (ghost text), and takes a screenshot. Run by screenshot.sh, which sets the environment:
// CS_DIR (where puppeteer-core is installed), CHROMIUM, URL (code-server with the workspace), RAW (output PNG).
import { createRequire } from 'node:module';

const { CS_DIR, CHROMIUM, URL, RAW } = process.env;
const puppeteer = createRequire(`${CS_DIR}/`)('puppeteer-core');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => console.log('[screenshot]', ...args);

const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu'],
  defaultViewport: { width: 1100, height: 460 },
});
try {
  const page = await browser.newPage();
  await page.goto(URL, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('.monaco-workbench', { timeout: 60000 });
  for (const label of ['examples', 'fib.py']) {
    const row = await page.waitForSelector(`.explorer-folders-view .monaco-list-row[aria-label="${label}"]`,
      { timeout: 60000 });
    await row.click();
    await sleep(1000);
  }
  await page.waitForSelector('.monaco-editor .view-lines', { timeout: 30000 });
  // the status bar item says "dgls cpu" once the model is loaded
  await page.waitForFunction(() => /dgls\s+cpu/.test(document.querySelector('.statusbar')?.textContent ?? ''),
    { timeout: 240000 });
  await page.keyboard.down('Control');
  await page.keyboard.press('KeyG');
  await page.keyboard.up('Control');
  await sleep(500);
  await page.keyboard.type('7');
  await page.keyboard.press('Enter');
  await sleep(500);
  await page.keyboard.press('End');
  await page.keyboard.type('# ');
  const t0 = Date.now();
  await page.waitForSelector('.monaco-editor .ghost-text-decoration', { timeout: 240000 });
  const ghost = await page.$$eval('.monaco-editor .ghost-text-decoration', (els) => els.map((e) => e.textContent));
  log(`ghost text after ${((Date.now() - t0) / 1000).toFixed(1)} s:`, JSON.stringify(ghost.join('')));
  // the status bar shows the latency of the completion
  await page.waitForFunction(() => /dgls\s+cpu\s+\d+\s*ms/.test(document.querySelector('.statusbar')?.textContent ?? ''),
    { timeout: 30000 });
  await sleep(1000);
  await page.screenshot({ path: RAW });
  log('status bar:', await page.$eval('.statusbar', (e) => e.innerText.replace(/\s+/g, ' ')));
} finally {
  await browser.close();
}
