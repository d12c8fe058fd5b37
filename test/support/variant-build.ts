// A `device` build of ../shared/models/fashion_cnn.onnx with its calibration and labelled
// evaluation data (so the int8 candidates pass the host budgets), for the variant-choice tests.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { until, type Orchestrator } from './processes.js';

export async function deviceBuild(orch: Orchestrator, shared: string, profiles: string[], timeoutMs = 120_000): Promise<any> {
  const file = (n: string) => readFile(join(shared, n)).then((b) => new Uint8Array(b));
  const up = await orch.api('POST', '/v1/models?name=fashion-cnn&version=1', await file('fashion_cnn.onnx'));
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const id = up.body.model.id;
  for (const [kind, name] of [['calibration', 'fashion_calib256.npy'], ['evaluation', 'fashion_test1k.npy'], ['labels', 'fashion_test1k.labels.npy']] as const) {
    const r = await orch.api('POST', `/v1/models/${id}/datasets?kind=${kind}`, await file(name));
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  const b = await orch.api('POST', '/v1/builds', { modelId: id, profiles, selection: 'device' });
  assert.equal(b.status, 202, JSON.stringify(b.body));
  const build = await until('device build', async () => {
    const r = (await orch.api('GET', `/v1/builds/${b.body.build.id}`)).body.build;
    return r.status !== 'queued' && r.status !== 'running' && r;
  }, timeoutMs, 500);
  assert.equal(build.status, 'succeeded', JSON.stringify(build));
  assert.equal(build.selection, 'device');
  return build;
}

/** The rule of core/variant-choice.ts restated on the view's figures: the winner is the eligible candidate with the lowest median p95, or fp32 within 3%. */
export function expectedWinner(choice: any): string {
  const eligible = choice.candidates.filter((c: any) => c.eligible);
  const ref = choice.candidates.find((c: any) => c.reference);
  if (eligible.length === 0) return ref.precision;
  const best = eligible.reduce((a: any, c: any) => (c.medianP95Ms < a.medianP95Ms ? c : a));
  if (ref.eligible && best !== ref && best.medianP95Ms >= ref.medianP95Ms * (1 - choice.tieMargin)) return ref.precision;
  return best.precision;
}
