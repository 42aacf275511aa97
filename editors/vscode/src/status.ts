// The status bar item, fed by the server's `dgls/status` notification; a click shows the log.
import * as vscode from 'vscode';

/** What `dgls/status` carries (server-side `DglsServer.status()`), plus the client's own states. */
export interface DglsStatus {
  state: 'starting' | 'stopped' | 'idle' | 'loading' | 'ready' | 'error' | string;
  model?: string;
  device?: string | null;
  dtype?: string | null;
  loadMs?: number | null;
  error?: string;
  lastLatencyMs?: number | null;
  lastNfe?: number | null;
  requests?: number;
  typedThrough?: number;
  cancelled?: number;
}

const ICONS: Record<string, string> = {
  starting: '$(loading~spin)',
  loading: '$(loading~spin)',
  ready: '$(sparkle)',
  error: '$(error)',
  stopped: '$(debug-stop)',
  idle: '$(circle-outline)',
};

/** The status bar text and tooltip for a status (exported for reuse; no state). */
export function describe(s: DglsStatus): { text: string; tooltip: string } {
  const icon = ICONS[s.state] ?? '$(question)';
  let text = `${icon} dgls`;
  if (s.state === 'ready') {
    const device = (s.device ?? '').split(':')[0];
    text += device ? ` ${device}` : '';
    if (typeof s.lastLatencyMs === 'number') text += ` ${Math.round(s.lastLatencyMs)} ms`;
  }
  const lines = [`dgls: ${s.state}`];
  if (s.model) lines.push(`model: ${s.model}`);
  if (s.device) lines.push(`device: ${s.device}${s.dtype ? ` (${s.dtype})` : ''}`);
  if (typeof s.loadMs === 'number') lines.push(`loaded in ${Math.round(s.loadMs)} ms`);
  if (typeof s.lastLatencyMs === 'number') lines.push(`last completion: ${Math.round(s.lastLatencyMs)} ms, ${s.lastNfe ?? '?'} model passes`);
  if (s.error) lines.push(`error: ${s.error}`);
  lines.push('Click to show the log.');
  return { text, tooltip: lines.join('\n') };
}

export class StatusItem implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private last: DglsStatus = { state: 'starting' };
  private confidence: number | undefined; // of the ghost text shown now

  constructor(command: string) {
    this.item = vscode.window.createStatusBarItem('dgls.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = 'dgls';
    this.item.command = command;
  }

  show(s: DglsStatus): void {
    this.last = s;
    const { text, tooltip } = describe(s);
    const sure = this.confidence === undefined ? '' : ` · ${Math.round(this.confidence * 100)}% sure`;
    this.item.text = text + sure;
    this.item.tooltip = sure ? `${tooltip}\nThe suggestion shown: the model is${sure.slice(2)} of it (mean over its tokens).` : tooltip;
    this.item.backgroundColor = s.state === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    this.item.show();
  }

  /** Show the confidence of the ghost text now shown (undefined: none is shown). */
  showConfidence(confidence: number | undefined): void {
    if (confidence === this.confidence) return;
    this.confidence = confidence;
    this.show(this.last);
  }

  dispose(): void {
    this.item.dispose();
  }
}
