/**
 * The one list of error codes edgepack uses anywhere: HTTP errors, MQTT notices, the failure
 * codes devices put in status reports, CLI failures. Each code has the HTTP status it answers
 * with (or would, for codes that travel over MQTT or end a CLI run), whether trying the same
 * thing again later may succeed unchanged, and a one-line meaning.
 *
 * Rules the tests hold to: every code raised anywhere in the sources is listed here; every
 * entry is raised somewhere; every `*_NOT_FOUND` is a 404; conflicts are 409. An error that
 * reaches the HTTP error handler with a code missing from this list is a bug and answers 500.
 */
export interface CatalogueEntry {
  readonly status: number;
  readonly retryable: boolean;
  readonly meaning: string;
}

const entry = (status: number, retryable: boolean, meaning: string): CatalogueEntry => ({ status, retryable, meaning });

export const ERROR_CATALOGUE = {
  // --- requests the HTTP API refuses as malformed or unauthorised ---
  VALIDATION_FAILED: entry(400, false, 'the body, query or path does not fit the route schema; the message names the field'),
  BODY_INVALID: entry(400, false, 'the body cannot be read as its Content-Type says: not JSON, empty, or not as long as Content-Length'),
  REQUEST_MALFORMED: entry(400, false, 'the request line, URL or headers could not be parsed'),
  CURSOR_INVALID: entry(400, false, 'the list cursor was not issued by this server'),
  UNAUTHORIZED: entry(401, false, 'no credential, or one that is not accepted for this route'),
  FORBIDDEN: entry(403, false, 'the credential is valid but may not do this'),
  TOKEN_EXPIRED: entry(401, false, 'the API token has expired; an admin must create a new one'),
  TOKEN_REVOKED: entry(401, false, 'the API token was revoked'),
  TOKEN_NOT_FOUND: entry(404, false, 'no API token has this id'),
  LAST_ADMIN_TOKEN: entry(409, false, 'revoking this token would leave no usable admin token'),
  NOT_FOUND: entry(404, false, 'no route has this method and path'),
  REQUEST_TIMEOUT: entry(408, true, 'the client did not send the whole request in time'),
  PAYLOAD_TOO_LARGE: entry(413, false, 'the body is over the size limit for this route'),
  URL_TOO_LONG: entry(414, false, 'a path parameter is over the length limit'),
  UNSUPPORTED_MEDIA_TYPE: entry(415, false, 'the Content-Type is not one this route takes'),
  RANGE_NOT_SATISFIABLE: entry(416, false, 'the requested byte range lies outside the file'),
  HEADERS_TOO_LARGE: entry(431, false, 'the request line and headers are over the size limit'),
  QUERY_TOO_LONG: entry(414, false, 'the query string is over the length limit'),
  BODY_TOO_DEEP: entry(400, false, 'the JSON body nests objects or arrays deeper than the limit'),
  RATE_LIMITED: entry(429, true, 'too many requests, or too many failed attempts, from this client; wait Retry-After seconds'),
  INTERNAL_ERROR: entry(500, true, 'an unexpected failure on the orchestrator; the log has the details'),
  TLS_MATERIAL_INVALID: entry(500, false, 'serve refuses to start: a TLS certificate or key is unreadable, mismatched or expired'),
  DATA_DIR_LOCKED: entry(409, false, 'another orchestrator already serves this data dir; serve refuses to start'),
  STORAGE_FULL: entry(507, true, 'the orchestrator data dir has no space left; nothing was stored'),

  // --- fleet: enrollment, devices, profiles ---
  ENROLLMENT_TOKEN_INVALID: entry(401, false, 'the enrollment token is unknown, expired or already used'),
  DEVICE_NOT_FOUND: entry(404, false, 'no enrolled (unrevoked) device has this id'),
  PROFILE_NOT_FOUND: entry(404, false, 'no firmware profile has this id'),
  PROFILE_NO_MATCH: entry(422, false, 'the device facts match no firmware profile'),
  PROFILE_INVALID: entry(500, false, 'a firmware profile file on the orchestrator is malformed'),
  DEVICE_REVOKED: entry(410, false, 'the device was revoked; its open actions are closed'),

  // --- models and datasets ---
  MODEL_NOT_FOUND: entry(404, false, 'no model has this id'),
  MODEL_EXISTS: entry(409, false, 'a model with this name and version already exists'),
  MODEL_INVALID: entry(400, false, 'the model file is not a usable ONNX or TFLite model'),
  MODEL_UNSUPPORTED: entry(400, false, 'the model has inputs or outputs edgepack cannot feed'),
  MODEL_NOT_ONNX: entry(400, false, 'the file is not an ONNX ModelProto'),
  MODEL_TRUNCATED: entry(400, false, 'the ONNX file ends in the middle of a field'),
  MODEL_TOO_LARGE: entry(413, false, 'the model is over the size limit'),
  MODEL_EXTERNAL_DATA: entry(400, false, 'the ONNX model keeps tensor data in external files, which are not supported'),
  TENSOR_DATA_INVALID: entry(400, false, 'a tensor in the model has data that does not fit its type or shape'),
  PROTOBUF_DECODE: entry(400, false, 'the bytes are not valid protobuf'),
  BLOB_ID_INVALID: entry(400, false, 'a blob id is not a sha256 hex digest'),
  BLOB_MISSING: entry(500, false, 'a file the database lists is missing from the blob store; the orchestrator log has the details'),
  DATASET_NOT_FOUND: entry(404, false, 'no dataset of this kind and id belongs to the model'),
  DATASET_INVALID: entry(400, false, 'the dataset is not an array edgepack can read'),
  DATASET_MISMATCH: entry(400, false, 'the dataset does not fit the model (dtype, rank, dims or sample count)'),
  DATASET_EMPTY: entry(400, false, 'the dataset holds no samples'),
  NPY_INVALID: entry(400, false, 'the file is not a NumPy .npy array'),

  // --- builds: optimizer and converter ---
  BUILD_NOT_FOUND: entry(404, false, 'no build has this id'),
  BUILD_NOT_READY: entry(409, true, 'the build is still queued or running'),
  BUILD_FAILED: entry(500, false, 'the build worker failed for a reason it did not name'),
  BUILD_INTERRUPTED: entry(503, true, 'the orchestrator shut down during the build; start the build again'),
  NO_ARTIFACT: entry(422, false, 'the build has no artifact for the device profile'),
  CALIBRATION_REQUIRED: entry(422, false, 'the precision needs calibration data; upload a calibration dataset'),
  UNKNOWN_PRECISION: entry(400, false, 'the precision is not one the optimizer knows'),
  CLI_USAGE: entry(400, false, 'a command-line option has a value the command does not take'),
  CONFIG_INVALID: entry(400, false, 'a setting (flag or environment variable) has an invalid value'),
  TFLITE_BAD_PRECISION: entry(400, false, 'the precision is not one the TFLite converter knows'),
  TFLITE_CALIBRATION_REQUIRED: entry(422, false, 'full-integer TFLite conversion needs calibration samples'),
  TFLITE_CALIBRATION_SHAPE: entry(400, false, 'the calibration samples do not fit the model input'),
  TFLITE_CALIBRATION_INPUTS: entry(422, false, 'calibration supports single-input models only'),
  TFLITE_CALIBRATION_EMPTY: entry(400, false, 'no calibration sample fits the model batch size'),
  TFLITE_CALIBRATION_INCOMPLETE: entry(422, false, 'calibration left some tensors without a range'),
  TFLITE_CALIBRATION_MISSING: entry(422, false, 'a tensor to quantize has no calibration range'),
  TFLITE_INT8_UNSUPPORTED: entry(422, false, 'an op in the model has no int8 kernel'),
  TFLITE_UNSUPPORTED_OPS: entry(422, false, 'the model uses ONNX ops the TFLite converter does not support'),
  TFLITE_UNSUPPORTED_INPUT: entry(422, false, 'a model input is not float32'),
  TFLITE_DYNAMIC_SHAPE: entry(422, false, 'a model input has a symbolic dimension other than the batch'),
  TFLITE_INVALID_GRAPH: entry(422, false, 'the ONNX graph has an output nothing produces'),
  TFLITE_INVALID_FILE: entry(400, false, 'the file is not a valid TFLite flatbuffer'),
  TFLITE_INVALID_MODEL: entry(500, false, 'the converter produced a TFLite model that does not hold together'),
  LITERT_LOAD_FAILED: entry(422, false, 'LiteRT could not load the model'),
  LITERT_MISSING_INPUT: entry(400, false, 'a LiteRT run was not given every model input'),

  // --- bundles, rollouts and the device wire ---
  BUNDLE_NOT_FOUND: entry(404, false, 'no bundle has this id'),
  FILE_NOT_IN_BUNDLE: entry(404, false, 'the bundle lists no file with this path or hash'),
  BUNDLE_NOT_ASSIGNED: entry(403, false, 'the bundle was never assigned to this device'),
  CHUNK_OUT_OF_RANGE: entry(416, false, 'the chunk index is past the last chunk of the file'),
  CHUNK_REQUESTS_LIMITED: entry(429, true, 'the device already has as many chunks queued as it may; ask again when they arrive'),
  ROLLOUT_NOT_FOUND: entry(404, false, 'no rollout has this id'),
  ROLLOUT_NO_TARGETS: entry(400, false, 'the rollout target selects no device'),
  SUPERSEDED: entry(409, false, 'a newer rollout to the device replaced this action'),
  // staged rollouts: the plan, conflicts, and commands refused in the rollout's state (409)
  ROLLOUT_PLAN_INVALID: entry(400, false, 'the rollout plan does not hold together; the message names the field'),
  ROLLOUT_CONFLICT: entry(409, false, 'devices already have an open rollout of this stream; supersede: true takes over those not started'),
  ROLLOUT_FINISHED: entry(409, false, 'the rollout has finished (succeeded, cancelled or rolled back); the command has nothing to act on'),
  ROLLOUT_ROLLING_BACK: entry(409, false, 'a fleet rollback is under way; only it can finish the rollout'),
  ROLLOUT_NOT_PAUSED: entry(409, false, 'resume needs a paused rollout'),
  ROLLOUT_AWAITING_APPROVAL: entry(409, false, 'a wave waits for approval: approve it instead of resuming'),
  ROLLOUT_NOT_AWAITING_APPROVAL: entry(409, false, 'approve needs a rollout paused for a wave that waits for approval'),
  ROLLOUT_SCHEDULE_ENDED: entry(409, false, 'the schedule endAt has passed; resuming would pause again at once'),
  ROLLOUT_BREACH_HOLDS: entry(409, false, 'a gate breach still holds; send force: true to go on past it'),
  // why a rollout is paused (the pause reason's code; as a refusal it would be a 409)
  OPERATOR: entry(409, false, 'paused by an operator'),
  BREACH: entry(409, false, 'paused because a gate breached; the pause lists the breaches and figures'),
  QUORUM: entry(409, false, 'paused because the open wave was short of minExecuted after quorumSec'),
  GATE_UNMET: entry(409, false, 'paused because the open wave settled without passing its gate'),
  AWAITING_APPROVAL: entry(409, false, 'paused until an operator approves the next wave'),
  SCHEDULE_ENDED: entry(409, false, 'the schedule endAt passed: paused or cancelled as endBehavior says'),
  // a rollout member's outcome when the device did not simply succeed or fail with its own code
  ACK_TIMEOUT: entry(504, true, 'a dispatched device did not report within ackSec; withdrawn, never counted as a failure'),
  IN_PROGRESS_TIMEOUT: entry(504, false, 'a device started the install and did not end it within inProgressSec'),
  NOT_REACHED: entry(504, false, 'the device stayed offline or unanswering until the rollout finished'),
  LOST: entry(504, false, 'the device went silent during the bake and had not come back'),
  REVERTED_AFTER_COMMIT: entry(422, false, 'the device went active, then its heartbeat showed its previous bundle again'),
  REPLACED: entry(409, false, 'the device now runs a bundle something other than this rollout put there'),
  ALREADY_ACTIVE: entry(409, false, 'the device already runs the bundle: skipped'),
  PINNED: entry(409, false, 'the device is pinned to what it runs: skipped'),
  STARTED_IN_OTHER_ROLLOUT: entry(409, false, 'the device had started another rollout of the stream, which it finishes: skipped'),
  CANCELLED: entry(409, false, 'the rollout was cancelled before this device started'),
  ROLLED_BACK: entry(409, false, 'the rollout was rolled back before this device was dispatched'),
  NO_PREVIOUS_BUNDLE: entry(409, false, 'the device ran no bundle before the rollout: a fleet rollback has nothing to return it to'),
  ALREADY_ON_PREVIOUS: entry(409, false, 'the device already runs its previous bundle: nothing to roll back'),
  ROLLBACK_FAILED: entry(422, false, 'the device could not return to its previous bundle'),
  STATUS_REFUSED: entry(422, false, 'the status report does not belong to an action of the reporting device'),
  MESSAGE_INVALID: entry(400, false, 'the message does not fit its schema'),
  MESSAGE_NOT_JSON: entry(400, false, 'the payload is not JSON'),
  MESSAGE_TOO_LARGE: entry(413, false, 'the payload is over the size limit'),
  CHUNK_INVALID: entry(400, false, 'the chunk frame is malformed'),
  CHUNK_HASH_MISMATCH: entry(422, true, 'the chunk bytes do not match their hash'),
  CREDENTIAL_MALFORMED: entry(401, false, 'the device credential is not <timestamp>.<signature>'),
  CREDENTIAL_STALE: entry(401, true, 'the device credential timestamp is too far from the server clock'),
  CREDENTIAL_INVALID: entry(401, false, 'the device credential signature does not verify'),
  CANONICAL_JSON_INVALID: entry(400, false, 'the value cannot be written as canonical JSON'),
  MANIFEST_INVALID: entry(422, false, 'the bundle manifest is malformed'),
  SIGNATURE_INVALID: entry(422, false, 'the bundle signature does not verify against the key its manifest names'),
  MANIFEST_EXPIRED: entry(422, false, 'the bundle manifest has expired'),
  PROFILE_MISMATCH: entry(422, false, 'the bundle is built for another profile than the device'),
  FILE_LENGTH_MISMATCH: entry(422, true, 'a downloaded file is not as long as the manifest says'),
  FILE_HASH_MISMATCH: entry(422, true, 'a downloaded file does not hash to what the manifest says'),
  STATUS_SIGNATURE_INVALID: entry(422, false, 'the status report is unsigned, or its signature does not verify with the key the device enrolled with'),
  DESIRED_SIGNATURE_INVALID: entry(422, false, 'the desired-state envelope does not verify against any bundle key of the trusted root'),

  // --- trust metadata: the TUF-style root chain and the keys tooling ---
  TRUST_METADATA_TOO_LARGE: entry(413, false, 'a root document or root file is over the trust metadata size limit; refused unread'),
  TRUST_CHAIN_TOO_LONG: entry(413, false, 'more roots in one update than a device walks; refused unread'),
  ROOT_INVALID: entry(422, false, 'root metadata is malformed or inconsistent (key ids, roles, thresholds, dates)'),
  ROOT_THRESHOLD_NOT_MET: entry(422, false, 'a root is not signed by enough root keys, of the trusted root or of its own'),
  ROOT_ROLLBACK: entry(422, false, 'a root is not newer than the trusted one'),
  ROOT_VERSION_GAP: entry(422, false, 'a root does not follow the trusted version; the versions in between are needed first'),
  ROOT_EXPIRED: entry(422, false, 'the trusted root has expired; the root keys must sign a newer one'),
  BUNDLE_KEY_NOT_DELEGATED: entry(422, false, 'a manifest is signed by a key the trusted root does not delegate bundle signing to'),
  KEY_INVALID: entry(400, false, 'a key file holds no usable ed25519 key, or its halves do not belong together'),
  TRUST_ONLINE_KEY_NOT_DELEGATED: entry(500, false, 'serve refuses to start: its online signing key is not delegated by its latest root'),
  TRUST_ROOT_FILE_MISMATCH: entry(500, false, 'serve refuses to start: a trust/root-N.json file holds another version than its name says'),
  TRUST_ROOT_EXISTS: entry(409, false, 'edgepack keys will not overwrite a root version that already exists'),

  // --- telemetry windows from devices (refused by protocol/src/telemetry.ts, named in the ack) ---
  TELEMETRY_WRONG_DEVICE: entry(403, false, 'a telemetry window or batch names another device than the topic it came on'),
  TELEMETRY_HISTOGRAM_INVALID: entry(422, false, 'a histogram has the wrong number of buckets, counts that do not add up, or an impossible sum'),
  TELEMETRY_COUNTS_INCONSISTENT: entry(422, false, 'a window\'s request counts, items and histogram counts do not agree'),
  TELEMETRY_TIME_INVALID: entry(422, false, 'a window ends before it starts, spans too long, or lies in the future'),
  TELEMETRY_VALUE_INVALID: entry(422, false, 'a window carries figures beyond what a device can produce (rates, sums past a safe integer)'),
  TELEMETRY_MERGE_INVALID: entry(422, false, 'windows of different bundles or non-consecutive seqs cannot be merged'),
  TELEMETRY_SEQ_CONFLICT: entry(409, false, 'a window\'s seq range overlaps stored windows without covering them'),

  // --- the agent's inference service (KServe v2 over HTTP) ---
  INFER_REQUEST_INVALID: entry(400, false, 'an inference request is malformed, or a tensor has the wrong name, datatype or shape; the message names it'),
  INFER_BODY_TOO_LARGE: entry(413, false, 'an inference request body is over the service\'s size limit'),
  INFER_BODY_ABORTED: entry(400, false, 'an inference request body ended before its declared length'),
  MODEL_VERSION_NOT_FOUND: entry(404, false, 'the device serves another version of this model'),
  MODEL_UNAVAILABLE: entry(503, true, 'no model is ready to serve yet: none is loaded, warmed and golden-checked'),
  INFER_QUEUE_FULL: entry(503, true, 'the model\'s request queue is full; retry after the Retry-After delay'),
  INFER_TIMEOUT: entry(504, true, 'the request did not finish within its timeout'),
  INFER_FAILED: entry(500, true, 'the runtime failed while running the model'),
  INFER_OUTPUT_MISSING: entry(500, false, 'the runtime returned fewer outputs than the model declares'),
  RUNNER_CRASHED: entry(500, true, 'the worker thread running a model failed'),
  SERVE_SOCKET_IN_USE: entry(409, false, 'another process is listening on the --serve-socket path'),
  NOT_CONNECTED: entry(503, true, 'the device has no MQTT connection right now; the message stays spooled'),
  PUBLISH_TIMEOUT: entry(504, true, 'the broker did not acknowledge a publish in time; it is sent again later'),

  // --- the agent: enrollment and the update flow (status-report failure codes) ---
  ENROLL_UNREACHABLE: entry(503, true, 'the agent cannot reach the orchestrator to enroll'),
  ENROLL_REFUSED: entry(400, false, 'the orchestrator refused the enrollment; the message has its error'),
  ENROLL_BAD_RESPONSE: entry(502, false, 'the enrollment answer does not fit its schema'),
  ENROLL_SERVER_UNTRUSTED: entry(502, false, 'the server certificate chain does not hold the pinned CA; the token was not sent'),
  ENROLL_INSECURE: entry(400, false, 'enrollment refused: plain http without --allow-plaintext, or https without a pinned CA fingerprint or --insecure-enroll'),
  DOWNLOAD_STALLED: entry(504, true, 'a bundle download made no progress after repeated requests'),
  DOWNLOAD_TOO_SLOW: entry(504, true, 'a bundle download came slower than the agent\'s floor (--min-download-rate) over a minute: a trickle that would hold an update back'),
  AGENT_STOPPING: entry(503, true, 'the agent stopped before the step finished'),
  VERIFY_FAILED: entry(422, false, 'the bundle failed verification for a reason without its own code'),
  STEP_FAILED: entry(500, true, 'an update step failed for a reason without its own code'),
  DISK_FULL: entry(507, true, 'the device has no space left for the bundle'),
  ILLEGAL_TRANSITION: entry(500, false, 'the update flow was asked for a transition its table does not have'),
  ROLLBACK_IMPOSSIBLE: entry(500, false, 'there is no previous bundle to roll back to'),
  MODEL_LOAD_FAILED: entry(422, false, 'onnxruntime on the device could not load the model'),
  GOLDEN_INVALID: entry(422, false, 'the golden samples of the bundle are malformed'),
  GOLDEN_MISMATCH: entry(422, false, 'the model output on the device differs from the golden samples'),
  LATENCY_BUDGET_EXCEEDED: entry(422, false, 'the p95 latency on the device is over the acceptance budget'),
  BENCHMARK_FAILED: entry(500, false, 'the benchmark failed for a reason without its own code'),
  BENCHMARK_CRASHED: entry(500, true, 'the benchmark process exited without a result'),
  BENCHMARK_TIMEOUT: entry(504, true, 'the benchmark did not finish in time'),
  RUNNER_CLOSED: entry(500, false, 'a model runner was used after it was closed'),
  RUNNER_MISSING_INPUT: entry(400, false, 'a model run was not given every model input'),
  RUNNER_UNSUPPORTED_DTYPE: entry(422, false, 'the runtime cannot take an input of this dtype'),
  TENSOR_INVALID: entry(400, false, 'a tensor does not fit its dtype and shape'),
  TENSOR_UNSUPPORTED: entry(422, false, 'a tensor dtype is not supported'),
  FAULT_INJECTED: entry(500, false, 'a test-only injected fault'),
  TRIAL_INTERRUPTED: entry(500, true, 'the device stopped during a trial (a restart or kill); its active model was left as it was'),
  TRIAL_SUPERSEDED: entry(409, false, 'a newer desired state arrived during the trial, which was stopped'),
  TRIAL_INVALID: entry(422, false, 'a trial request does not hold together (its reference is not among its candidates, say)'),
  TRIAL_TIMEOUT: entry(504, false, 'a canary device\'s trial had no end within the rollout plan\'s trial.timeoutSec; the device is left out of the variant choice'),

} as const satisfies Record<string, CatalogueEntry>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export const ERROR_CODES = Object.keys(ERROR_CATALOGUE) as ErrorCode[];

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CATALOGUE, code);
}

/** The catalogue entry of a code, or undefined for a code that is not in the catalogue. */
export function catalogueEntry(code: string): CatalogueEntry | undefined {
  return isErrorCode(code) ? ERROR_CATALOGUE[code] : undefined;
}

/**
 * The catalogue code an error carries, or `fallback` when it carries none or one from outside
 * the catalogue (a Node or library code such as ENOENT): what crosses a boundary is always ours.
 */
export function catalogueCode(err: unknown, fallback: ErrorCode): ErrorCode {
  const code = typeof err === 'string' ? err : typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return isErrorCode(code) ? code : fallback;
}
