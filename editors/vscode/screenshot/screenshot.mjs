// Screen capture of ghost text in code-server (a real VS Code in headless Chromium): opens fib.py (a copy of
// examples/fib.py), types "# " at the end of the empty line in the `for` loop (the tiny model's code does not
// parse and the server drops it; in a comment its text is kept), waits until VS Code draws the inline suggestion
// and the status bar shows its latency, and saves the page as $RAW. Run by screenshot.sh through
// browser/code-server.sh.
import { dglsStatus, ghostText, log, open, openFile, typeAtLineEnd, waitFor, waitReady } from '../browser/workbench.mjs';

const { browser, page } = await open({ width: 1100, height: 460 });
try {
  await waitReady(page);
  await openFile(page, 'fib.py');
  await typeAtLineEnd(page, 7, 9, '# ');
  const t0 = Date.now();
  const ghost = await waitFor('ghost text', () => ghostText(page), 240000);
  log(`ghost text after ${((Date.now() - t0) / 1000).toFixed(1)} s:`, JSON.stringify(ghost));
  const status = await waitFor('the status bar to show the latency', async () => {
    const text = await dglsStatus(page);
    return /^dgls cpu \d+ ms/.test(text) ? text : undefined;
  }, 30000);
  // two frames: the status bar's last change drawn
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
  await page.screenshot({ path: process.env.RAW });
  log('status bar item:', status);
} finally {
  await browser.close();
}
