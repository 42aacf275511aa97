// The dgls VS Code extension: starts `dgls --stdio`, lets vscode-languageclient 11 show its inline completions as
// ghost text, and adds a status bar item, a few commands and the settings. Everything else is the server's.
import * as vscode from 'vscode';
import {
  CodeAction,
  CodeActionRequest,
  CodeActionResolveRequest,
  Command,
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from 'vscode-languageclient/node';
import { formatCommandLine, formatStats, itemConfidence, resolveServerCommand, serverSettings } from './command';
import { StatusItem, type DglsStatus } from './status';

const SECTION = 'dgls';
let client: LanguageClient | undefined;
let log: vscode.LogOutputChannel;
let status: StatusItem;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  log = vscode.window.createOutputChannel('dgls', { log: true });
  status = new StatusItem('dgls.showLog');
  context.subscriptions.push(
    log,
    status,
    vscode.commands.registerCommand('dgls.showLog', () => log.show()),
    vscode.commands.registerCommand('dgls.restartServer', () => restart()),
    vscode.commands.registerCommand('dgls.rewriteSelection', () => rewriteSelection()),
    vscode.commands.registerCommand('dgls.fillHoles', () => fillHoles()),
    vscode.commands.registerCommand('dgls.showStats', () => showStats()),
    vscode.workspace.onDidChangeConfiguration((e) => onConfigurationChanged(e)),
    // the ghost text goes when the cursor moves (typing, accepting, clicking): so does its confidence
    vscode.window.onDidChangeTextEditorSelection(() => status.showConfidence(undefined)),
  );
  await start();
}

export async function deactivate(): Promise<void> {
  await stop();
}

function settingsSection(): Record<string, unknown> {
  // WorkspaceConfiguration carries methods next to the values: a JSON round trip keeps the values only.
  return JSON.parse(JSON.stringify(vscode.workspace.getConfiguration(SECTION))) as Record<string, unknown>;
}

async function start(): Promise<void> {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  const resolved = resolveServerCommand({
    configuredPath: cfg.get<string>('server.path', ''),
    extraArgs: cfg.get<string[]>('server.extraArgs', []),
    workspaceFolders: (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath),
    envPath: process.env.PATH,
    platform: process.platform,
  });
  if ('error' in resolved) {
    log.error(resolved.error);
    status.show({ state: 'error', error: resolved.error });
    const choice = await vscode.window.showErrorMessage(`dgls: ${resolved.error}`, 'Open Settings');
    if (choice === 'Open Settings') {
      await vscode.commands.executeCommand('workbench.action.openSettings', 'dgls.server.path');
    }
    return;
  }
  log.info(`starting the server (${resolved.source}): ${formatCommandLine(resolved)}`);
  // No `transport`: the client then talks over the child's stdin/stdout without appending its own `--stdio`
  // (resolved.args already carries it; with TransportKind.stdio the server got `--stdio --stdio`).
  const serverOptions: ServerOptions = { command: resolved.command, args: resolved.args };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
    initializationOptions: serverSettings(settingsSection()),
    outputChannel: log,
    traceOutputChannel: log,
    middleware: {
      // The items pass through unchanged (their `dgls.accepted` command included, which VS Code runs on accept);
      // the first one's confidence goes to the status bar while it is shown.
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        const result = await next(document, position, context, token);
        const items = Array.isArray(result) ? result : (result?.items ?? []);
        status.showConfidence(items.length > 0 ? itemConfidence(items[0].command) : undefined);
        return result;
      },
    },
  };
  // The id 'dgls' makes the client read the `dgls.trace.server` setting.
  client = new LanguageClient('dgls', 'dgls', serverOptions, clientOptions);
  client.onNotification('dgls/status', (s: DglsStatus) => status.show(s));
  client.onDidChangeState((e) => {
    if (e.newState === State.Stopped) status.show({ state: 'stopped' });
  });
  status.show({ state: 'starting' });
  try {
    await client.start();
  } catch (err) {
    log.error(`the server failed to start: ${String(err)}`);
    status.show({ state: 'error', error: String(err) });
  }
}

