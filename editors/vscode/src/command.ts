// How the extension finds and starts the server. No `vscode` import, so the test suite can load it in plain Node.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface ServerCommand {
  command: string;
  args: string[];
  /** Where the command came from, for the log ("setting dgls.server.path", "workspace venv", "PATH"). */
  source: string;
}

export interface ResolveInput {
  /** The `dgls.server.path` setting ('' when unset). */
  configuredPath: string;
  /** The `dgls.server.extraArgs` setting. */
  extraArgs: string[];
  /** Workspace folder paths, first folder first. */
  workspaceFolders: string[];
  /** The PATH environment variable. */
  envPath: string | undefined;
  platform: NodeJS.Platform;
}

const PYTHON = /^python(\d+(\.\d+)?)?(\.exe)?$/i;

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function venvCandidates(folder: string, platform: NodeJS.Platform): string[] {
  const [bin, exe] = platform === 'win32' ? ['Scripts', 'dgls.exe'] : ['bin', 'dgls'];
  return ['.venv', 'venv'].map((venv) => path.join(folder, venv, bin, exe));
}

function onPath(name: string, envPath: string | undefined, platform: NodeJS.Platform): string | undefined {
  const names = platform === 'win32' ? [`${name}.exe`, `${name}.cmd`] : [name];
  for (const dir of (envPath ?? '').split(path.delimiter).filter(Boolean)) {
    for (const n of names) {
      const p = path.join(dir, n);
      if (isFile(p)) return p;
    }
  }
  return undefined;
}

/** The command line for a `dgls` executable or a Python interpreter (then `-m dgls.cli`). */
export function commandFor(executable: string, extraArgs: string[], source: string): ServerCommand {
  const module = PYTHON.test(path.basename(executable)) ? ['-m', 'dgls.cli'] : [];
  return { command: executable, args: [...module, '--stdio', ...extraArgs], source };
}

/**
 * Find the server: the `dgls.server.path` setting, else `.venv/bin/dgls` or `venv/bin/dgls` in a workspace
 * folder, else `dgls` on PATH. Returns an error message naming what was looked for when nothing is found.
 */
export function resolveServerCommand(input: ResolveInput): ServerCommand | { error: string } {
  const { configuredPath, extraArgs, workspaceFolders, envPath, platform } = input;
  if (configuredPath.trim()) {
    const expanded = configuredPath.trim().replace(/\$\{workspaceFolder\}/g, workspaceFolders[0] ?? '');
    const found = path.isAbsolute(expanded) ? expanded : onPath(expanded, envPath, platform);
    if (found && isFile(found)) return commandFor(found, extraArgs, 'setting dgls.server.path');
    return { error: `dgls.server.path is set to "${configuredPath}", but no such file was found` };
  }
  for (const folder of workspaceFolders) {
    const found = venvCandidates(folder, platform).find(isFile);
    if (found) return commandFor(found, extraArgs, 'workspace virtual environment');
  }
  const fromPath = onPath('dgls', envPath, platform);
  if (fromPath) return commandFor(fromPath, extraArgs, 'PATH');
  const looked = workspaceFolders.flatMap((f) => venvCandidates(f, platform));
  return {
    error: `dgls was not found (looked in ${[...looked, 'PATH'].join(', ')}). Install it (pip install dgls) `
      + 'or set dgls.server.path to the dgls executable or to a Python interpreter that has it.',
  };
}

/** A shell-like rendering of a command line, for the log. */
export function formatCommandLine(cmd: ServerCommand): string {
  const quote = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return [cmd.command, ...cmd.args].map(quote).join(' ');
}

/** Client-only keys of the `dgls` section; everything else is a server setting. */
const CLIENT_KEYS = new Set(['server', 'trace']);

/** The server's settings tree (camelCase, as initializationOptions / didChangeConfiguration) from the section. */
export function serverSettings(section: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(section)) {
    if (!CLIENT_KEYS.has(key) && typeof value !== 'function') out[key] = value;
  }
  return out;
}

/**
 * The model's confidence (0..1) in an inline completion item: dgls sends it in the second argument of the item's
 * `dgls.accepted` command (`{confidence, tokens, unsure}`); undefined for an item without it.
 */
export function itemConfidence(command: { arguments?: unknown[] } | undefined): number | undefined {
  const info = command?.arguments?.[1];
  if (typeof info !== 'object' || info === null) return undefined;
  const confidence = (info as { confidence?: unknown }).confidence;
  return typeof confidence === 'number' && Number.isFinite(confidence) ? confidence : undefined;
}

/**
 * One line for the server's `dgls.stats` counters (`{modelCalls: 3, accepted: 1, ...}`), in the server's order and
 * with its names: "dgls since the server started: modelCalls 3, accepted 1, ...".
 */
export function formatStats(stats: Record<string, unknown>): string {
  const counts = Object.entries(stats).map(([name, value]) => `${name} ${String(value)}`);
  return `dgls since the server started: ${counts.join(', ') || 'no counters'}`;
}
