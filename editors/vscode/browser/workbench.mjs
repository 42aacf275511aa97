// Driving VS Code's workbench (code-server) in headless Chromium with puppeteer-core: what browser/ui-test.mjs
// and screenshot/screenshot.mjs share. Every wait is on a condition of the page, with a message naming it.
// The environment comes from browser/code-server.sh: CS_DIR (where puppeteer-core is installed), CHROMIUM, URL.
import { createRequire } from 'node:module';

const { CS_DIR, CHROMIUM, URL } = process.env;
const puppeteer = createRequire(`${CS_DIR}/`)('puppeteer-core');

export const log = (...args) => console.log('[workbench]', ...args);

/** Chromium with the workbench loaded: { browser, page }. */
export async function open({ width = 1100, height = 460 } = {}) {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu'],
    defaultViewport: { width, height },
  });
  const page = await browser.newPage();
  await page.goto(URL, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('.monaco-workbench', { timeout: 60000 });
  return { browser, page };
}

/** Poll `probe` (in Node) every 100 ms until it returns something truthy; fail naming `what` after `ms`. */
export async function waitFor(what, probe, ms) {
  const t0 = Date.now();
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Press a chord such as 'Control+G' or 'Shift+ArrowDown'. */
export async function press(page, chord) {
  const keys = chord.split('+');
  for (const k of keys.slice(0, -1)) await page.keyboard.down(k);
  await page.keyboard.press(keys.at(-1));
  for (const k of keys.slice(0, -1).reverse()) await page.keyboard.up(k);
}

/** Wait until the quick input is closed and, with `editor`, until an editor has the keyboard focus again. */
async function quickInputClosed(page, { editor = false } = {}) {
  await waitFor(`the quick input to close${editor ? ' and the editor to take the focus' : ''}`, () =>
    page.evaluate((needEditor) => {
      const widget = document.querySelector('.quick-input-widget');
      const closed = !widget || widget.style.display === 'none';
      const focused = document.activeElement?.closest('.editor-instance .monaco-editor.focused') != null;
      return closed && (focused || !needEditor);
    }, editor), 10000);
}

/** Pick `label` (the first row whose label starts with it) in the open quick input. */
async function pick(page, label) {
  await page.keyboard.type(label);
  const row = await waitFor(`"${label}" in the quick input`, () => page.evaluate((want) => {
    const rows = [...document.querySelectorAll('.quick-input-widget .monaco-list-row')];
    const i = rows.findIndex((r) => (r.getAttribute('aria-label') ?? '').startsWith(want));
    return i >= 0 ? i + 1 : 0;
  }, label), 15000);
  for (let i = 1; i < row; i++) await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Enter');
}

/** Run a command from the command palette by its title, e.g. "dgls: Fill Holes". */
export async function runCommand(page, title) {
  await page.keyboard.press('F1');
  await page.waitForSelector('.quick-input-widget .quick-input-box input', { visible: true, timeout: 10000 });
  await pick(page, title);
  await quickInputClosed(page);
}

/** Open a workspace file with Quick Open and wait until its editor has the focus. */
export async function openFile(page, name) {
  await press(page, 'Control+P');
  await page.waitForSelector('.quick-input-widget .quick-input-box input', { visible: true, timeout: 10000 });
  await pick(page, name);
  await waitFor(`the editor of ${name}`, () => page.evaluate((n) =>
    document.querySelector('.tabs-container .tab.active')?.getAttribute('aria-label')?.startsWith(n), name), 15000);
  await quickInputClosed(page, { editor: true });
  // VS Code creates an editor's inline-suggestion controller when the window is first idle (an "Eventually"
  // editor contribution, at the latest 5 s after the editor): keys typed before that bring no ghost text. An idle
  // callback queued now runs after VS Code's.
  await page.evaluate(() => new Promise((resolve) => requestIdleCallback(resolve, { timeout: 10000 })));
}

/** The cursor as the status bar shows it, e.g. "Ln 7, Col 9". */
export function cursor(page) {
  return page.evaluate(() => document.querySelector('.statusbar-item[id$="status.editor.selection"]')
    ?.textContent.trim() ?? '');
}

/** Put the cursor at the start of 1-based `line` (Go to Line) and wait until the editor has it. */
export async function goToLine(page, line) {
  await press(page, 'Control+G');
  await page.waitForSelector('.quick-input-widget .quick-input-box input', { visible: true, timeout: 10000 });
  await page.keyboard.type(String(line));
  await page.keyboard.press('Enter');
  await quickInputClosed(page, { editor: true });
  await waitFor(`the cursor on line ${line}`, async () => (await cursor(page)).startsWith(`Ln ${line}, Col 1`), 10000);
}

/** Type `text` at the end of 1-based `line`, once the cursor is there (its 1-based `column`). */
export async function typeAtLineEnd(page, line, column, text) {
  await goToLine(page, line);
  await page.keyboard.press('End');
  await waitFor(`the cursor at the end of line ${line}`, async () => (await cursor(page)) === `Ln ${line}, Col ${column}`,
    10000);
  await page.keyboard.type(text);
}

/** The text of the dgls status bar item ('' while it is not shown). */
export function dglsStatus(page) {
  return page.evaluate(() => {
    const item = [...document.querySelectorAll('.statusbar-item')].find((e) => e.id.endsWith('dgls.status'));
    return item?.textContent.replace(/\s+/g, ' ').trim() ?? '';
  });
}

/** Wait until the status bar item says the model is ready on the CPU ("dgls cpu"); fail at once on its error icon. */
export async function waitReady(page, ms = 240000) {
  await waitFor('the dgls status bar item to say "dgls cpu" (the model loaded)', async () => {
    const failed = await page.evaluate(() => [...document.querySelectorAll('.statusbar-item')]
      .some((e) => e.id.endsWith('dgls.status') && e.querySelector('.codicon-error')));
    if (failed) throw new Error('the dgls status bar item shows an error (the server or the model failed to start)');
    return /^dgls cpu\b/.test(await dglsStatus(page));
  }, ms);
}

/** The ghost text VS Code draws on the cursor's line (inline suggestion), whitespace as typed; '' when none. */
export function ghostText(page) {
  return page.evaluate(() => [...document.querySelectorAll('.monaco-editor .ghost-text-decoration')]
    .map((e) => e.textContent.replace(/\u00a0/g, ' ')).join(''));
}

/** The messages of the notification toasts shown now, newest first; not those of work in progress. */
export function notifications(page) {
  return page.evaluate(() => [...document.querySelectorAll('.notifications-toasts .notification-list-item')]
    .filter((e) => !e.querySelector('.monaco-progress-container.active'))
    .map((e) => e.querySelector('.notification-list-item-message')?.textContent.replace(/\s+/g, ' ').trim() ?? ''));
}