async function stop(): Promise<void> {
  const old = client;
  client = undefined;
  if (old?.isRunning()) await old.stop();
  await old?.dispose();
}

async function restart(): Promise<void> {
  log.info('restarting the server');
  await stop();
  await start();
}

async function onConfigurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
  if (e.affectsConfiguration('dgls.server')) {
    await restart();
  } else if (e.affectsConfiguration(SECTION) && client?.isRunning()) {
    // The server overlays these onto its settings; a model setting change makes it reload the model.
    await client.sendNotification(DidChangeConfigurationNotification.type, {
      settings: { [SECTION]: serverSettings(settingsSection()) },
    });
  }
}

function runningClient(): LanguageClient | undefined {
  if (client?.isRunning()) return client;
  void vscode.window.showWarningMessage('dgls: the server is not running (see dgls: Show Log).');
  return undefined;
}

async function rewriteSelection(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const c = runningClient();
  if (!editor || !c) return;
  if (editor.selection.isEmpty) {
    void vscode.window.showInformationMessage('dgls: select the code to rewrite first.');
    return;
  }
  const instruction = await vscode.window.showInputBox({
    title: 'dgls: Rewrite Selection',
    prompt: 'How should the selection be rewritten? (empty: just regenerate it)',
    placeHolder: 'e.g. use a list comprehension',
  });
  if (instruction === undefined) return;
  const args = [
    editor.document.uri.toString(),
    c.code2ProtocolConverter.asRange(editor.selection),
    instruction,
  ];
  // The server applies the edit itself through workspace/applyEdit.
  const result = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: 'dgls: rewriting…', cancellable: true },
    (_progress, token) => c.sendRequest(ExecuteCommandRequest.type, { command: 'dgls.rewrite', arguments: args }, token),
  ) as { applied?: boolean; reason?: string | null } | null;
  if (result && result.applied === false && result.reason) log.warn(`rewrite not applied: ${result.reason}`);
}

async function fillHoles(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const c = runningClient();
  if (!editor || !c) return;
  const document = editor.document;
  // An empty range asks about the whole file; a selection limits the holes to it.
  const range = editor.selection.isEmpty ? new vscode.Range(0, 0, 0, 0) : editor.selection;
  const actions = await c.sendRequest(CodeActionRequest.type, {
    textDocument: { uri: document.uri.toString() },
    range: c.code2ProtocolConverter.asRange(range),
    context: { diagnostics: [], only: [vscode.CodeActionKind.RefactorRewrite.value] },
  });
  // The result mixes Commands and CodeActions; dgls's actions come unresolved (no edit, no command yet), which
  // CodeAction.is rejects, so tell them apart by what a Command is.
  const fill = (actions ?? [])
    .filter((a): a is CodeAction => !Command.is(a))
    .find((a) => a.title.startsWith('dgls: Fill'));
  if (!fill) {
    const markers = vscode.workspace.getConfiguration(SECTION).get<string[]>('holeMarkers', []).join(', ');
    void vscode.window.showInformationMessage(`dgls: no holes here (a hole is a line holding only: ${markers}).`);
    return;
  }
  const resolved = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: fill.title, cancellable: true },
    (_progress, token) => c.sendRequest(CodeActionResolveRequest.type, fill, token),
  );
  if (resolved.edit) {
    const edit = await c.protocol2CodeConverter.asWorkspaceEdit(resolved.edit);
    if (!(await vscode.workspace.applyEdit(edit))) {
      void vscode.window.showWarningMessage('dgls: the file changed while the holes were filled; try again.');
    }
  }
}

/** The server's in-memory counters (`dgls.stats`: model calls, items served, accepted, ...), shown and logged. */
async function showStats(): Promise<Record<string, unknown> | undefined> {
  const c = runningClient();
  if (!c) return undefined;
  const stats = (await c.sendRequest(ExecuteCommandRequest.type, { command: 'dgls.stats' })) as Record<string, unknown>;
  log.info(`dgls.stats: ${JSON.stringify(stats)}`);
  void vscode.window.showInformationMessage(formatStats(stats ?? {}));
  return stats;
}
