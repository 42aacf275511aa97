// The dgls extension's UI in a real VS Code (code-server in headless Chromium), against the real server; run by
// tests/editors/test_vscode_browser.py through browser/code-server.sh. The workspace holds fib.py (a copy of
// examples/fib.py) and holes.py (a docstring with a `...` hole). Steps, each checked:
//   1. the status bar item says "dgls cpu" (model loaded); dgls: Show Statistics gives the counters;
//   2. fib.py: typing "# " at the end of line 7 brings ghost text; Tab inserts it (the saved file says so);
//   3. the status bar item shows the completion's latency; dgls: Show Statistics shows `accepted` one higher
//      (VS Code ran the item's dgls.accepted command);
//   4. holes.py: dgls: Fill Holes on a selection holding the hole replaces the `...` line and nothing else.
// On failure: $ARTIFACTS/failure.png. Observations in $ARTIFACTS/result.json; exit status 0 = pass.
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  cursor, dglsStatus, ghostText, goToLine, log, notifications, open, openFile, press, runCommand, typeAtLineEnd, waitFor,
  waitReady,
} from './workbench.mjs';

const { WORKSPACE, ARTIFACTS } = process.env;
const result = {};

function check(ok, message) {
  if (!ok) throw new Error(`${message}\nobserved so far: ${JSON.stringify(result, null, 2)}`);
}

const read = (name) => fs.readFileSync(path.join(WORKSPACE, name), 'utf8');

const STATS = 'dgls since the server started:';

/** The counters from dgls: Show Statistics (its notification), once some shown satisfy `accept`. */
async function stats(page, what, accept) {
  return waitFor(what, async () => {
    await runCommand(page, 'dgls: Show Statistics');
    const shown = await waitFor('a dgls: Show Statistics notification', async () => {
      const all = (await notifications(page)).filter((m) => m.startsWith(STATS));
      return all.length > 0 ? all : undefined;
    }, 10000);
    return shown
      .map((m) => Object.fromEntries([...m.matchAll(/(\w+) (\d+)/g)].map(([, k, v]) => [k, Number(v)])))
      .find(accept);
  }, 30000);
}

/** Save the active editor and return the file's text once it differs from `before` on disk. */
async function save(page, name, before) {
  await press(page, 'Control+S');
  return waitFor(`${name} saved with a change`, () => {
    const now = read(name);
    return now !== before ? now : undefined;
  }, 10000);
}

const { browser, page } = await open({ width: 1280, height: 720 });
try {
  // 1. the model loaded; the counters before
  await waitReady(page);
  result.statusReady = await dglsStatus(page);
  result.statsBefore = await stats(page, 'dgls.stats before typing', (c) => 'accepted' in c);

  // 2. ghost text in fib.py, accepted with Tab
  const fib = read('fib.py');
  await openFile(page, 'fib.py');
  await typeAtLineEnd(page, 7, 9, '# ');
  const typed = fib.replace('\n        \n', '\n        # \n');
  result.ghost = await waitFor('ghost text after typing "# " on line 7 of fib.py', () => ghostText(page), 60000);
  log('ghost text:', JSON.stringify(result.ghost));
  await page.keyboard.press('Tab');
  await waitFor('the cursor to move past the accepted text', async () => (await cursor(page)) !== 'Ln 7, Col 11',
    10000);
  result.fibSaved = await save(page, 'fib.py', fib);
  const at = typed.indexOf('# \n') + 2;
  const inserted = result.fibSaved.slice(at, result.fibSaved.length - (typed.length - at));
  check(result.fibSaved !== typed, 'Tab accepted nothing: fib.py holds only what was typed');
  check(result.fibSaved.startsWith(typed.slice(0, at)) && result.fibSaved.endsWith(typed.slice(at)),
    'after Tab, the text around the cursor changed in fib.py');
  check(inserted.startsWith(result.ghost.trimEnd()),
    `Tab inserted ${JSON.stringify(inserted)}, not the ghost text ${JSON.stringify(result.ghost)}`);

  // 3. the status bar item and the accept counted
  result.statusAfter = await waitFor('the status bar item to show the latency ("dgls cpu N ms")', async () => {
    const text = await dglsStatus(page);
    return /^dgls cpu \d+ ms/.test(text) ? text : undefined;
  }, 10000);
  const before = result.statsBefore.accepted;
  result.statsAfter = await stats(page, `dgls.stats to count the accept (accepted ${before} -> ${before + 1})`,
    (c) => c.accepted !== before);
  check(result.statsAfter.accepted === before + 1, `accepted went from ${before} to ${result.statsAfter.accepted}`);

  // 4. Fill Holes on a selection (lines 2-4 of holes.py: the docstring's lines down to the hole)
  const holes = read('holes.py');
  await openFile(page, 'holes.py');
  await goToLine(page, 2);
  for (let i = 0; i < 3; i++) await press(page, 'Shift+ArrowDown');
  const shownBefore = new Set(await notifications(page));
  await runCommand(page, 'dgls: Fill Holes');
  // the edit, or the message saying why there is none (the progress notification's title aside)
  const outcome = await waitFor('dgls: Fill Holes to edit holes.py (or to say why not)', async () => {
    const dirty = await page.evaluate(() => document.querySelector('.tabs-container .tab.active.dirty') !== null);
    if (dirty) return 'edited';
    return (await notifications(page))
      .find((m) => !shownBefore.has(m) && /nothing changed|no holes|not running|try again/.test(m));
  }, 60000);
  check(outcome === 'edited', `dgls: Fill Holes made no edit; it said: ${outcome}`);
  result.holesSaved = await save(page, 'holes.py', holes);
  const hole = holes.indexOf('    ...\n') + 4;
  const filled = result.holesSaved.slice(hole, result.holesSaved.length - (holes.length - hole - 3));
  check(result.holesSaved.startsWith(holes.slice(0, hole)) && result.holesSaved.endsWith(holes.slice(hole + 3)),
    'dgls: Fill Holes changed holes.py outside the hole');
  check(filled.trim() !== '' && filled !== '...', `dgls: Fill Holes filled the hole with ${JSON.stringify(filled)}`);
  result.filled = filled;
  log('hole filled with:', JSON.stringify(filled));
  result.passed = true;
} catch (err) {
  await page.screenshot({ path: path.join(ARTIFACTS, 'failure.png') }).catch(() => {});
  result.error = String(err?.message ?? err);
  throw err;
} finally {
  fs.writeFileSync(path.join(ARTIFACTS, 'result.json'), JSON.stringify(result, null, 2));
  await browser.close();
}
