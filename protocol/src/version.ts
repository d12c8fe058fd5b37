/**
 * Wire protocol version carried by every message as `v`. A receiver accepts messages whose
 * major version it knows and ignores fields it does not know, so either side can add fields
 * without a coordinated upgrade.
 */
export const PROTOCOL_VERSION = 1;
