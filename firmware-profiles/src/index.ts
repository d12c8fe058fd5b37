export * from './profile-schema.js';
export * from './load-profiles.js';
