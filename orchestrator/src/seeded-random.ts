// The PRNG lives in core/ (rollout waves are shuffled with it); builds import it from here.
export { seededRandom } from './core/seeded-random.js';
