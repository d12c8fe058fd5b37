/**
 * Operator commands (POST /v1/rollouts/:id/{pause,resume,approve,cancel,rollback}) as pure
 * functions: the decisions they cause, or a coded refusal (HTTP 409). The executor records
 * the command as an event, applies the decisions, then calls decide() to carry on.
 *
 * A command already in effect (pause while paused, cancel while cancelled, rollback while
 * rolling back or rolled back) is accepted with no decisions, so a retried request is harmless.
 */
import type { GateBreach, GateOverride, RolloutPlan } from '../records.js';
import type { Decision } from './rollout-decisions.js';
import { RolloutWork } from './rollout-decide.js';
import { schedulePhase } from './rollout-schedule.js';
import type { RolloutSnapshot } from './rollout-snapshot.js';

export type RolloutCommand =
  | { kind: 'pause'; note?: string }
  | { kind: 'resume'; force?: boolean }
  | { kind: 'approve'; force?: boolean }
  | { kind: 'cancel' }
  | { kind: 'rollback' };

export type CommandRefusalCode =
  | 'ROLLOUT_FINISHED' // succeeded, cancelled or rolled back: nothing to pause, resume or approve
  | 'ROLLOUT_ROLLING_BACK' // a rollback is under way; only it can finish
  | 'ROLLOUT_NOT_PAUSED'
  | 'ROLLOUT_AWAITING_APPROVAL' // resume is refused while a wave waits for approval: approve it instead
  | 'ROLLOUT_NOT_AWAITING_APPROVAL'
  | 'ROLLOUT_SCHEDULE_ENDED' // endAt has passed: resuming would pause again at once
  | 'ROLLOUT_BREACH_HOLDS'; // a gate breach still holds: resume or approve with force

export type CommandResult =
  | { ok: true; decisions: Decision[] }
  | { ok: false; code: CommandRefusalCode; message: string; breaches?: GateBreach[] };

const refuse = (code: CommandRefusalCode, message: string, breaches?: GateBreach[]): CommandResult => ({ ok: false, code, message, ...(breaches ? { breaches } : {}) });

export function handleCommand(plan: RolloutPlan, snapshot: RolloutSnapshot, command: RolloutCommand, now: Date): CommandResult {
  const w = new RolloutWork(plan, snapshot, now.getTime());
  const status = w.rollout.status;
  const finished = status === 'succeeded' || status === 'cancelled' || status === 'rolled_back' || status === 'failed';
  switch (command.kind) {
    case 'pause': {
      if (status === 'paused') return { ok: true, decisions: [] };
      if (status === 'rolling_back') return refuse('ROLLOUT_ROLLING_BACK', 'the rollout is rolling back');
      if (finished) return refuse('ROLLOUT_FINISHED', `the rollout is ${status}`);
      w.emit({ kind: 'pause', reason: { code: 'OPERATOR', message: command.note ? `paused by an operator: ${command.note}` : 'paused by an operator', wave: w.frontier() < 0 ? null : w.frontier(), at: w.now } });
      return { ok: true, decisions: w.out };
    }
    case 'resume':
    case 'approve': {
      if (status === 'rolling_back') return refuse('ROLLOUT_ROLLING_BACK', 'the rollout is rolling back');
      if (finished) return refuse('ROLLOUT_FINISHED', `the rollout is ${status}`);
      if (status !== 'paused') return refuse(command.kind === 'approve' ? 'ROLLOUT_NOT_AWAITING_APPROVAL' : 'ROLLOUT_NOT_PAUSED', `the rollout is ${status}`);
      const pause = w.rollout.pause;
      const awaiting = pause?.code === 'AWAITING_APPROVAL';
      if (command.kind === 'resume' && awaiting) return refuse('ROLLOUT_AWAITING_APPROVAL', `wave ${pause!.wave} waits for approval: approve it instead`);
      if (command.kind === 'approve' && !awaiting) return refuse('ROLLOUT_NOT_AWAITING_APPROVAL', `the rollout is paused for ${pause?.code ?? 'no reason'}, not awaiting approval`);
      const phase = schedulePhase(plan.schedule, w.now);
      if (phase === 'ended') return refuse('ROLLOUT_SCHEDULE_ENDED', `endAt ${plan.schedule.endAt} has passed`);
      // Resume re-checks the gates: what held at the pause may hold still (or something new may).
      const breaches = w.activeBreaches();
      if (breaches.length && !command.force) {
        return refuse('ROLLOUT_BREACH_HOLDS', `a gate breach still holds (${breaches.map((b) => b.message).join('; ')}); send force: true to go on anyway`, breaches);
      }
      const added: GateOverride[] = breaches.map((b) => ({ wave: b.wave, profile: b.profile, rule: b.rule, value: b.value, at: w.now }));
      const overrides = [...w.rollout.overrides.filter((o) => !added.some((a) => a.wave === o.wave && a.profile === o.profile && a.rule === o.rule)), ...added];
      if (command.kind === 'approve') {
        w.emit({ kind: 'approve', wave: pause!.wave!, forced: breaches.length > 0, forcedPast: breaches, overrides });
      } else {
        const to = phase === 'before-start' && w.rollout.startedAt === null ? 'scheduled' : 'running';
        w.emit({ kind: 'resume', forced: breaches.length > 0, forcedPast: breaches, overrides, to });
      }
      return { ok: true, decisions: w.out };
    }
    case 'cancel': {
      if (status === 'cancelled') return { ok: true, decisions: [] };
      if (status === 'rolling_back') return refuse('ROLLOUT_ROLLING_BACK', 'the rollout is rolling back; it cannot be cancelled');
      if (finished) return refuse('ROLLOUT_FINISHED', `the rollout is ${status}`);
      w.cancelAll('CANCELLED', 'cancelled by an operator');
      return { ok: true, decisions: w.out };
    }
    case 'rollback': {
      if (status === 'rolling_back' || status === 'rolled_back') return { ok: true, decisions: [] };
      w.emit({ kind: 'start-rollback', cause: 'command', breaches: [] });
      w.rollbackStep();
      return { ok: true, decisions: w.out };
    }
  }
}
