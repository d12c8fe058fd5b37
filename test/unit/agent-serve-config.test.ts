// The serving and telemetry settings of the agent: flags and EDGEPACK_AGENT_* variables from
// the one table, with defaults, and refusals that name the option.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AGENT_OPTIONS, AgentConfigError, agentHelp, parseAgentConfig, parseHostPort, type AgentConfig } from '@edgepack/agent/config.js';

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseAgentConfig(argv, env) as AgentConfig;

test('serving is off by default; its settings have defaults', () => {
  const c = parse([]);
  assert.equal(c.serve, undefined);
  assert.equal(c.serveSocket, undefined);
  assert.deepEqual([c.serveConcurrency, c.serveQueue, c.serveTimeoutMs, c.serveMemoryFactor, c.serveThreads], [1, 32, 30_000, 3, 0]);
  assert.deepEqual([c.telemetryWindowSec, c.telemetrySpoolBytes, c.telemetryJitterMs, c.telemetryRate], [60, 4 * 1024 * 1024, 5000, 50]);
});

test('--serve takes HOST:PORT (IPv6 in brackets, an empty host is loopback); flags win over variables', () => {
  assert.deepEqual(parse(['--serve', '127.0.0.1:8090']).serve, { host: '127.0.0.1', port: 8090 });
  assert.deepEqual(parse(['--serve', '[::1]:0']).serve, { host: '::1', port: 0 });
  assert.deepEqual(parse(['--serve', ':9000']).serve, { host: '127.0.0.1', port: 9000 });
  assert.deepEqual(parse([], { EDGEPACK_AGENT_SERVE: '0.0.0.0:8091' }).serve, { host: '0.0.0.0', port: 8091 });
  assert.deepEqual(parse(['--serve', '127.0.0.1:1'], { EDGEPACK_AGENT_SERVE: '0.0.0.0:8091' }).serve, { host: '127.0.0.1', port: 1 });
  assert.match(parse(['--serve-socket', 'run/infer.sock']).serveSocket!, /^\/.*run\/infer\.sock$/);
  assert.equal(parse(['--telemetry-window-sec', '1']).telemetryWindowSec, 1);
  assert.equal(parse([], { EDGEPACK_AGENT_SERVE_MEMORY_FACTOR: '1.5' }).serveMemoryFactor, 1.5);
  assert.equal(parse(['--serve-queue', '0']).serveQueue, 0);
});

test('bad serving values are refused, naming the option', () => {
  const bad: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['--serve', '8090'], {}, /--serve must be HOST:PORT/],
    [['--serve', 'host:99999'], {}, /--serve must be HOST:PORT/],
    [[], { EDGEPACK_AGENT_SERVE: 'localhost' }, /EDGEPACK_AGENT_SERVE must be HOST:PORT/],
    [['--telemetry-window-sec', '7'], {}, /divides 3600/],
    [['--telemetry-window-sec', '7200'], {}, /divides 3600/],
    [['--telemetry-window-sec', '0'], {}, /divides 3600/],
    [['--telemetry-spool-bytes', '1000'], {}, /at least 16384/],
    [['--serve-memory-factor', '0'], {}, /positive number/],
    [['--serve-memory-factor', 'lots'], {}, /positive number/],
    [['--serve-queue=-1'], {}, /non-negative integer/],
    [[], { EDGEPACK_AGENT_SERVE_QUEUE: '1.5' }, /EDGEPACK_AGENT_SERVE_QUEUE must be a non-negative integer/],
    [['--serve-concurrency', '0'], {}, /positive integer/],
  ];
  for (const [argv, env, re] of bad) assert.throws(() => parseAgentConfig(argv, env), (e: unknown) => e instanceof AgentConfigError && e.code === 'CONFIG_INVALID' && re.test(e.message), argv.join(' ') || JSON.stringify(env));
  assert.throws(() => parseHostPort('nope'), AgentConfigError);
});

test('every serving and telemetry flag is in the table with its variable and help line', () => {
  const help = agentHelp();
  for (const flag of ['serve', 'serve-socket', 'serve-concurrency', 'serve-queue', 'serve-timeout-ms', 'serve-memory-factor', 'serve-threads', 'telemetry-window-sec', 'telemetry-spool-bytes', 'telemetry-jitter-ms', 'telemetry-rate']) {
    const o = AGENT_OPTIONS.find((x) => x.flag === flag);
    assert.ok(o, flag);
    assert.equal(o!.env, `EDGEPACK_AGENT_${flag.toUpperCase().replace(/-/g, '_')}`);
    assert.ok(help.includes(`--${flag} `) && help.includes(o!.env) && help.includes(o!.help), flag);
  }
});
