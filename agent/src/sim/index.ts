// The fleet simulator as a library, for tests and benchmarks that run it in-process.
export { startFleet, offlineIndexes, type Fleet, type FleetOptions, type FleetReady, type FleetStats } from './fleet.js';
export { parseSimConfig, parseSpeed, simHelp, SIM_OPTIONS, SimConfigError, type SimConfig } from './sim-config.js';
export { baselineFigures, synthesizeBenchmark, unitHash, PRECISIONS, type LatencyFigures, type SpeedFactors, type SynthesisInput } from './synthetic-benchmark.js';
export type { SimDevice } from './sim-device.js';
