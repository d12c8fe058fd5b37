import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { ProfileSchema, type Profile } from './profile-schema.js';

export class ProfileFileError extends Error {
  readonly code = 'PROFILE_INVALID';
  constructor(readonly file: string, reason: string) {
    super(`firmware profile ${file}: ${reason}`);
  }
}

/** The profiles shipped in this package. */
export function defaultProfilesDir(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', 'profiles');
}

/** Reads and validates every `*.json` in `dir`; one bad file fails loudly, naming the file and the field. */
export function loadProfiles(dir = defaultProfilesDir()): Profile[] {
  const check = TypeCompiler.Compile(ProfileSchema);
  const profiles: Profile[] = [];
  const seen = new Map<string, string>();
  for (const name of readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
    let value: unknown;
    try {
      value = JSON.parse(readFileSync(join(dir, name), 'utf8'));
    } catch (err) {
      throw new ProfileFileError(name, `not JSON (${(err as Error).message})`);
    }
    if (!check.Check(value)) {
      const e = check.Errors(value).First();
      throw new ProfileFileError(name, `${e?.path || '(root)'} ${e?.message ?? 'is invalid'}`);
    }
    if (`${value.id}.json` !== name) throw new ProfileFileError(name, `id ${value.id} must match the file name`);
    if (seen.has(value.id)) throw new ProfileFileError(name, `duplicate id ${value.id} (also in ${seen.get(value.id)})`);
    seen.set(value.id, name);
    profiles.push(value);
  }
  if (profiles.length === 0) throw new ProfileFileError(dir, 'no profiles found');
  return profiles;
}
