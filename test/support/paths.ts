import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest ancestor holding the workspace package.json and protocol/. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'protocol')))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root');
    dir = up;
  }
  return dir;
}

/** ../shared/models beside the checkout, or null when this machine does not have it. */
export function sharedModelsDir(): string | null {
  const dir = resolve(repoRoot(), '../shared/models');
  return existsSync(join(dir, 'fashion_cnn.onnx')) ? dir : null;
}

export const ORCHESTRATOR_CLI = () => join(repoRoot(), 'orchestrator/dist/cli.js');
export const AGENT_CLI = () => join(repoRoot(), 'agent/dist/cli.js');
