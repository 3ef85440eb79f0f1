/**
 * NATS subject rules, shared by both bus implementations so that they accept and match exactly the same
 * subjects, KV keys and filters. Tokens are separated by `.`; in a filter `*` stands for one token and
 * `>` (last token only) for one or more tokens.
 */

const KEY_RE = /^[-/=.\w]+$/;
const FILTER_RE = /^[-/=.>*\w]+$/;
const BUCKET_RE = /^[-\w]+$/;
const SPACE_RE = /[\s\0]/;

function tokensOk(value: string): boolean {
  return value.length > 0 && !SPACE_RE.test(value) && !value.split(".").includes("");
}

/**
 * isValidSubject tells whether a subject can be published to: non-empty tokens, no whitespace, no wildcards.
 * @example
 * isValidSubject("weft.status.gw-1"); // true
 */
export function isValidSubject(subject: string): boolean {
  return tokensOk(subject) && subject.split(".").every((t) => t !== "*" && t !== ">");
}

/**
 * isValidSubjectFilter tells whether a subject can be subscribed to (`*` anywhere, `>` only as the last token).
 * @example
 * isValidSubjectFilter("weft.status.>"); // true
 */
export function isValidSubjectFilter(filter: string): boolean {
  if (!tokensOk(filter)) return false;
  const tokens = filter.split(".");
  return tokens.every((t, i) => t !== ">" || i === tokens.length - 1);
}

/**
 * subjectMatches tells whether a literal subject matches a filter, with NATS wildcard rules.
 * @example
 * subjectMatches("svc.*", "svc.web"); // true
 */
export function subjectMatches(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const s = subject.split(".");
  for (let i = 0; i < f.length; i++) {
    const token = f[i];
    if (token === ">") return s.length > i;
    if (i >= s.length) return false;
    if (token !== "*" && token !== s[i]) return false;
  }
  return f.length === s.length;
}

/**
 * isValidKvKey tells whether a string is a JetStream KV key (letters, digits, `-_/=`, dot-separated tokens).
 * @example
 * isValidKvKey("svc.web"); // true
 */
export function isValidKvKey(key: string): boolean {
  return KEY_RE.test(key) && tokensOk(key);
}

/**
 * isValidKvFilter tells whether a string is a KV key filter (a key whose tokens may be `*`, or `>` last).
 * @example
 * isValidKvFilter("svc.>"); // true
 */
export function isValidKvFilter(filter: string): boolean {
  return FILTER_RE.test(filter) && isValidSubjectFilter(filter) && filter.split(".").every((t) => t.length === 1 || !/[*>]/.test(t));
}

/**
 * isValidBucketName tells whether a string can name a KV bucket (letters, digits, `-`, `_`).
 * @example
 * isValidBucketName("weft-config"); // true
 */
export function isValidBucketName(name: string): boolean {
  return BUCKET_RE.test(name);
}
